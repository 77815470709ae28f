"""Benchmark: sftune vs the seed documents' plain PyTorch loop (the reference peer).

Same data, same backbone (EfficientNet-Lite0, offline ImageNet weights), same machine,
one run. Every system runs as a subprocess and is timed end to end from outside
(Python start-up and imports included), because that is what a user waits for.

    .venv/bin/python bench/image_bench.py                  # full: ~25 min on 2 cores
    .venv/bin/python bench/image_bench.py --quick          # smoke test: 2 epochs each
    .venv/bin/python bench/image_bench.py --skip-finetune --json out.json

Prints a header (machine, versions, date) and one Markdown table per dataset.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil

from _proc import tree_rss

ROOT = Path(__file__).resolve().parent.parent          # the project root (/work/main)
PEER = ROOT.parent / "shared" / "bench" / "seed_loop.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hymenoptera_data"
SEED = 42                                               # sftune's default; passed to both explicitly
POLL_S = 0.2
# torchvision's ImageFolder (the peer) only sees these; sftune also reads GIF, so the
# train sets can differ by a file or two. Validation sets are what accuracy is measured
# on, and are the same for both on the default data.
PEER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Row:
    system: str                      # "seed_loop" or "sftune"
    mode: str                        # peer --mode or sftune --strategy
    peer_mode: str                   # the peer row this one is compared with
    ok: bool = False
    wall_s: float = 0.0              # measured here, around the subprocess
    best_acc: float | None = None
    epochs: int = 0                  # epochs actually run (early stopping may cut sftune short)
    train_images: int = 0
    peak_rss_mib: float = 0.0
    to_peer_best_s: float | None = None
    to_best_note: str = "not reached"     # shown when to_peer_best_s is None
    speedup: float | None = None
    error: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    profile: dict[str, float] = field(default_factory=dict)  # sftune rows: `train --profile` seconds per stage
    load_avg: str = ""                                        # 1/5/15-min load average when the row finished


def run_measured(cmd: list[str], log: Path, extra_env: dict[str, str] | None = None) -> tuple[int, float, float, str]:
    """Run cmd; return (exit code, wall s, peak RSS MiB of the process tree, stdout).

    RSS is polled every POLL_S and summed over the process and all its descendants
    (DataLoader workers are separate processes). Shared pages are counted once per
    process, so this overstates true memory a little, the same way for both systems.
    Output goes to files, not pipes, so a chatty child can never block on a full pipe.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    print(f"  {log.stem} ...", file=sys.stderr, flush=True)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    with out_path.open("w") as out, err_path.open("w") as err:
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        peak = 0
        while proc.poll() is None:
            rss = tree_rss(proc)
            if rss is None:
                break
            peak = max(peak, rss)
            time.sleep(POLL_S)
        rc = proc.wait()
        wall = time.perf_counter() - t0
    if rc != 0:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
        print(f"  ! {' '.join(cmd[1:4])} ... exited {rc}:\n    " + "\n    ".join(tail), file=sys.stderr)
    return rc, wall, peak / 2**20, out_path.read_text(errors="replace")


def run_peer(data: Path, mode: str, quick: bool, work: Path) -> Row:
    row = Row("seed_loop", mode, mode)
    cmd = [sys.executable, str(PEER), "--data", str(data), "--mode", mode, "--seed", str(SEED)]
    if quick:
        cmd += ["--epochs", "2"]
    rc, row.wall_s, row.peak_rss_mib, stdout = run_measured(cmd, work / f"peer-{mode}.log")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if rc != 0 or not lines:
        row.error = f"exit {rc}"
        return row
    result = json.loads(lines[-1])
    row.ok, row.best_acc, row.epochs = True, result["best_val_acc"], result["epochs"]
    row.train_images = sum(1 for p in (data / "train").rglob("*")
                           if p.is_file() and p.suffix.lower() in PEER_EXTENSIONS)
    # The peer prints no per-epoch figures: its wall time is an upper bound on when it
    # first reached its best accuracy. Speed-ups are measured against this wall time.
    row.to_peer_best_s, row.speedup = row.wall_s, 1.0
    return row


def sftune_cmd() -> list[str]:
    """The installed `sftune` script next to this interpreter (what users run), else -m."""
    script = Path(sys.executable).parent / "sftune"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sftune"]


