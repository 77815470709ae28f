"""Benchmark: sftune semantic segmentation vs smp's CamVid recipe (the reference peer).

Runs, one after the other on this machine, (1) the peer ``../shared/bench/seg_peer.py``
(segmentation_models_pytorch's CamVid example as a plain loop: DeepLabV3+ on the offline
EfficientNet-Lite0 encoder, Adam 2e-4 cosine, batch 8, 320 px crops, every parameter trains)
and (2) ``sftune train`` with sftune's *defaults* for the task: only ``--data``, ``--task
semantic_segmentation``, ``--set task.ignore_index=11``, ``--epochs N``, ``--out`` (a temp dir)
and ``--no-progress``, plus whatever ``--sftune-args`` adds. Same data, same epoch budget,
same seed (42, passed to the peer too), ``HF_HUB_OFFLINE=1``. Each process is timed end to
end from outside (interpreter start-up and imports included).

    .venv/bin/python bench/seg_bench.py                          # 10 epochs each (~25 min on 2 cores)
    .venv/bin/python bench/seg_bench.py --epochs 2               # smoke test (~6 min)
    .venv/bin/python bench/seg_bench.py --sftune-args "" --sftune-args "--strategy full --lr 3e-3"
    .venv/bin/python bench/seg_bench.py --peer-args "--workers 0" --json out.json
      [--data DIR] [--runs-dir DIR] [--reuse-peer out.json] [--no-peer]

``--sftune-args`` is repeatable: each value is one sftune row (defaults + those args; "" is
the plain defaults), all run after the one peer run. A value that is a single option needs
the ``=`` form: ``--sftune-args=--overwrite``.

Columns:
  best val mIoU: the best epoch's validation mIoU on each side (peer: ``best_miou`` of its
    JSON line; sftune: max of ``val/miou`` over metrics.json's history). The epoch is 1-based.
  pixel acc: at that same best-mIoU epoch.
  wall: around the subprocess, start-up to exit.
  time to peer's best: from process start to the end of the first epoch whose mIoU, rounded
    to the peer's 4 places, is >= the peer's best. sftune: ``time/elapsed_s`` of that epoch +
    its start-up (wall - ``metrics["seconds"]``; that difference also holds the few tenths of
    a second after run_training returns, so the figure errs slow). Peer: the moment its
    per-epoch stderr line arrived (polled every 0.2 s); if that was missed, its start-up
    (wall - sum of ``epoch_s``) + the cumulative ``epoch_s``; as a last resort epoch x
    ``s_per_epoch``.
  / peer wall: time to peer's best divided by the peer's wall time. The team's goal is
    <= 0.50 (sftune reaches the peer's best mIoU in at most half the peer's wall time).
  peak RSS: summed over the process and its children (DataLoader workers), polled every 0.2 s;
    shared pages count once per process, the same way on both sides.
  load: os.getloadavg() 1-minute value before -> after the row (the machine is shared).

The mIoU rule is the same on both sides (checked by reading both codes): one confusion
matrix over every val pixel whose label is not void (11), dataset-level, not per image;
IoU_c = TP / (TP + FP + FN); a class with no true and no predicted pixel in the whole val
set is left out of the mean, a labelled class never predicted counts 0. The peer takes it
from torchmetrics 1.9 ``MulticlassJaccardIndex(num_classes=12, ignore_index=11,
average="macro")`` (macro weights are zeroed for the ignore index and for empty-union
classes), sftune from ``tasks/segmentation/metrics.py`` (11 classes, ignore_index 11, the
same nanmean). Pixel accuracy = correct / non-void pixels on both. Both validate the 34
whole 480x360 images with 11-way argmax, and both normalise with mean = std = 0.5 (timm's
config for tf_efficientnet_lite0). What differs is not the metric but the inputs around the
scored pixels: the peer pads images at the bottom to 384 px with black (-1 after
normalisation), sftune pads with 0 (the mean colour) inside the model and crops the logits;
padded pixels are never scored on either side. Training differs on purpose (that is what is
compared): sftune's defaults add random scaling (0.5-2x) before the 320 px crop, AdamW,
batch 32, its strategy's freezing and LR, early stopping (patience 5).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil

from _proc import tree_rss

ROOT = Path(__file__).resolve().parent.parent          # the project root (/work/main)
SHARED = ROOT.parent / "shared"
PEER = SHARED / "bench" / "seg_peer.py"
DEFAULT_DATA = SHARED / "data" / "CamVid_subset" / "CamVid"
VOID = 11                                               # CamVid's void label: task.ignore_index for sftune
SEED = 42                                               # sftune's default; passed to the peer as well
POLL_S = 0.2
GOAL = 0.5                                              # time to the peer's best <= GOAL x peer wall


class Interrupted(Exception):
    """SIGTERM/SIGHUP: stop the running child, print the rows finished so far."""


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


@dataclass
class Row:
    system: str                      # "seg_peer" or "sftune"
    settings: str                    # extra args ("defaults" when none)
    ok: bool = False
    error: str = ""
    wall_s: float = 0.0              # measured here, around the subprocess
    startup_s: float | None = None   # process start -> first epoch's clock (see the docstring)
    best_miou: float | None = None
    best_epoch: int | None = None    # 1-based
    pixel_acc: float | None = None   # at best_epoch
    final_miou: float | None = None  # sftune: metrics.json "miou" (the saved bundle, re-evaluated)
    epochs: int = 0                  # epochs actually run (early stopping may stop sftune sooner)
    epoch_budget: int = 0
    peak_rss_mib: float = 0.0
    to_peer_best_s: float | None = None
    to_best_how: str = ""            # how to_peer_best_s was obtained, or why it is missing
    vs_peer_wall: float | None = None
    load_before: float = 0.0
    load_after: float = 0.0
    strategy: str = ""               # sftune: what ran (metrics.json "strategy")
    history: list[dict] = field(default_factory=list)   # per epoch: epoch, miou, pixel_acc, at_s


@dataclass
class Measured:
    rc: int
    wall_s: float
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

        try:
            while proc.poll() is None:
                rss = tree_rss(proc)
                if rss is None:
                    break
                peak = max(peak, rss)
                read_new()
                time.sleep(POLL_S)
        except BaseException:                # Ctrl-C / SIGTERM here: never leave the child training
            for p in [*proc.children(recursive=True), proc]:
                try:
                    p.terminate()
                except psutil.NoSuchProcess:
                    pass
            proc.wait()
            raise
        rc = proc.wait()
        wall = time.perf_counter() - t0
        read_new()
        if pending:
            lines.append((wall, pending))
    if rc != 0:
        last = [ln for _, ln in lines if ln.strip()][-5:]
        print(f"  ! exited {rc}:\n    " + "\n    ".join(last), file=sys.stderr, flush=True)
    return Measured(rc, wall, peak / 2**20, out_path.read_text(errors="replace"), lines)


def load1() -> float:
    return os.getloadavg()[0]


def run_peer(data: Path, epochs: int, extra: list[str], work: Path) -> Row:
    row = Row("seg_peer", shlex.join(extra) or "defaults", epoch_budget=epochs)
    cmd = [sys.executable, str(PEER), "--data", str(data), "--epochs", str(epochs), "--seed", str(SEED), *extra]
    row.load_before = load1()
    m = run_measured(cmd, work / "peer.log")
    row.load_after, row.wall_s, row.peak_rss_mib = load1(), m.wall_s, m.peak_rss_mib
    results = [ln for ln in m.stdout.splitlines() if ln.startswith("{")]
    if m.rc != 0 or not results:
        row.error = f"exit {m.rc}" + ("" if results else ", no JSON line")
        return row
    result = json.loads(results[-1])
    epochs_seen: list[tuple[float, dict]] = []
    for t, ln in m.stderr_lines:
        if ln.startswith("{"):
            try:
                r = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if "epoch" in r and "miou" in r:
                epochs_seen.append((t, r))
    row.ok, row.epochs, row.best_miou = True, int(result["epochs"]), float(result["best_miou"])
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
        row.history.append({"epoch": int(r["epoch"]), "miou": float(r["miou"]),
                            "pixel_acc": float(r.get("pixel_acc", float("nan"))), "at_s": round(min(t, computed), 2)})
    best = next((h for h in row.history if h["miou"] >= row.best_miou), None)
    if best is not None:
        row.best_epoch, row.pixel_acc = best["epoch"], best["pixel_acc"]
        row.to_peer_best_s, row.to_best_how = best["at_s"], "its per-epoch stderr line"
    else:  # no per-epoch lines: the best is reached by the end at the latest
        row.pixel_acc = result.get("pixel_acc")
        row.to_peer_best_s, row.to_best_how = row.wall_s, "wall time (upper bound: no per-epoch lines)"
    row.vs_peer_wall = row.to_peer_best_s / row.wall_s
    return row


def sftune_cmd() -> list[str]:
    """The installed `sftune` script next to this interpreter (what users run), else -m."""
    script = Path(sys.executable).parent / "sftune"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sftune"]


def run_sftune(data: Path, epochs: int, extra: list[str], peer: Row | None, work: Path, n: int) -> Row:
    row = Row("sftune", shlex.join(extra) or "defaults", epoch_budget=epochs)
    out = work / f"sftune-{n}"
    cmd = [*sftune_cmd(), "train", "--data", str(data), "--task", "semantic_segmentation",
           "--set", f"task.ignore_index={VOID}", "--epochs", str(epochs), "--out", str(out), "--no-progress", *extra]
    row.load_before = load1()
    # A fresh, empty cache per run: no run profits from an earlier one.
    m = run_measured(cmd, work / f"sftune-{n}.log", {"SFTUNE_CACHE": str(work / f"cache-{n}")})
    row.load_after, row.wall_s, row.peak_rss_mib = load1(), m.wall_s, m.peak_rss_mib
    if m.rc != 0 or not (out / "metrics.json").is_file():
        last = [ln for _, ln in m.stderr_lines if ln.strip()][-1:]
        row.error = f"exit {m.rc}" + (f": {last[0][:200]}" if last else "")
        return row
    metrics = json.loads((out / "metrics.json").read_text())
    strategy = metrics.get("strategy")
    row.strategy = strategy.get("name", "") if isinstance(strategy, dict) else str(strategy or "")
    row.final_miou = metrics.get("miou")
    seconds = metrics.get("seconds")
    row.startup_s = row.wall_s - float(seconds) if isinstance(seconds, (int, float)) else None
    for h in metrics.get("history", []):
        if "val/miou" not in h:
            continue
        at = h.get("time/elapsed_s")
        row.history.append({"epoch": int(h.get("epoch", len(row.history))) + 1, "miou": float(h["val/miou"]),
                            "pixel_acc": float(h.get("val/pixel_acc", float("nan"))),
                            "at_s": round(at + row.startup_s, 2) if at is not None and row.startup_s is not None
                            else None})
    row.ok = True
    row.epochs = len(row.history) or int(metrics.get("epochs_run") or 0)
    if row.history:
        best = max(row.history, key=lambda h: h["miou"])
        row.best_miou, row.best_epoch, row.pixel_acc = best["miou"], best["epoch"], best["pixel_acc"]
    else:
        row.best_miou, row.pixel_acc = row.final_miou, metrics.get("pixel_acc")
    if peer is None or not peer.ok or peer.best_miou is None:
        row.to_best_how = "no peer result"
    elif not row.history or any(h["at_s"] is None for h in row.history):
        row.to_best_how = "no time/elapsed_s in history"
    else:
        # The peer prints mIoU rounded to 4 places: compare at that precision.
        hit = next((h for h in row.history if round(h["miou"], 4) >= peer.best_miou), None)
        if hit is None:
            row.to_best_how = "not reached"
        else:
            row.to_peer_best_s, row.to_best_how = hit["at_s"], f"epoch {hit['epoch']}"
            row.vs_peer_wall = row.to_peer_best_s / peer.wall_s
    return row


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    head = ["system", "settings", "epochs run / budget", "best val mIoU (epoch)", "pixel acc", "wall (s)",
            "time to peer's best (s)", "÷ peer wall", "peak RSS (MiB)", "load 1m before → after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        settings = r.settings if r.system == "seg_peer" or not r.strategy else f"{r.settings} ({r.strategy})"
        settings = settings.replace("|", "/")
        load = f"{r.load_before:.2f} → {r.load_after:.2f}"
        if not r.ok:
            lines.append(f"| {r.system} | {settings} | | failed ({r.error.replace('|', '/')}) | | {r.wall_s:.1f} "
                         f"| | | {r.peak_rss_mib:.0f} | {load} |")
            continue
        best = f"{fmt(r.best_miou, '.4f')} ({r.best_epoch if r.best_epoch else '?'})"
        if r.to_peer_best_s is None:
            to_best, ratio = r.to_best_how, "—"
        else:
            to_best = f"{r.to_peer_best_s:.1f}" + (" (reference)" if r.system == "seg_peer" else f" ({r.to_best_how})")
            ratio = f"{r.vs_peer_wall:.2f}" + ("" if r.system == "seg_peer" else
                                               (" ✓" if r.vs_peer_wall <= GOAL else " ✗"))
        lines.append(f"| {r.system} | {settings} | {r.epochs} / {r.epoch_budget} | {best} | {fmt(r.pixel_acc, '.4f')} "
                     f"| {r.wall_s:.1f} | {to_best} | {ratio} | {r.peak_rss_mib:.0f} | {load} |")
    return "\n".join(lines)


def curves(rows: list[Row]) -> str:
    """Per-epoch mIoU and the time (s since process start) each epoch ended, one line per row."""
    out = []
    for i, r in enumerate(rows):
        if r.ok and r.history:
            points = ", ".join(f"{h['miou']:.3f}@{h['at_s']:.0f}s" if h["at_s"] is not None else f"{h['miou']:.3f}"
                               for h in r.history)
            start = f"start-up {r.startup_s:.1f} s; " if r.startup_s is not None else ""
            out.append(f"- row {i + 1} {r.system} {r.settings}: {start}{points}")
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
            "torch": ver("torch"), "timm": ver("timm"), "smp": ver("segmentation-models-pytorch"),
            "torchmetrics": ver("torchmetrics"), "lightning": ver("lightning"), "sftune": ver("sftune"),
            "python": platform.python_version(), "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="CamVid folder with train/, trainannot/, val/, valannot/ [../shared/data/CamVid_subset/CamVid]")
    ap.add_argument("--epochs", type=int, default=10, help="epoch budget, the same for both [10]")
    ap.add_argument("--peer-args", default="", help='extra args for seg_peer.py, one string, e.g. "--workers 0"')
    ap.add_argument("--sftune-args", action="append", default=None, metavar="ARGS",
                    help='extra args for sftune train, one string; repeat for one row each ("" = defaults) '
                         "[one row, defaults]")
    ap.add_argument("--no-peer", action="store_true", help="sftune rows only (no time-to-peer's-best)")
    ap.add_argument("--reuse-peer", type=Path, metavar="JSON",
                    help="take the peer row from an earlier --json file instead of running it (not back to back!)")
    ap.add_argument("--runs-dir", type=Path, help="keep bundles and logs here [a temp dir, deleted]")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args()
    if args.epochs < 1:
        ap.error("--epochs must be at least 1")

    data = (args.data if args.data.is_absolute() else Path.cwd() / args.data).resolve()
    if not PEER.is_file() or not data.is_dir():
        missing = PEER if not PEER.is_file() else data
        print(f"seg_bench: skipped: {missing} is absent (the benchmark needs ../shared with the peer and CamVid)")
        return 0
    if not all((data / d).is_dir() for d in ("train", "trainannot", "val", "valannot")):
        ap.error(f"{data} needs train/, trainannot/, val/ and valannot/ (the layout the peer reads)")

    info = machine()
    print(f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM  ")
    print(f"torch {info['torch']}, timm {info['timm']}, smp {info['smp']}, torchmetrics {info['torchmetrics']}, "
          f"lightning {info['lightning']}, sftune {info['sftune']}, Python {info['python']}; {info['date']}  ")
    print(f"Data {data}; **{args.epochs} epochs each** (same budget for both); seed {SEED}; "
          f"load average at start {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)\n", flush=True)

    runs_dir = (args.runs_dir or Path(tempfile.mkdtemp(prefix="sftune-seg-bench-"))).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    print(f"running (logs in {runs_dir}) ...", file=sys.stderr, flush=True)
    rows: list[Row] = []
    peer: Row | None = None
    interrupted = ""

    def save() -> None:  # after every row, so a killed benchmark keeps what it finished
        if args.json:
            args.json.write_text(json.dumps({"machine": info, "epochs": args.epochs, "seed": SEED, "data": str(data),
                                             "peer_args": args.peer_args, "goal": GOAL, "interrupted": interrupted,
                                             "rows": [asdict(r) for r in rows]}, indent=2))

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        if args.reuse_peer:
            saved = json.loads(args.reuse_peer.read_text())
            peer = Row(**next(r for r in saved["rows"] if r["system"] == "seg_peer"))
            peer.settings += f" (reused from {args.reuse_peer.name}, {saved.get('machine', {}).get('date', '?')})"
            rows.append(peer)
        elif not args.no_peer:
            peer = run_peer(data, args.epochs, shlex.split(args.peer_args), runs_dir)
            rows.append(peer)
            save()
        for n, extra in enumerate(args.sftune_args if args.sftune_args is not None else [""]):
            rows.append(run_sftune(data, args.epochs, shlex.split(extra), peer, runs_dir, n))
            save()
    except (Interrupted, KeyboardInterrupt) as exc:
        interrupted = str(exc) or "KeyboardInterrupt"
        print(f"\n**Interrupted ({interrupted}): only the rows finished before it are shown.**\n")
    finally:
        if args.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)

    print(table(rows) + "\n")
    print("Per epoch (val mIoU @ seconds since process start):\n" + curves(rows) + "\n")
    print(f"Load average at end {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min); "
          f"{info['cores']} cores. Goal: time to the peer's best mIoU <= {GOAL:.2f} x the peer's wall time, "
          f"same {args.epochs}-epoch budget.")
    if peer is not None and peer.ok:
        for r in rows:
            if r.system == "sftune" and r.ok:
                verdict = ("PASS" if r.vs_peer_wall is not None and r.vs_peer_wall <= GOAL else "FAIL")
                print(f"- sftune {r.settings}: {verdict} "
                      f"({fmt(r.to_peer_best_s, '.1f')} s vs {GOAL * peer.wall_s:.1f} s allowed; {r.to_best_how})")
    save()
    return 1 if interrupted or not all(r.ok for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
