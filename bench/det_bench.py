"""Benchmark: sftune object detection vs the torchvision detection tutorial (the reference peer).

Runs, one after the other on this machine, (1) the peer ``../shared/bench/det_peer.py``
(torchvision's "Object Detection Finetuning" tutorial, custom-backbone variant: Faster R-CNN
over an FPN on the offline EfficientNet-Lite0 ImageNet weights, SGD lr 0.005 with warm-up and
StepLR(3), batch 2, horizontal flip, backbone BatchNorm frozen, everything else trains) and
(2) ``sftune train`` with sftune's *defaults* for detection: only ``--data``, ``--epochs N``,
``--out`` (a temp dir) and ``--no-progress``, plus whatever ``--sftune-args`` adds (the task
is detected from the VOC layout). Same data, same epoch budget, same seed (42, passed to the
peer too), ``HF_HUB_OFFLINE=1``. Each process is timed end to end from outside (interpreter
start-up and imports included). Only one training process runs at a time.

    .venv/bin/python bench/det_bench.py                                    # full BCCD, 10 epochs: HOURS on 2 cores
    .venv/bin/python bench/det_bench.py --epochs 2 --limit 40 --val-limit 20   # reduced (~15 min on 2 busy cores)
    .venv/bin/python bench/det_bench.py --epochs 3 --limit 80 --sftune-args "" --sftune-args "--strategy full"
    .venv/bin/python bench/det_bench.py --peer-args "--workers 0" --json out.json
      [--data DIR] [--threads N] [--runs-dir DIR] [--reuse-peer out.json] [--no-peer] [--peer-only]

Reduced runs. The full benchmark (205 train / 87 val images, 10 epochs) takes 72 min for
the peer alone on 2 idle CPU cores (2026-12-01), so ``--epochs``, ``--limit L`` and ``--val-limit V`` cut it down.
With a limit, the script builds a VOC folder of symlinks in its run folder: ``Annotations/`` and
``JPEGImages/`` links for the first L ids of ``ImageSets/Main/train.txt`` and the first V of
``val.txt``, and those two lists; BOTH systems read that folder (the peer gets no ``--limit``
of its own), so they train and validate on exactly the same images. The header and the table
say how far the run was reduced; numbers from a reduced run say nothing about full-size mAP.

``--sftune-args`` is repeatable: each value is one sftune row (defaults + those args; "" is
the plain defaults), all run after the one peer run. A value that is a single option needs
the ``=`` form: ``--sftune-args=--overwrite``.

Columns:
  epochs run / budget: sftune's early stopping (patience 5) may stop it sooner.
  train / val images: what each process reports reading (peer JSON; sftune metrics.json n and
    the data log line). val boxes: the true boxes scored on each side (peer: counted here with
    the peer's own rule, which the peer does not print; sftune: metrics.json n_boxes).
  best mAP (epoch): max over the epochs of COCO mAP@[.5:.95] on val (peer: its per-epoch
    stderr lines; sftune: ``val/map`` in metrics.json's history). The epoch is 1-based.
  best mAP50 (epoch): the same for mAP@.5 (the epoch may differ from the best-mAP epoch).
  wall: around the subprocess, start-up to exit (sftune's includes its final evaluation of the
    bundle, the HTML report with its bootstrap and the drift reference: what a user waits for).
  time to peer's best mAP50: from process start to the end of the first epoch whose mAP50,
    rounded to the peer's 4 places, is >= the peer's best mAP50. sftune: ``time/elapsed_s``
    of that epoch + its start-up. Start-up = (mtime of metrics.json - ``metrics["seconds"]``)
    - the launch time: metrics.json is written right after ``seconds`` is taken, so this is the
    time from launch to the moment run_training started its clock (imports, config); if the
    mtime is unusable, wall - seconds (which also holds the report: errs slow). Peer: the
    moment its per-epoch stderr line arrived (polled every 0.2 s), or start-up (wall - sum of
    ``epoch_s``) + the cumulative ``epoch_s`` if that is earlier; as a last resort epoch x
    ``s_per_epoch``.
  / peer wall: time to the peer's best mAP50 divided by the peer's wall time, the ratio the team
    tracks (goal <= 0.50, as in seg_bench.py; marked ✓/✗). The wall ratio sftune / peer is
    printed under the table.
  peak RSS: summed over the process and its children (DataLoader workers), polled every 0.2 s;
    shared pages count once per process, the same way on both sides.
  load: os.getloadavg() 1-minute value before -> after the row (the machine is shared; the
    header and footer give 1/5/15-minute values at start and end).

The mAP rule, checked by reading both codes. Both are torchmetrics 1.9 ``MeanAveragePrecision``
with the pycocotools backend, box xyxy in pixels, max detections 1/10/100, macro mean over the
classes with at least one true box in the evaluated images, torchvision's default detector
score threshold 0.05 and 100 boxes per image on both, the same 480/640 resize (640x480 images
stay as they are), mean = std = 0.5 normalisation. Differences, none of which changes a number
on BCCD beyond rounding:
  - thresholds: the peer uses torchmetrics' defaults, built with float32 ``torch.linspace``
    (IoU 0.550000011920929..., recall points 0.6000000238...); sftune passes COCOeval's float64
    values (tasks/detection/metrics.py explains why: a recall landing exactly on a point, such
    as 3 of 5 boxes, reads the next lower precision with float32 thresholds). Measured with
    synthetic predictions (jittered val boxes + false alarms, random scores, 3 draws) scored
    both ways: identical on all 87 val images, but up to 1.2e-3 mAP50 and 4e-4 mAP apart on the
    first 20 (few WBC/Platelets boxes, so recalls land on the points): on reduced runs, read
    differences below ~0.002 as a tie.
  - difficult boxes: sftune passes VOC ``difficult`` boxes as iscrowd (ignored, VOC protocol);
    the peer scores every box. BCCD has none (every ``<difficult>`` is 0), so no difference.
  - class order: the peer uses RBC, WBC, Platelets (labels 1..3), sftune the sorted names
    Platelets, RBC, WBC (0-based, +1 inside the model). mAP is a macro mean, so the order does
    not matter; only per-class listings are ordered differently.
  - ground truth: both drop zero-area boxes (the two single-point boxes, BloodImage_00343 in
    train and 00338 in val) and clamp to the image; sftune also drops same-class repeats with
    IoU > 0.95. BCCD has none above 0.95 (its 8 near-duplicate RBC pairs are at IoU 0.8-0.95 and
    kept by both), so the val boxes are the same; the "val boxes" column shows it per run.
  - sftune's history is the epoch-end validation; its metrics.json ``map``/``map_50`` are the
    saved (best-mAP) bundle re-evaluated by the predictor, shown in the per-epoch listing.
Training differs on purpose (that is what is compared): sftune's defaults are the
``linear_probe`` strategy (encoder frozen, FPN + RPN + RoI heads train) with AdamW and cosine
schedule, batch 4 (the task's default), anchors fitted to the training boxes, RandomIoUCrop (p 0.3) + flip, early
stopping; the peer trains every non-BN parameter with SGD at batch 2.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil

from _proc import tree_rss

ROOT = Path(__file__).resolve().parent.parent          # the project root (/work/main)
SHARED = ROOT.parent / "shared"
PEER = SHARED / "bench" / "det_peer.py"
DEFAULT_DATA = SHARED / "data" / "BCCD" / "BCCD"
SEED = 42                                               # sftune's default; passed to the peer as well
POLL_S = 0.2
GOAL = 0.5                                              # time to the peer's best mAP50 <= GOAL x peer wall
PEER_DEFAULT_EPOCHS = 10                                # det_peer.py's default (the full recipe)


@dataclass
class Row:
    system: str                      # "det_peer" or "sftune"
    settings: str                    # extra args ("defaults" when none)
    ok: bool = False
    error: str = ""
    wall_s: float = 0.0              # measured here, around the subprocess
    startup_s: float | None = None   # process start -> first epoch's clock (see the docstring)
    best_map: float | None = None
    best_map_epoch: int | None = None      # 1-based
    best_map50: float | None = None
    best_map50_epoch: int | None = None    # 1-based
    final_map: float | None = None   # sftune: metrics.json "map" (the saved bundle, re-evaluated)
    final_map50: float | None = None
    epochs: int = 0                  # epochs actually run (early stopping may stop sftune sooner)
    epoch_budget: int = 0
    train_images: int | None = None
    val_images: int | None = None
    val_boxes: int | None = None
    peak_rss_mib: float = 0.0
    to_peer_best_s: float | None = None    # to the peer's best mAP50
    to_best_how: str = ""            # how to_peer_best_s was obtained, or why it is missing
    vs_peer_wall: float | None = None
    load_before: float = 0.0
    load_after: float = 0.0
    strategy: str = ""               # sftune: what ran (metrics.json "strategy")
    notes: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)   # per epoch: epoch, map, map_50, at_s


@dataclass
class Measured:
    rc: int
    wall_s: float
    launched_at: float                      # time.time() at launch (for file mtimes)
    peak_rss_mib: float
    stdout: str
    stderr_lines: list[tuple[float, str]]   # (seconds since start when the line was seen, line)


def run_measured(cmd: list[str], log: Path, extra_env: dict[str, str] | None = None) -> Measured:
    """Run cmd with HF_HUB_OFFLINE=1; poll the RSS of its process tree and timestamp its stderr lines.

    Output goes to files, not pipes, so a chatty child can never block on a full pipe; the
    polling loop reads the stderr file as it grows, so every complete line gets the time
    (since the process started, to within POLL_S) at which it was first seen.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    print(f"  {log.stem}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    lines: list[tuple[float, str]] = []
    pending = ""
    with out_path.open("w") as out, err_path.open("w") as err, err_path.open("r", errors="replace") as tail:
        launched_at = time.time()
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        peak = 0

        def read_new() -> None:
            nonlocal pending
            chunk = tail.read()
            if chunk:
                now = time.perf_counter() - t0
                pending += chunk
                *done, pending = pending.split("\n")
                lines.extend((now, ln) for ln in done)

        while proc.poll() is None:
            rss = tree_rss(proc)
            if rss is None:
                break
            peak = max(peak, rss)
            read_new()
            time.sleep(POLL_S)
        rc = proc.wait()
        wall = time.perf_counter() - t0
        read_new()
        if pending:
            lines.append((wall, pending))
    if rc != 0:
        last = [ln for _, ln in lines if ln.strip()][-5:]
        print(f"  ! exited {rc}:\n    " + "\n    ".join(last), file=sys.stderr, flush=True)
    return Measured(rc, wall, launched_at, peak / 2**20, out_path.read_text(errors="replace"), lines)


def load1() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------- data

def read_ids(data: Path, split: str) -> list[str]:
    """The ids of ImageSets/Main/<split>.txt, as the peer reads them (first column, in order)."""
    text = (data / "ImageSets" / "Main" / f"{split}.txt").read_text()
    return [ln.split()[0] for ln in text.splitlines() if ln.strip()]


def subset(data: Path, limit: int | None, val_limit: int | None, dest: Path) -> tuple[Path, int, int, int, int]:
    """A VOC folder of symlinks with the first ``limit`` train and ``val_limit`` val ids.

    Returns (folder, train ids used, train ids in all, val ids used, val ids in all). The folder
    is ``data`` itself when neither limit cuts anything."""
    train_ids, val_ids = read_ids(data, "train"), read_ids(data, "val")
    use_train, use_val = train_ids[:limit], val_ids[:val_limit]
    if len(use_train) == len(train_ids) and len(use_val) == len(val_ids):
        return data, len(train_ids), len(train_ids), len(val_ids), len(val_ids)
    images = {p.stem: p for p in (data / "JPEGImages").iterdir()}
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    for i in use_train + use_val:
        (dest / "Annotations" / f"{i}.xml").symlink_to(data / "Annotations" / f"{i}.xml")
        if i in images:  # a missing image is left for both systems to report
            (dest / "JPEGImages" / images[i].name).symlink_to(images[i])
    (dest / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in use_train))
    (dest / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in use_val))
    return dest, len(use_train), len(train_ids), len(use_val), len(val_ids)


