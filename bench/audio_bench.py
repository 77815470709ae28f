"""Benchmark: sftune audio classification vs the hand-written log-mel CNN loop (the reference peer).

Runs, one after the other on this machine, for each split: (1) the peer
``../shared/bench/audio_peer.py`` (log-mel 64x101 resized to 128x128, timm
tf_efficientnet_lite0 from the offline ImageNet weights, AdamW 1e-3, cosine, batch 32, every
layer trains) and (2) ``sftune train`` with sftune's *defaults* for audio: only ``--data``, the
file-name options that say where labels and the split come from, ``--epochs N``, ``--out`` (a
temp dir) and ``--no-progress``, plus whatever ``--sftune-args`` adds. Same data, same epoch
budget, same backbone weights, ``HF_HUB_OFFLINE=1``; each process is timed from outside
(interpreter start-up and imports included).

Splits of the Free Spoken Digit Dataset (3,000 clips, 6 speakers, 8 kHz):
  official  recordings 0-4 of every digit and speaker are the test set (300 clips, the same
            speakers as training: speaker-dependent). sftune: ``data.val_pattern='_[0-4]\\.wav$'``.
  speaker   every clip of one speaker (``--holdout``, default theo: 500 clips) is the test set.
            sftune: ``data.val_pattern='_theo_'`` (the same speaker as the peer, so the numbers
            compare; ``data.group_pattern`` alone would pick the held-out speaker by seed).

    .venv/bin/python bench/audio_bench.py                       # 5 epochs each, both splits
    .venv/bin/python bench/audio_bench.py --epochs 2 --splits official
      [--data DIR] [--sftune-args "..."] [--peer-args "..."] [--json out.json] [--threads N]
    .venv/bin/python bench/audio_bench.py --table-from out.json --epochs 2   # the table of a saved run
    .venv/bin/python bench/audio_bench.py --peer-rows out.json ...           # sftune rows only, peer reused

Columns:
  acc [95% CI]: the last epoch's test accuracy (both sides evaluate the final weights on the
    test clips; sftune's early stopping never triggers within these budgets), with a percentile
    bootstrap interval (2,000 resamples of the per-clip right/wrong outcomes, the same code for
    both sides).
  wall: around the subprocess, start-up to exit.
  time to peer's best: from process start to the end of the first epoch whose test accuracy is
    >= the peer's best (sftune: its epoch's ``time/elapsed_s`` + start-up; peer: start-up +
    cumulative ``epoch_s``); "-" when never reached.
  / peer wall: that time divided by the peer's wall. Goal: <= 0.50 at >= the peer's accuracy.
  load: os.getloadavg() 1-minute value before -> after the row (the machine is shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER = HERE.parents[1] / "shared" / "bench" / "audio_peer.py"
DATA = HERE.parents[1] / "shared" / "data" / "free-spoken-digit-dataset"
LABEL = r"^(\d+)_"
GROUP = r"^\d+_([a-z]+)_"


def bootstrap(acc: float, n: int, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the accuracy of ``n`` right/wrong outcomes with rate ``acc``."""
    right = round(acc * n)
    outcomes = [1] * right + [0] * (n - right)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(outcomes, k=n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def run_timed(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return done, time.perf_counter() - started


def peer_row(split: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    cmd = [sys.executable, str(PEER), "--data", str(args.data), "--split", split, "--holdout", args.holdout,
           "--epochs", str(args.epochs), *shlex.split(args.peer_args)]
    load = os.getloadavg()[0]
    done, wall = run_timed(cmd, env)
    if done.returncode != 0:
        raise SystemExit(f"peer failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    epochs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{\"epoch\"")]
    startup = wall - sum(e["epoch_s"] for e in epochs)
    ends, t = [], startup
    for e in epochs:
        t += e["epoch_s"]
        ends.append((e["test_acc"], t))
    return {"side": "peer", "split": split, "acc": result["test_acc"], "best": result["best_test_acc"],
            "n": result["test_clips"], "wall": wall, "epoch_ends": ends, "load": (load, os.getloadavg()[0])}


def sftune_row(split: str, extra: str, args: argparse.Namespace, env: dict[str, str], runs: Path) -> dict:
    val = r"_[0-4]\.wav$" if split == "official" else f"_{args.holdout}_"
    out = runs / f"sftune-{split}-{len(list(runs.iterdir()))}"
    cmd = [sys.executable, "-m", "sftune.cli.main", "train", "--data", str(args.data / "recordings"),
           "--set", f"data.label_pattern={LABEL}", "--set", f"data.group_pattern={GROUP}",
           "--set", f"data.val_pattern={val}", "--epochs", str(args.epochs), "--out", str(out), "--no-progress",
           *shlex.split(extra)]
    load = os.getloadavg()[0]
    done, wall = run_timed(cmd, env)
    if done.returncode != 0:
        raise SystemExit(f"sftune failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    startup = wall - metrics["seconds"]
    ends = [(row.get("val/acc"), startup + row.get("time/elapsed_s", 0.0)) for row in metrics["history"]]
    return {"side": "sftune" + (f" {extra}" if extra else ""), "split": split, "acc": metrics["acc"],
            "best": max(a for a, _ in ends), "n": metrics["n"], "wall": wall, "epoch_ends": ends,
            "strategy": metrics.get("strategy"), "load": (load, os.getloadavg()[0])}


def time_to(target: float, ends: list[tuple[float, float]]) -> float | None:
    return next((t for acc, t in ends if acc is not None and round(acc, 4) >= round(target, 4)), None)


def _load(load: list[float] | None) -> str:
    return f"{load[0]:.1f} -> {load[1]:.1f}" if load else "?"


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """The markdown table of ``rows`` (each split's rows after its peer row)."""
    print(f"FSDD, {args.epochs} epochs each side, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)")
    print("| split | side | acc [95% CI] | wall s | time to peer's best s | / peer wall | load |")
    print("|---|---|---|---|---|---|---|")
    for split in dict.fromkeys(r["split"] for r in rows):
        peer = next(r for r in rows if r["split"] == split and r["side"] == "peer")
        for r in (x for x in rows if x["split"] == split):
            lo, hi = bootstrap(r["acc"], r["n"])
            reach = time_to(peer["best"], r["epoch_ends"])
            ratio = f"{reach / peer['wall']:.2f}" if reach else "-"
            print(f"| {split} | {r['side']} | {r['acc']:.3f} [{lo:.3f}, {hi:.3f}] | {r['wall']:.0f} | "
                  f"{f'{reach:.0f}' if reach else '-'} | {ratio} | {_load(r.get('load'))} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--splits", default="official,speaker")
    ap.add_argument("--holdout", default="theo")
    ap.add_argument("--sftune-args", action="append", default=None)
    ap.add_argument("--peer-args", default="")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both sides (default: unset)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--peer-rows", type=Path, help="reuse the peer rows of a JSON file an earlier run wrote")
    ap.add_argument("--table-from", type=Path, help="only print the table of a JSON file an earlier run wrote")
    args = ap.parse_args()
    if args.table_from:
        print_table(json.loads(args.table_from.read_text()), args)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    src = HERE.parent / "src"
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    reused = json.loads(args.peer_rows.read_text()) if args.peer_rows else []
    reused = [r for r in reused if r["side"] == "peer"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="audio-bench-") as tmp:
        for split in args.splits.split(","):
            stored = [r for r in reused if r["split"] == split]
            peer = stored[0] if stored else peer_row(split, args, env)
            rows.append(peer)
            print(f"# {split}: peer acc {peer['acc']:.4f} in {peer['wall']:.0f} s", file=sys.stderr, flush=True)
            if args.json:  # written after every row: a run stopped early keeps what it measured
                args.json.write_text(json.dumps(rows, indent=2))
            for extra in args.sftune_args or [""]:
                row = sftune_row(split, extra, args, env, Path(tmp))
                rows.append(row)
                print(f"# {split}: {row['side']} acc {row['acc']:.4f} in {row['wall']:.0f} s", file=sys.stderr, flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=2))
    print_table(rows, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
