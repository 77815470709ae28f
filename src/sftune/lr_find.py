"""``sftune lr-find``: the learning-rate range test (Smith 2017) with Lightning's Tuner.

The LR grows exponentially from ``min_lr`` to ``max_lr`` over ``steps`` optimizer
steps on the run's own model, strategy and data; the suggested LR is where the
(smoothed) loss falls fastest. Every group that trains at epoch 0 moves at the
same LR during the test (Lightning sets them all), so for strategies that scale
groups (llrd, full's backbone_lr_scale) the suggestion is the head LR: pass it as
train.lr and the strategy scales the other groups from it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import lightning as L

from .config import RunConfig, StrategyConfig, resolve_task
from .data.datamodule import default_workers
from .errors import SftuneError
from .precision import subnormals_flushed
from .strategies import create_strategy
from .strategies.auto import Automatic


@dataclass
class LrFindResult:
    suggestion: float | None
    lrs: list[float]
    losses: list[float]
    plot: Path | None
    strategy: str


def find_lr(config: RunConfig, plot: str | Path | None = "lr_find.png", min_lr: float = 1e-6, max_lr: float = 1.0,
            steps: int = 100, log: Callable[[str], None] = print) -> LrFindResult:
    from lightning.pytorch.tuner import Tuner

    from .engine import _budgeted_strategy, _choose_strategy, _make_trainer, _quiet_lightning, _refuse, training_inputs
    from .tasks import create_task

    if not config.data.path:
        raise SftuneError("no training data: pass --data DIR (or set data.path in the config)")
    if not 0 < min_lr < max_lr:
        raise SftuneError(f"--min-lr ({min_lr:g}) must be positive and below --max-lr ({max_lr:g})")
    config = resolve_task(config)
    task = create_task(config.task.name, config.task.options())
    strategy = _budgeted_strategy(config, log)
    _refuse(task, strategy)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    workers = default_workers() if config.data.num_workers is None else config.data.num_workers
    pipeline = task.pipeline(config, workers, log)
    pipeline.load()
    if isinstance(strategy, Automatic):
        choice, _ = _choose_strategy(strategy, task, pipeline, log)
        strategy = create_strategy(StrategyConfig(name=choice.strategy, **choice.options))
        _refuse(task, strategy)
    module = task.module(pipeline, strategy, config)
    module.stop_on_nonfinite_loss = False
    datamodule = training_inputs(task, module, pipeline, config)
    log(f"lr-find: {strategy.name} on {pipeline.describe()}; LR {min_lr:g} -> {max_lr:g} over {steps} steps")

    with tempfile.TemporaryDirectory(prefix="sftune-lr-find-") as tmp, _quiet_lightning():
        # Enough epochs for `steps` optimizer steps however small the data is.
        epochs = max(1, -(-steps // max(1, len(datamodule.train_dataloader()))))
        longer = config.model_copy(update={"train": config.train.model_copy(update={"epochs": epochs})})
        trainer = _make_trainer(longer, 0, [], False, root_dir=tmp,  # its temporary checkpoint goes to tmp
                                convolutional=pipeline.convolutional)
        with _progress_bar(config.trainer.progress_bar), subnormals_flushed():
            finder = Tuner(trainer).lr_find(module, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr,
                                            num_training=steps, update_attr=False)
    if finder is None:
        raise SftuneError("lr-find: the range test did not run (no training batches?)")
    suggestion = finder.suggestion()
    written = _save_plot(finder, Path(plot)) if plot else None
    return LrFindResult(suggestion, [float(x) for x in finder.results["lr"]], [float(x) for x in finder.results["loss"]],
                        written, strategy.name)


def _save_plot(finder, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    fig = finder.plot(suggest=True)
    ax = fig.axes[0]
    suggestion = finder.suggestion()
    ax.set_title(f"LR range test — suggested lr {suggestion:.2g}" if suggestion else "LR range test")
    ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[None]:
    """Lightning's range test always draws its own tqdm bar (progress_bar_refresh_rate=1 is
    hard-coded); with the progress bar off, that tqdm is swapped for a disabled one."""
    if enabled:
        yield
        return
    from lightning.pytorch.tuner import lr_finder

    original = lr_finder.tqdm
    lr_finder.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        lr_finder.tqdm = original