def run_sftune(data: Path, strategy: str, peer: Row, quick: bool, work: Path, warm: bool = False,
               extra: list[str] | None = None) -> Row:
    """One sftune run. Its feature cache starts empty (cold) unless ``warm``: then the
    previous run's cache for the same strategy is reused, as on a user's second run."""
    row = Row("sftune", strategy + (" (warm cache)" if warm else ""), peer.mode)
    out = work / (strategy + ("-warm" if warm else ""))
    cache = work / f"cache-{strategy}"
    if not warm:
        shutil.rmtree(cache, ignore_errors=True)
    cmd = [*sftune_cmd(), "train", "--data", str(data), "--strategy", strategy, "--seed", str(SEED),
           "--no-progress", "--json", "--profile", "--out", str(out), "--overwrite"]
    cmd += extra or []
    if quick:
        cmd += ["--epochs", "2"]
        if strategy == "freeze_unfreeze":
            # The default unfreeze_epoch (3) must be < epochs, so 2 epochs would be
            # rejected; unfreeze after 1 so the smoke test exercises both phases.
            cmd += ["--set", "strategy.unfreeze_epoch=1"]
    rc, row.wall_s, row.peak_rss_mib, stdout = run_measured(cmd, work / f"sftune-{out.name}.log", {"SFTUNE_CACHE": str(cache)})
    row.load_avg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if rc != 0 or not (out / "metrics.json").is_file():
        row.error = f"exit {rc}"
        return row
    try:
        row.profile = json.loads(stdout).get("profile") or {}
    except ValueError:
        row.profile = {}
    metrics = json.loads((out / "metrics.json").read_text())
    lineage = json.loads((out / "lineage.json").read_text())
    row.history = metrics.get("history", [])
    row.ok = True
    row.epochs = len(row.history)
    row.train_images = int(lineage["data"]["train_images"])
    accs = [h["val/acc"] for h in row.history if "val/acc" in h]
    row.best_acc = max(accs) if accs else metrics.get("acc")
    times = [h.get("time/elapsed_s") for h in row.history]
    if not peer.ok or peer.best_acc is None:
        row.to_best_note = "peer failed"
    elif metrics.get("epochs_run") == 0 and not row.history:
        # A head solved without epochs (linear_probe's L-BFGS): the whole run is the time to its accuracy.
        if round(float(metrics.get("acc", -1.0)), 4) >= peer.best_acc:
            row.to_peer_best_s, row.speedup = row.wall_s, peer.wall_s / row.wall_s
    elif not (times and all(t is not None for t in times)):
        row.to_best_note = "no time/elapsed_s in history"
    else:
        # elapsed_s counts from inside the engine; everything outside it (interpreter
        # start-up, imports, final bundle evaluation and writing) is charged as a fixed
        # overhead so the figure is end to end like the peer's wall time. Charging the
        # post-training evaluation too makes this conservative, never flattering.
        overhead = row.wall_s - times[-1]
        for h, t in zip(row.history, times):
            # The peer prints accuracy rounded to 4 places; compare at the same precision
            # (float32 144/153 = 0.94117647 must count as reaching the peer's 0.9412).
            if round(h.get("val/acc", -1.0), 4) >= peer.best_acc:
                row.to_peer_best_s = t + overhead
                row.speedup = peer.wall_s / row.to_peer_best_s
                break
    return row


THROUGHPUT_EPOCHS = 4  # both loops; epoch 0 (worker start-up, allocator warm-up) is left out of the mean


def run_plain(data: Path, quick: bool, work: Path) -> dict:
    """bench/plain_loop.py: the framework-free training-throughput baseline (batch 32, channels_last)."""
    cmd = [sys.executable, str(ROOT / "bench" / "plain_loop.py"), "--data", str(data), "--seed", str(SEED),
           "--epochs", "2" if quick else str(THROUGHPUT_EPOCHS)]
    rc, wall, rss, stdout = run_measured(cmd, work / "plain-loop.log")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    return {**json.loads(lines[-1]), "wall_s": wall, "peak_rss_mib": rss} if rc == 0 and lines else {"error": f"exit {rc}"}


def train_throughput(row: Row, epochs: int = THROUGHPUT_EPOCHS) -> float | None:
    """Images/s over training batches only (``time/train_s``) of epochs 1..epochs-1: the same
    epochs the plain loop averages (machine speed drifts over a long run, so compare like with like)."""
    times = [h["time/train_s"] for h in row.history if h.get("time/train_s")]
    steady = times[1:epochs] or times
    return row.train_images * len(steady) / sum(steady) if steady else None


def throughput_table(plain: dict, full: Row) -> str:
    ours = train_throughput(full) if full.ok else None
    lines = ["| loop (full fine-tune, batch 32, channels_last) | training images/s | ratio |", "|---|---|---|"]
    base = plain.get("train_img_s")
    lines.append(f"| plain PyTorch loop (bench/plain_loop.py) | {base if base else plain.get('error')} | 1.00x |")
    ratio = f"{ours / base:.2f}x" if ours and base else "—"
    lines.append(f"| sftune full (Lightning engine) | {ours:.1f} | {ratio} |" if ours else "| sftune full | — | — |")
    return "\n".join(lines)


