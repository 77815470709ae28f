"""What keeps a long run's work when something goes wrong during training.

* checkpoints are written to a temporary file, fsynced and renamed (``kill -9`` mid-write
  leaves the previous ``last.ckpt``, never half a file);
* an epoch whose weights went non-finite is never checkpointed (the last good one stays);
* an accelerator out-of-memory error halves the per-step batch, doubles gradient
  accumulation (same effective batch) and continues from the last checkpoint;
* Ctrl-C / SIGINT stops at once with the last epoch's checkpoint on disk and a
  ``--resume`` hint, instead of Lightning's ``sys.exit(1)``.

Resuming restarts the interrupted epoch from the last end-of-epoch checkpoint; the
samplers and augmentations are seeded per (seed, epoch, index) (data/datamodule.py),
so the redone epoch is the one the uninterrupted run would have trained.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from .errors import SftuneError


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the checkpoint is and how to continue."""


class _Stop(Exception):
    # Raised from the SIGINT handler instead of KeyboardInterrupt: Lightning turns a
    # KeyboardInterrupt into sys.exit(1), which would end a notebook or a calling program.
    pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file in the same folder, fsync, then rename over the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class FiniteWeights(L.Callback):
    """Refuse to end an epoch (and so to checkpoint it) with NaN/inf weights.

    The loss check in the training step catches most blow-ups; this catches the last
    optimizer step of an epoch, whose bad weights would otherwise be saved as last.ckpt.
    Checkpoint callbacks run after all others, so this check comes first."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bad = next((n for n, p in pl_module.named_parameters() if p.requires_grad and not torch.isfinite(p).all()), None)
        if bad is not None:
            raise SftuneError(f"weight '{bad}' became NaN/inf at epoch {trainer.current_epoch}; "
                              f"lower train.lr or use precision 32-true")


def check_resume_checkpoint(path: Path) -> None:
    """Load ``last.ckpt`` once, safely, before Lightning does: a damaged or pickled-code file
    becomes one clear line instead of a traceback from deep inside the Trainer."""
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": noise before our one-line error
            warnings.simplefilter("ignore")
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SftuneError(
            f"cannot resume from {path}: not a readable sftune checkpoint, or one that would run pickled code "
            f"({type(e).__name__}: {first}); delete {path.parent.parent} to start over"
        ) from None


@contextlib.contextmanager
def sigint_stops_training() -> Iterator[None]:
    """While training, the first SIGINT raises :class:`_Stop` (the second one: the default)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; elsewhere Lightning's handling stays
        return
    previous = signal.getsignal(signal.SIGINT)

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, previous)
        raise _Stop()

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(trainer: L.Trainer, rebuild: Callable[[], L.Trainer], task: L.LightningModule, datamodule: Any,
        last_checkpoint: Path, resume: bool, log: Callable[[str], None]) -> L.Trainer:
    """``trainer.fit`` that survives accelerator OOM (smaller steps, same effective batch) and
    turns SIGINT into :class:`RunInterrupted`. Returns the trainer that finished."""
    if resume:
        check_resume_checkpoint(last_checkpoint)
    # Restarting before the first checkpoint needs the starting weights (after any LP-FT probe).
    start = None if resume else {k: v.detach().to("cpu", copy=True) for k, v in task.state_dict().items()}
    ckpt_path = last_checkpoint if resume else None
    while True:
        try:
            with sigint_stops_training():
                trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            return trainer
        except _Stop:
            kept = (f"the checkpoint of the last finished epoch is kept in {last_checkpoint}; continue with "
                    f"--resume" if last_checkpoint.is_file() else "no epoch had finished, so there is nothing to resume")
            raise RunInterrupted(f"interrupted; {kept}") from None
        except torch.OutOfMemoryError:
            batch, accumulate = datamodule.batch_size, trainer.accumulate_grad_batches
            if batch <= 1:
                raise SftuneError("out of accelerator memory even at batch size 1; use a smaller --image-size / "
                                  "--max-length, a smaller model, precision bf16-mixed, or strategy lora") from None
            effective = batch * accumulate
            datamodule.batch_size, steps = _halved(batch, effective)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if last_checkpoint.is_file():
                ckpt_path = last_checkpoint
            else:
                task.load_state_dict(start)  # type: ignore[arg-type]  # (start is None only when resuming)
            where = f"continuing from {last_checkpoint.name}" if ckpt_path else "restarting from the first epoch"
            log(f"warning: out of accelerator memory at batch {batch}; now {datamodule.batch_size} per step x {steps} "
                f"accumulated (effective batch {effective} kept), {where}")
            trainer = rebuild()
            trainer.accumulate_grad_batches = steps
        except SftuneError as e:
            if last_checkpoint.is_file():  # say what survived: the run can be inspected or resumed with changes
                raise SftuneError(f"{e}; training stopped, the last good checkpoint is kept: {last_checkpoint}") from None
            raise


def _halved(batch: int, effective: int) -> tuple[int, int]:
    """Half the per-step batch (at least 1) and the accumulation steps that keep ``effective``."""
    fits = max(1, batch // 2)
    steps = math.ceil(effective / fits)
    return math.ceil(effective / steps), steps
