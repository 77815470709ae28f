"""Faults during training: NaN/inf, accelerator out-of-memory (simulated on CPU), SIGINT, and a real
``kill -9`` mid-epoch followed by --resume, which must end with the uninterrupted run's exact metrics."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import tiny_run, with_callbacks, write_digits
from sftune import bundle as B
from sftune.errors import SftuneError
from sftune.tasks import Classifier

from .conftest import assert_clear_error, cli_run, sftune_subprocess, train_args


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("faults") / "digits", per_class=12)  # 30 train / 6 val


def _finite_checkpoint(path: Path) -> int:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    return int(ckpt["epoch"])


class _Poison(L.Callback):
    """Sets a head weight to NaN at the start of ``epoch`` (or after its last batch)."""

    def __init__(self, epoch: int, at_end: bool = False) -> None:
        self.epoch, self.at_end = epoch, at_end

    def _poison(self, pl_module) -> None:
        with torch.no_grad():
            pl_module.head.fc.weight[0, 0] = float("nan")

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and not self.at_end:
            self._poison(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and self.at_end and batch_idx == trainer.num_training_batches - 1:
            self._poison(pl_module)


@pytest.mark.parametrize("at_end", [False, True], ids=["nan-loss", "nan-weights-at-epoch-end"])
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(at_end, digits, tmp_path, monkeypatch, one_thread,
                                                               bad_input):
    with_callbacks(monkeypatch, _Poison(epoch=1, at_end=at_end))
    out = tmp_path / "run"
    result = cli_run(*train_args(digits, out, "--strategy", "full", "--epochs", "3"))
    last = B.partial_dir(out.absolute()) / "checkpoints" / "last.ckpt"
    needles = ["training loss became nan at epoch 1, step 0"] if not at_end else ["became NaN/inf at epoch 1"]
    assert_clear_error(result, *needles, "lower train.lr", f"the last good checkpoint is kept: {last}")
    assert not out.exists()
    assert _finite_checkpoint(last) == 0  # epoch 0's weights, not the poisoned ones
    bad_input("NaN loss" if not at_end else "NaN weights after an epoch's last step", "clear error")


def _oom_once_at(epoch: int, monkeypatch) -> list[tuple[int, int]]:
    """training_step raises torch.OutOfMemoryError once, at the first step of ``epoch``; returns
    the (per-step batch, accumulation) seen at every later step."""
    original = Classifier.training_step
    seen: list[tuple[int, int]] = []
    state = {"raised": False}

    def step(self, batch, batch_idx):
        if self.current_epoch == epoch and not state["raised"]:
            state["raised"] = True
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        if state["raised"]:
            seen.append((len(batch[1]), self.trainer.accumulate_grad_batches))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", step)
    return seen


@pytest.mark.parametrize("epoch", [0, 1], ids=["before-any-checkpoint", "after-a-checkpoint"])
def test_out_of_memory_halves_the_batch_and_keeps_the_effective_batch(epoch, digits, tmp_path, monkeypatch, one_thread,
                                                                      capsys, bad_input):
    seen = _oom_once_at(epoch, monkeypatch)
    result = tiny_run(digits, tmp_path / "run", strategy="full", train__epochs=3, train__patience=0,
                      train__batch_size=16)
    assert result.metrics["epochs_run"] == 3 and [h["epoch"] for h in result.metrics["history"]] == [0, 1, 2]
    assert seen and {acc for _, acc in seen} == {2} and max(b for b, _ in seen) == 8  # 8 x 2 = the old 16
    where = "restarting from the first epoch" if epoch == 0 else "continuing from last.ckpt"
    printed = capsys.readouterr().out
    assert (f"warning: out of accelerator memory at batch 16; now 8 per step x 2 accumulated (effective batch 16 kept), "
            f"{where}") in printed, printed
    bad_input(f"out-of-memory at epoch {epoch}", "handled")


def test_out_of_memory_at_batch_one_stops_clearly(digits, tmp_path, monkeypatch, one_thread, bad_input):
    def step(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(Classifier, "training_step", step)
    with pytest.raises(SftuneError, match="out of accelerator memory even at batch size 1; use a smaller"):
        tiny_run(digits, tmp_path / "run", strategy="full", train__epochs=2, train__batch_size=4)
    assert not (tmp_path / "run").exists()
    bad_input("out-of-memory at every batch size", "clear error")


# ------------------------------------------------------------------- real signals


def _wait_for(predicate, proc, timeout: float = 300.0) -> None:  # a bound on hangs, not a speed test
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _mid_epoch(last: Path, proc, epochs_done: int) -> None:
    """Wait until ``epochs_done`` epochs are checkpointed, then half an epoch more."""
    stamps: list[float] = []
    while len(stamps) < epochs_done:
        previous = _mtime(last)
        _wait_for(lambda: _mtime(last) != previous, proc)
        stamps.append(time.monotonic())
    epoch_seconds = (stamps[-1] - stamps[-2]) if len(stamps) > 1 else 0.5
    time.sleep(epoch_seconds / 2)
    assert proc.poll() is None


def test_sigint_then_kill_9_then_resume_match_the_uninterrupted_run(tmp_path, bad_input):
    data = write_digits(tmp_path / "digits", per_class=60)  # 144 train / 36 val; ~1 s per epoch at 64 px
    # Default DataLoader workers (2 here): they prefetch the first batches before Lightning sets the
    # sampler's epoch, and that is where a resumed run used to take the previous epoch's order.
    common = ["--data", data, "--model", "timm:test_efficientnet", "--set", "model.pretrained=false",
              "--image-size", "64", "--batch-size", "4", "--no-progress", "--accelerator", "cpu",
              "--strategy", "full", "--epochs", "4", "--patience", "0", "--seed", "7",
              "--set", "trainer.deterministic=true", "--json"]
    reference = sftune_subprocess("train", *common, "--out", tmp_path / "reference")
    out = tmp_path / "crashy"
    last = B.partial_dir(out) / "checkpoints" / "last.ckpt"

    # 1. SIGINT in the middle of epoch 1: exit 130, one message, no traceback, epoch 0 kept.
    run = sftune_subprocess("train", *common, "--out", out)
    _mid_epoch(last, run, epochs_done=1)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert f"interrupted; the checkpoint of the last finished epoch is kept in {last}; continue with --resume" in stderr
    assert _finite_checkpoint(last) == 0 and not out.exists()
    bad_input("SIGINT mid-epoch", "handled")

    # 2. --resume, then kill -9 in the middle of epoch 3.
    run = sftune_subprocess("train", "--out", out, "--resume", "--no-progress", "--json")
    _mid_epoch(last, run, epochs_done=2)  # epochs 1 and 2 checkpointed by this process
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    assert _finite_checkpoint(last) == 2 and not out.exists()
    bad_input("kill -9 mid-epoch", "handled")

    # 3. --resume to the end: the same metrics as the run that was never interrupted.
    run = sftune_subprocess("train", "--out", out, "--resume", "--no-progress", "--json")
    stdout, stderr = run.communicate(timeout=180)
    assert run.returncode == 0, stderr[-3000:]
    ref_stdout, ref_stderr = reference.communicate(timeout=180)
    assert reference.returncode == 0, ref_stderr[-3000:]

    resumed = json.loads((out / "metrics.json").read_text())
    uninterrupted = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    keys = ("acc", "precision", "recall", "f1", "loss", "best_epoch", "epochs_run")
    report = {k: (uninterrupted[k], resumed[k]) for k in keys}
    print("resume comparison (uninterrupted, interrupted twice):", json.dumps(report))
    for k in keys:
        assert resumed[k] == uninterrupted[k], (k, report)
    val = lambda m: [{k: v for k, v in h.items() if k.startswith("val/")} for h in m["history"]]  # noqa: E731
    assert val(resumed) == val(uninterrupted)  # every epoch's validation metrics, bit for bit
    if os.environ.get("SFTUNE_RESUME_REPORT"):
        Path(os.environ["SFTUNE_RESUME_REPORT"]).write_text(json.dumps(report))
