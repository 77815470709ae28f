"""2-process DDP on CPU (gloo) gives the same result as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SFTUNE = [sys.executable, "-m", "sftune"]


def train(data: Path, out: Path, *extra: str) -> dict:
    cmd = [*SFTUNE, "train", "--data", str(data), "--model", "efficientnet_lite0", "--strategy", "linear_probe",
           "--set", "strategy.solver=sgd",  # the SGD head's loop is what DDP shards (L-BFGS runs in one process)
           "--image-size", "64", "--epochs", "3", "--lr", "0.01", "--workers", "0", "--no-progress",
           "--accelerator", "cpu", "--out", str(out), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(digits_split_dir, tmp_path):
    single = train(digits_split_dir, tmp_path / "single", "--devices", "1", "--batch-size", "32")
    ddp = train(digits_split_dir, tmp_path / "ddp", "--devices", "2", "--distributed", "ddp", "--batch-size", "16")
    # Same global batch (2 x 16 = 32) and a frozen backbone: only the shuffling order differs.
    assert single["acc"] > 0.8 and ddp["acc"] > 0.8, (single["acc"], ddp["acc"])
    assert abs(single["acc"] - ddp["acc"]) <= 0.1  # 3 of 30 val images
    assert abs(single["loss"] - ddp["loss"]) <= 0.15
    assert len(ddp["history"]) == 3
    assert not list(tmp_path.glob(".ddp*")), "no partial folder or lock left behind"