def bench_dataset(data: Path, args: argparse.Namespace, work: Path) -> list[Row]:
    work.mkdir(parents=True, exist_ok=True)
    print(f"running on {data} (logs in {work}) ...", file=sys.stderr, flush=True)
    if args.throughput_only:
        args.plain = run_plain(data, args.quick, work)
        return [run_sftune(data, "full", Row("seed_loop", "finetune", "finetune"), args.quick, work,
                           extra=["--epochs", str(THROUGHPUT_EPOCHS), "--patience", "0"])]
    frozen = run_peer(data, "frozen", args.quick, work)
    rows = [frozen, run_sftune(data, "linear_probe", frozen, args.quick, work),
            run_sftune(data, "linear_probe", frozen, args.quick, work, warm=True)]
    if not args.skip_finetune:
        finetune = run_peer(data, "finetune", args.quick, work)
        rows += [finetune] + [run_sftune(data, s, finetune, args.quick, work)
                              for s in ("freeze_unfreeze", "full")]
        args.plain = run_plain(data, args.quick, work)
    return rows


def profile_table(rows: list[Row]) -> str:
    """Where each sftune row's seconds went (``sftune train --profile``), stages as rows."""
    rows = [r for r in rows if r.system == "sftune" and r.ok and r.profile]
    if not rows:
        return ""
    stages = list(dict.fromkeys(k for r in rows for k in r.profile))
    lines = ["| stage (s) | " + " | ".join(r.mode for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(f"{r.profile[stage]:.2f}" if stage in r.profile else "—" for r in rows) + " |")
    lines.append("| sum of stages | " + " | ".join(f"{sum(r.profile.values()):.2f}" for r in rows) + " |")
    lines.append("| wall around the process | " + " | ".join(f"{r.wall_s:.2f}" for r in rows) + " |")
    lines.append("| load average (1/5/15 min) at the end | " + " | ".join(r.load_avg for r in rows) + " |")
    return "\n".join(lines)


def table(rows: list[Row]) -> str:
    head = ["system", "mode", "wall (s)", "best val acc", "time to peer's best (s)",
            "speed-up vs peer", "peak RSS (MiB)", "images/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mode = r.mode if r.system == "sftune" else f"--mode {r.mode}"
        if not r.ok:
            lines.append(f"| {r.system} | {mode} | {r.wall_s:.1f} | failed ({r.error}) | | | {r.peak_rss_mib:.0f} | |")
            continue
        if r.system == "seed_loop":
            to_best = f"≤ {r.to_peer_best_s:.1f} (upper bound)"
            speed = "1.00x (reference)"
        elif r.to_peer_best_s is None:
            to_best, speed = r.to_best_note, "—"
        else:
            to_best, speed = f"{r.to_peer_best_s:.1f}", f"{r.speedup:.2f}x"
        ips = r.train_images * r.epochs / r.wall_s
        lines.append(f"| {r.system} | {mode} | {r.wall_s:.1f} | {r.best_acc:.1%} | {to_best} | {speed} "
                     f"| {r.peak_rss_mib:.0f} | {ips:.1f} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch  # only here: the header needs the GPU name, the runs are subprocesses

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "missing"

    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram_gib": f"{psutil.virtual_memory().total / 2**30:.1f}",
            "gpu": gpu, "torch": ver("torch"), "timm": ver("timm"), "lightning": ver("lightning"),
            "sftune": ver("sftune"), "python": platform.python_version(),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append",
                    help=f"train/ + val/ image folder; repeat for several tables [{DEFAULT_DATA}]")
    ap.add_argument("--quick", action="store_true", help="2 epochs everywhere (smoke test)")
    ap.add_argument("--skip-finetune", action="store_true", help="only peer frozen vs sftune linear_probe")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the training-throughput table (plain loop vs sftune full, 4 epochs each)")
    ap.add_argument("--runs-dir", type=Path, help="keep bundles and logs here [a temp dir, deleted]")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args()
    datasets = [(d if d.is_absolute() else Path.cwd() / d).resolve() for d in (args.data or [DEFAULT_DATA])]
    for d in datasets:
        if not (d / "train").is_dir() or not (d / "val").is_dir():
            ap.error(f"{d} needs train/ and val/ subfolders (the peer only reads the ImageFolder layout)")

    info = machine()
    print(f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, GPU: {info['gpu']}  ")
    print(f"torch {info['torch']}, timm {info['timm']}, lightning {info['lightning']}, sftune {info['sftune']}, "
          f"Python {info['python']}; {info['date']}; seed {SEED}{'; --quick (2 epochs)' if args.quick else ''}\n")

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="sftune-bench-"))
    results: dict[str, list[dict]] = {}
    failed = False
    try:
        for i, data in enumerate(datasets):
            rows = bench_dataset(data, args, runs_dir.resolve() / f"{i}-{data.name}")
            failed |= not all(r.ok for r in rows)
            if not args.throughput_only:
                print(f"### {data.name}\n\n{table(rows)}\n", flush=True)
                if breakdown := profile_table(rows):
                    print(f"{breakdown}\n", flush=True)
            results[str(data)] = [asdict(r) for r in rows]
            full = next((r for r in rows if r.mode == "full"), None)
            if full is not None and getattr(args, "plain", None):
                print(f"{throughput_table(args.plain, full)}\n", flush=True)
                results[str(data) + " throughput"] = [args.plain, {"sftune_full_train_img_s": train_throughput(full)}]
    finally:
        if args.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "quick": args.quick, "seed": SEED,
                                         "datasets": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