def peer_val_boxes(data: Path) -> int | None:
    """The val boxes the peer scores: every object whose box, clamped to the image, has a side >= 1 px."""
    n = 0
    try:
        for i in read_ids(data, "val"):
            ann = ET.parse(data / "Annotations" / f"{i}.xml").getroot()
            w, h = int(ann.findtext("size/width")), int(ann.findtext("size/height"))
            for obj in ann.iter("object"):
                x0, y0, x1, y1 = (float(obj.findtext("bndbox/" + k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
                y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
                n += x1 - x0 >= 1 and y1 - y0 >= 1
    except (OSError, ET.ParseError, TypeError, ValueError):
        return None
    return n


# ----------------------------------------------------------------------------- rows

def first_reaching(history: list[dict], key: str, target: float) -> dict | None:
    """The first epoch whose ``key``, rounded to the peer's 4 places, is >= target."""
    return next((h for h in history if h.get(key) is not None and round(h[key], 4) >= target), None)


def set_bests(row: Row) -> None:
    if not row.history:
        return
    losses = [h.get("train_loss") for h in row.history]
    if any(isinstance(x, float) and x != x for x in losses):  # json.loads reads the peer's NaN as float nan
        row.notes.append("TRAINING DIVERGED: the training loss is NaN")
    elif (len(losses) > 1 and all(isinstance(x, (int, float)) for x in losses)
          and losses[-1] > 10 * max(losses[0], 1e-9)):
        row.notes.append(f"TRAINING DIVERGED? the training loss grew {losses[-1] / losses[0]:.0f}x "
                         f"({losses[0]:.3g} -> {losses[-1]:.3g})")
    best = max(row.history, key=lambda h: h["map"])          # max() keeps the first of equal values
    row.best_map, row.best_map_epoch = best["map"], best["epoch"]
    best50 = max(row.history, key=lambda h: h["map_50"])
    row.best_map50, row.best_map50_epoch = best50["map_50"], best50["epoch"]


def run_peer(data: Path, epochs: int, extra: list[str], work: Path, env: dict[str, str]) -> Row:
    row = Row("det_peer", shlex.join(extra) or "defaults", epoch_budget=epochs)
    cmd = [sys.executable, str(PEER), "--data", str(data), "--epochs", str(epochs), "--seed", str(SEED), *extra]
    row.load_before = load1()
    m = run_measured(cmd, work / "peer.log", env)
    row.load_after, row.wall_s, row.peak_rss_mib = load1(), m.wall_s, m.peak_rss_mib
    results = [ln for ln in m.stdout.splitlines() if ln.startswith("{")]
    if m.rc != 0 or not results:
        last = [ln for _, ln in m.stderr_lines if ln.strip()][-1:]
        row.error = f"exit {m.rc}" + ("" if results else ", no JSON line") + (f": {last[0][:200]}" if last else "")
        return row
    result = json.loads(results[-1])
    epochs_seen: list[tuple[float, dict]] = []
    for t, ln in m.stderr_lines:
        if ln.startswith("{"):
            try:
                r = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if "epoch" in r and "map_50" in r:
                epochs_seen.append((t, r))
    row.ok, row.epochs = True, int(result["epochs"])
    row.train_images, row.val_images = result.get("train_images"), result.get("val_images")
    row.val_boxes = peer_val_boxes(data)
    if result.get("dropped_boxes"):
        row.notes.append(f"{result['dropped_boxes']} zero-area box(es) dropped (train + val)")
    per_epoch_s = [r.get("epoch_s") for _, r in epochs_seen]
    if per_epoch_s and all(isinstance(s, (int, float)) for s in per_epoch_s):
        row.startup_s = row.wall_s - sum(per_epoch_s)
    for i, (t, r) in enumerate(epochs_seen):
        if row.startup_s is not None:
            computed = row.startup_s + sum(per_epoch_s[: i + 1])
        else:
            computed = (i + 1) * float(result["s_per_epoch"])
        # The line's arrival time is direct; a line written in the last poll before exit is
        # stamped at exit, so the earlier of the two is the better estimate.
        row.history.append({"epoch": int(r["epoch"]), "map": float(r["map"]), "map_50": float(r["map_50"]),
                            "train_loss": r.get("train_loss"), "at_s": round(min(t, computed), 2)})
    if row.history:
        set_bests(row)
        hit = first_reaching(row.history, "map_50", row.best_map50)
        row.to_peer_best_s, row.to_best_how = hit["at_s"], "its per-epoch stderr line"
    else:  # no per-epoch lines: the final figures, reached by the end at the latest
        row.best_map, row.best_map50 = float(result["best_map"]), float(result["map_50"])
        row.to_peer_best_s, row.to_best_how = row.wall_s, "wall time (upper bound: no per-epoch lines)"
    row.vs_peer_wall = row.to_peer_best_s / row.wall_s
    row.notes.append(f"{result.get('s_per_epoch')} s/epoch ({result.get('train_s_per_epoch')} s training)")
    return row


def sftune_cmd() -> list[str]:
    """The installed `sftune` script next to this interpreter (what users run), else -m."""
    script = Path(sys.executable).parent / "sftune"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sftune"]


def run_sftune(data: Path, epochs: int, extra: list[str], peer: Row | None, work: Path, n: int,
               env: dict[str, str]) -> Row:
    row = Row("sftune", shlex.join(extra) or "defaults", epoch_budget=epochs)
    out = work / f"sftune-{n}"
    cmd = [*sftune_cmd(), "train", "--data", str(data), "--epochs", str(epochs), "--out", str(out),
           "--no-progress", *extra]
    row.load_before = load1()
    # A fresh, empty cache per run: no run profits from an earlier one.
    m = run_measured(cmd, work / f"sftune-{n}.log", {**env, "SFTUNE_CACHE": str(work / f"cache-{n}")})
    row.load_after, row.wall_s, row.peak_rss_mib = load1(), m.wall_s, m.peak_rss_mib
    metrics_path = out / "metrics.json"
    if m.rc != 0 or not metrics_path.is_file():
        last = [ln for _, ln in m.stderr_lines if ln.strip()][-1:]
        row.error = f"exit {m.rc}" + (f": {last[0][:200]}" if last else "")
        return row
    metrics = json.loads(metrics_path.read_text())
    strategy = metrics.get("strategy")
    row.strategy = strategy.get("name", "") if isinstance(strategy, dict) else str(strategy or "")
    row.final_map, row.final_map50 = metrics.get("map"), metrics.get("map_50")
    row.val_images, row.val_boxes = metrics.get("n"), metrics.get("n_boxes")
    # sftune's log lines (stdout when it is not a terminal): "data: 40 train / 20 val images, ..."
    for ln in [*m.stdout.splitlines(), *(ln for _, ln in m.stderr_lines)]:
        if ln.startswith("data: ") and " train / " in ln and row.train_images is None:
            try:
                row.train_images = int(ln[len("data: "):].split(" train / ")[0])
            except ValueError:
                pass
        elif ln.startswith("data problems:") or (ln.startswith("  ") and ("duplicate box" in ln or "degenerate" in ln)):
            row.notes.append(ln.strip()[:160])
    seconds = metrics.get("seconds")
    if isinstance(seconds, (int, float)):
        started = metrics_path.stat().st_mtime - float(seconds) - m.launched_at
        if 0 <= started <= m.wall_s - float(seconds) + 1.0:  # "seconds" is rounded to 0.1
            row.startup_s = max(0.0, started)
        else:
            row.startup_s = m.wall_s - float(seconds)
            row.notes.append("start-up = wall - seconds (metrics.json mtime unusable): errs slow")
    for h in metrics.get("history", []):
        if "val/map" not in h:
            continue
        at = h.get("time/elapsed_s")
        row.history.append({"epoch": int(h.get("epoch", len(row.history))) + 1, "map": float(h["val/map"]),
                            "map_50": float(h.get("val/map_50", float("nan"))), "train_loss": h.get("train/loss"),
                            "at_s": round(at + row.startup_s, 2) if at is not None and row.startup_s is not None
                            else None})
    row.ok = True
    row.epochs = len(row.history) or int(metrics.get("epochs_run") or 0)
    if row.history and row.history[-1]["at_s"] is not None:
        row.notes.append(f"{row.wall_s - row.history[-1]['at_s']:.1f} s from the last epoch's end to exit (best "
                         f"weights re-evaluated, report with bootstrap, drift reference)")
    if row.history:
        set_bests(row)
    else:
        row.best_map, row.best_map50 = row.final_map, row.final_map50
    if peer is None or not peer.ok or peer.best_map50 is None:
        row.to_best_how = "no peer result"
    elif not row.history or any(h["at_s"] is None for h in row.history):
        row.to_best_how = "no time/elapsed_s in history"
    else:
        hit = first_reaching(row.history, "map_50", peer.best_map50)
        if peer.best_map50 <= 0:
            row.to_best_how = "peer's best mAP50 is 0: no target (run longer or on more images)"
        elif hit is None:
            row.to_best_how = "not reached"
        else:
            row.to_peer_best_s, row.to_best_how = hit["at_s"], f"epoch {hit['epoch']}"
            row.vs_peer_wall = row.to_peer_best_s / peer.wall_s
    return row


# ----------------------------------------------------------------------------- output

def fmt(value: float | int | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    head = ["system", "settings", "epochs run / budget", "train / val images (val boxes)", "best mAP (epoch)",
            "best mAP50 (epoch)", "wall (s)", "time to peer's best mAP50 (s)", "÷ peer wall", "peak RSS (MiB)",
            "load 1m before → after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        settings = r.settings if r.system == "det_peer" or not r.strategy else f"{r.settings} ({r.strategy})"
        settings = settings.replace("|", "/")
        load = f"{r.load_before:.2f} → {r.load_after:.2f}"
        if not r.ok:
            lines.append(f"| {r.system} | {settings} | | | failed ({r.error.replace('|', '/')}) | | {r.wall_s:.1f} "
                         f"| | | {r.peak_rss_mib:.0f} | {load} |")
            continue
        images = f"{fmt(r.train_images, 'd')} / {fmt(r.val_images, 'd')} ({fmt(r.val_boxes, 'd')})"
        best = f"{fmt(r.best_map, '.4f')} ({r.best_map_epoch or '?'})"
        best50 = f"{fmt(r.best_map50, '.4f')} ({r.best_map50_epoch or '?'})"
        if r.to_peer_best_s is None:
            to_best, ratio = r.to_best_how, "—"
        else:
            to_best = f"{r.to_peer_best_s:.1f}" + (" (reference)" if r.system == "det_peer" else f" ({r.to_best_how})")
            ratio = f"{r.vs_peer_wall:.2f}" + ("" if r.system == "det_peer" else
                                               (" ✓" if r.vs_peer_wall <= GOAL else " ✗"))
        lines.append(f"| {r.system} | {settings} | {r.epochs} / {r.epoch_budget} | {images} | {best} | {best50} "
                     f"| {r.wall_s:.1f} | {to_best} | {ratio} | {r.peak_rss_mib:.0f} | {load} |")
    return "\n".join(lines)


def curves(rows: list[Row]) -> str:
    """Per-epoch mAP / mAP50 and the time (s since process start) each epoch ended, one line per row."""
    out = []
    for i, r in enumerate(rows):
        if not r.ok:
            continue
        points = ", ".join(f"{h['map']:.3f}/{h['map_50']:.3f}"
                           + (f" (loss {h['train_loss']:.4g})" if isinstance(h.get("train_loss"), (int, float)) else "")
                           + (f"@{h['at_s']:.0f}s" if h["at_s"] is not None else "")
                           for h in r.history) or "no per-epoch figures"
        start = f"start-up {r.startup_s:.1f} s; " if r.startup_s is not None else ""
        final = (f"; saved bundle re-evaluated: mAP {fmt(r.final_map, '.4f')}, mAP50 {fmt(r.final_map50, '.4f')}"
                 if r.system == "sftune" else "")
        shown = [n for n in r.notes if not n.startswith("start-up ")]
        notes = ("; " + "; ".join(shown)) if shown else ""
        out.append(f"- row {i + 1} {r.system} {r.settings}: {start}{points}{final}{notes}")
    return "\n".join(out)


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "missing"

    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram_gib": f"{psutil.virtual_memory().total / 2**30:.1f}",
            "torch": ver("torch"), "torchvision": ver("torchvision"), "timm": ver("timm"),
            "torchmetrics": ver("torchmetrics"), "pycocotools": ver("pycocotools"), "lightning": ver("lightning"),
            "sftune": ver("sftune"), "python": platform.python_version(),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def loads() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="VOC folder: Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt "
                         "[../shared/data/BCCD/BCCD]")
    ap.add_argument("--epochs", type=int, default=PEER_DEFAULT_EPOCHS, help="epoch budget, the same for both [10]")
    ap.add_argument("--limit", type=int, help="use the first N train.txt images (both systems) [all 205]")
    ap.add_argument("--val-limit", type=int, help="use the first N val.txt images (both systems) [all 87]")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS / MKL_NUM_THREADS for both processes [unset]")
    ap.add_argument("--peer-args", default="", help='extra args for det_peer.py, one string, e.g. "--workers 0"')
    ap.add_argument("--sftune-args", action="append", default=None, metavar="ARGS",
                    help='extra args for sftune train, one string; repeat for one row each ("" = defaults) '
                         "[one row, defaults]")
    ap.add_argument("--no-peer", action="store_true", help="sftune rows only (no time to the peer's best)")
    ap.add_argument("--peer-only", action="store_true",
                    help="the peer row only (save it with --json, then compare sftune rows with --reuse-peer)")
    ap.add_argument("--reuse-peer", type=Path, metavar="JSON",
                    help="take the peer row from an earlier --json file instead of running it (not back to back!)")
    ap.add_argument("--runs-dir", type=Path, help="keep the subset, bundles and logs here [a temp dir, deleted]")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args()
    if args.epochs < 1:
        ap.error("--epochs must be at least 1")
    if args.peer_only and (args.no_peer or args.reuse_peer or args.sftune_args):
        ap.error("--peer-only runs the peer alone: leave out --no-peer, --reuse-peer and --sftune-args")
    for name in ("limit", "val_limit", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")

    data = (args.data if args.data.is_absolute() else Path.cwd() / args.data).resolve()
    if not PEER.is_file() or not data.is_dir():
        missing = PEER if not PEER.is_file() else data
        print(f"det_bench: skipped: {missing} is absent (the benchmark needs ../shared with the peer and BCCD)")
        return 0
    if not ((data / "Annotations").is_dir() and (data / "JPEGImages").is_dir()
            and all((data / "ImageSets" / "Main" / f"{s}.txt").is_file() for s in ("train", "val"))):
        ap.error(f"{data} needs Annotations/, JPEGImages/ and ImageSets/Main/train.txt + val.txt (what the peer reads)")

    env: dict[str, str] = {}
    if args.threads:
        env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    runs_dir = (args.runs_dir or Path(tempfile.mkdtemp(prefix="sftune-det-bench-"))).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    peer: Row | None = None
    info = machine()
    try:
        used, n_train, total_train, n_val, total_val = subset(data, args.limit, args.val_limit, runs_dir / "data")
        reduced = []
        if args.epochs < PEER_DEFAULT_EPOCHS:
            reduced.append(f"{args.epochs} of the recipe's {PEER_DEFAULT_EPOCHS} epochs")
        if n_train < total_train:
            reduced.append(f"first {n_train} of {total_train} train.txt images")
        if n_val < total_val:
            reduced.append(f"first {n_val} of {total_val} val.txt images")
        size = (f"**REDUCED RUN: {'; '.join(reduced)}**" if reduced else
                f"full size: {args.epochs} epochs, {total_train} train / {total_val} val images")
        where = (f" (a VOC folder of symlinks, {used}, read by both systems)" if used != data else "")
        print(f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM  ")
        print(f"torch {info['torch']}, torchvision {info['torchvision']}, timm {info['timm']}, "
              f"torchmetrics {info['torchmetrics']}, pycocotools {info['pycocotools']}, lightning {info['lightning']}, "
              f"sftune {info['sftune']}, Python {info['python']}; {info['date']}  ")
        print(f"Data {data}{where}; {size}; same {args.epochs}-epoch budget for both; seed {SEED}; "
              f"threads {args.threads or 'default'}; load average at start {loads()} (1/5/15 min)\n", flush=True)
        print(f"running (logs in {runs_dir}) ...", file=sys.stderr, flush=True)

        if args.reuse_peer:
            saved = json.loads(args.reuse_peer.read_text())
            peer = Row(**next(r for r in saved["rows"] if r["system"] == "det_peer"))
            peer.settings += f" (reused from {args.reuse_peer.name}, {saved.get('machine', {}).get('date', '?')})"
            rows.append(peer)
        elif not args.no_peer:
            peer = run_peer(used, args.epochs, shlex.split(args.peer_args), runs_dir, env)
            rows.append(peer)
        for n, extra in enumerate([] if args.peer_only else args.sftune_args if args.sftune_args is not None else [""]):
            rows.append(run_sftune(used, args.epochs, shlex.split(extra), peer, runs_dir, n, env))
    finally:
        if args.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)

    print(f"{size}\n")
    print(table(rows) + "\n")
    print("Per epoch (val mAP/mAP50 @ seconds since process start):\n" + curves(rows) + "\n")
    print(f"Load average at end {loads()} (1/5/15 min); {info['cores']} cores, shared with other work: "
          f"read the times next to the load column. Goal: time to the peer's best mAP50 <= {GOAL:.2f} x the peer's "
          f"wall time, same {args.epochs}-epoch budget.")
    if peer is not None and peer.ok:
        for r in rows:
            if r.system == "sftune" and r.ok:
                verdict = ("PASS" if r.vs_peer_wall is not None and r.vs_peer_wall <= GOAL else
                           "n/a" if not peer.best_map50 else "FAIL")
                print(f"- sftune {r.settings}: {verdict} "
                      f"({fmt(r.to_peer_best_s, '.1f')} s vs {GOAL * peer.wall_s:.1f} s allowed; {r.to_best_how}); "
                      f"wall sftune / peer = {r.wall_s / peer.wall_s:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "epochs": args.epochs, "limit": args.limit,
                                         "val_limit": args.val_limit, "reduction": reduced, "seed": SEED,
                                         "data": str(data), "threads": args.threads, "peer_args": args.peer_args,
                                         "goal": GOAL, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
