"""The main path, top to bottom: config -> data -> backbone + head -> strategy ->
Lightning Trainer -> bundle. ``sftune train`` and :func:`sftune.finetune` both
end up in :func:`run_training`.
"""

from __future__ import annotations

import csv
import logging
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar, WeightAveraging
from lightning.pytorch.loggers import CSVLogger

from . import __version__
from . import bundle as B
from .config import RunConfig, StrategyConfig, dump_yaml, load_yaml, resolve_task, validate
from .precision import inference_bf16, subnormals_flushed, training_precision
from .profiling import Stages
from . import resilience
from .data import FeatureData
from .data.datamodule import default_workers
from .errors import SftuneError
from .pipelines import Pipeline
from .strategies import Strategy, create_strategy
from .strategies.auto import Automatic, Choice
from .strategies.linear_probe import LinearProbe
from .strategies.probe import ProbeFit
from .tasks import Task, TaskModule, create_task

# Settings that may change when continuing a run; anything else must match the saved config.
RESUMABLE_CHANGES = ("train.epochs", "train.patience", "trainer.")


@dataclass
class RunResult:
    path: Path
    metrics: dict[str, Any]
    config: RunConfig
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[tuple[str, str]] = field(default_factory=list)  # train/val leakage, label mix-ups (data/checks.py)
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per stage of the run (profiling.py)


def run_training(
    config: RunConfig,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    with subnormals_flushed():  # see sftune/precision.py: up to 100x faster steps on x86 CPUs
        return _run_training(config, out, resume, overwrite, log)


def _run_training(config: RunConfig, out: str | Path, resume: bool, overwrite: bool,
                  log: Callable[[str], None]) -> RunResult:
    started = time.time()
    stage = Stages()  # wall seconds per stage: RunResult.stages, `sftune train --profile`
    if B.global_rank() != 0:
        log = _silent  # every process of a distributed run executes this; one of them talks
    if resume:
        config = _resumed_config(Path(out), config)
    config = resolve_task(config)  # task and default model from the model name / data
    if not config.data.path:
        raise SftuneError("no training data: pass --data DIR (or set data.path in the config)")

    # 1. Everything that can be wrong with the input is checked before any real work starts:
    #    the task and strategy options, the output folder (claimed and locked), the data, the model name.
    stage_started = time.perf_counter()
    task = create_task(config.task.name, config.task.options())
    monitor, monitor_mode = task.monitor_of(config)
    strategy = _budgeted_strategy(config, log)
    _refuse(task, strategy)
    run = B.RunFolder.open(out, resume=resume, overwrite=overwrite)  # a work folder renamed into place at the end
    stage.add("config, task, strategy, run folder", time.perf_counter() - stage_started)
    try:
        L.seed_everything(config.train.seed, workers=True, verbose=False)
        workers = default_workers() if config.data.num_workers is None else config.data.num_workers
        pipeline = task.pipeline(config, workers, log)  # the task's data and backbone, batches and caches
        with stage("data scan, split, decode cache, backbone"):
            pipeline.load()
        data, backbone = pipeline.data, pipeline.backbone
        choice = auto_probe = None
        if isinstance(strategy, Automatic):  # resolved here, so config.yaml (and --resume) hold the chosen strategy
            with stage("auto: probe"):
                choice, auto_probe = _choose_strategy(strategy, task, pipeline, log, stage)
            config.strategy = StrategyConfig(name=choice.strategy, **choice.options)
            strategy = _budgeted_strategy(config, log)
            _refuse(task, strategy)
        if run.is_writer and not resume:
            B.atomic_write_text(run.work / B.CONFIG, dump_yaml(config))

        # 2. Model, then what it trains on: cached features when the backbone never trains, raw inputs otherwise.
        module = task.module(pipeline, strategy, config)
        from_parent = not resume and task.start_from_parent(module, config, pipeline)
        if from_parent:
            log("head: starts from the parent bundle's head (same classes), so the model begins where the parent was")
        total = sum(p.numel() for p in module.parameters())
        log(
            f"data: {pipeline.describe()} | model: {config.model.name} ({backbone.arch}) | "
            f"strategy: {strategy.name}, {module.trainable_parameters():,} of {total:,} parameters train, lr {module.lr:g}"
        )
        probe = None
        if strategy.probes_head and not resume:  # LP-FT: the head starts fitted to the frozen features
            with stage("feature pass (frozen backbone)"):
                features = pipeline.features()
            with stage("head fit (L-BFGS probe)"):
                probe = _probe_head(strategy, module, features, log, from_parent)
        start_weights = _start_weights(module, run, resume) if strategy.keeps_start_weights else None
        with stage("feature pass (frozen backbone)" if _trains_on_features(task, module, config) else "data loaders"):
            datamodule = training_inputs(task, module, pipeline, config)

        # 3. Training. linear_probe's default solver fits the head to convergence on the cached features
        #    (strategies/probe.py): no loop, nothing to checkpoint. Otherwise Lightning does the loop (_train).
        solved = strategy.solves_head() and module.inputs_are_features and module.linear_head() is not None
        if strategy.solves_head() and not solved:
            log(f"{strategy.name}: this task's head is not one linear layer on cached features here; "
                f"it trains for {config.train.epochs} epochs with the optimizer instead")
        if solved:
            side_loggers = _loggers(config, run)  # CSV, and TensorBoard/MLflow if on: a bad setting fails before the fit
            _check_trainer_settings(config)  # no Trainer runs, yet a bad --devices/--accelerator still fails
            with stage("head fit (L-BFGS)"):
                probe = _solve_head(strategy, module, datamodule, auto_probe, log, from_parent)
            if not run.is_writer:
                return RunResult(run.final, {}, config)
            best_epoch = epochs_run = 0
            history: list[dict[str, float]] = []  # no epochs: no per-epoch rows, so the report draws no curves
        else:
            with stage("training (Lightning fit)"):
                trained = _train(config, task, strategy, module, datamodule, run, resume, started, monitor, monitor_mode, log,
                                 pipeline.convolutional)
            if trained is None:  # a non-zero-rank process of a distributed run
                return RunResult(run.final, {}, config)
            best_path, best_epoch, epochs_run = trained
            history = _history(run.work / "logs")
        # 4. The bundle: best weights, labels, lineage, then the final val metrics of those weights.
        with stage("bundle: model, labels, lineage"):
            bf16 = inference_bf16(next(module.parameters()).device, config.trainer.inference_precision,
                                  convolutional=pipeline.convolutional)  # as the bundle's own evaluation does
            report = strategy.after_fit(module, start_weights, lambda: task.evaluate_in_memory(module, datamodule, bf16))
            task.save_model(run.work, module, pipeline, datamodule, strategy, config)
            lineage = _lineage(config, pipeline.lineage(), backbone.source)
            lineage["strategy"] = choice.to_dict() if choice else {"requested": strategy.name, "chosen": strategy.name}
            if probe is not None:
                lineage["strategy"]["probe"] = {"l2": probe.l2, "selected_by": probe.selected_by,
                                                "class_weight": probe.class_weight}
            B.atomic_write_json(run.work / B.LINEAGE, lineage)

        with stage("final evaluation"):
            outputs = task.final_outputs(run.work, module, datamodule, pipeline, config, workers)
        metrics = outputs.headline()
        metrics["skipped"] = len(getattr(data, "skipped", []))
        metrics["data_warnings"] = len(getattr(data, "warnings", []))
        metrics.update(strategy=strategy.name, trainable_parameters=module.trainable_parameters(), total_parameters=total)
        if choice:
            metrics["strategy_choice"] = choice.to_dict()
        if probe is not None:  # the head's logistic-regression fit: chosen L2, how, val scores per L2
            metrics["probe"] = probe.to_dict()
        if report:
            metrics[strategy.name] = report
        metrics.update(
            best_epoch=best_epoch, epochs_run=epochs_run,
            seconds=round(time.time() - started, 1),
            history=history,
        )
        B.atomic_write_json(run.work / B.METRICS, metrics)
        if solved:
            _log_solved_head(side_loggers, metrics)
        if config.report.enabled:
            with stage("report"):
                task.write_report(run.work, run.final, outputs, pipeline, config)
        with stage("drift reference"):
            try:  # reference statistics for `sftune drift` / `sftune update`; optional, so never fatal
                task.write_reference(run.work, module, datamodule, pipeline, outputs, config, log)
            except Exception as e:  # noqa: BLE001 - the bundle is complete without them
                log(f"warning: drift reference statistics not stored ({type(e).__name__}: {e}); "
                    f"`sftune drift` will need --reference")
        with stage("bundle: commit"):
            if not solved and best_path.name == "best.ckpt":
                best_path.unlink()  # its weights are in model.safetensors; last.ckpt stays for continuing
            final = run.commit()
        return RunResult(final, metrics, config, getattr(data, "skipped", []), seconds=time.time() - started,
                         warnings=getattr(data, "warnings", []), stages=stage.rounded())
    except BaseException:
        run.discard_if_empty()
        raise
    finally:
        run.release()


def _train(config: RunConfig, task: Task, strategy: Strategy, module: TaskModule, datamodule: Any, run: B.RunFolder,
           resume: bool, started: float, monitor: str, monitor_mode: str,
           log: Callable[[str], None], convolutional: bool = True) -> tuple[Path, int, int] | None:
    """Lightning does the loop: checkpoints, early stopping, devices, precision. Returns the best
    checkpoint's path, its epoch and the epochs run, with the best weights loaded into ``module``;
    None on a process that does not write the bundle (distributed runs)."""
    checkpoint = ModelCheckpoint(
        dirpath=run.work / B.CHECKPOINTS, filename="best", monitor=monitor, mode=monitor_mode,
        save_top_k=1, enable_version_counter=False,
    )
    # A separate unmonitored callback rewrites last.ckpt after every epoch: Lightning 2.6's
    # save_last only writes when a new best is saved, which would make --resume lose epochs.
    last = ModelCheckpoint(dirpath=run.work / B.CHECKPOINTS, filename="last", save_top_k=1, enable_version_counter=False)
    callbacks: list[Any] = [checkpoint, last, _ElapsedTime(started), resilience.FiniteWeights()]
    if config.trainer.progress_bar:
        callbacks.append(EpochProgressBar())
    if config.train.ema:
        callbacks.append(EMA(config.train.ema_decay))
    if config.train.patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode=monitor_mode, patience=config.train.patience))
    if resume:
        _keep_previous_log(run.work / "logs")
    quiet = _quiet_lightning()
    quiet.__enter__()
    try:
        loggers = _loggers(config, run)
        trainer = _make_trainer(config, strategy.min_epochs(), callbacks, loggers, convolutional=convolutional)
        if config.trainer.precision == "auto" and trainer.precision != "32-true":
            log(f"precision: {trainer.precision} (auto: this hardware has native bf16; --precision 32-true for float32)")
        _compute_options(trainer, module, datamodule, config, resume, log)

        def rebuild() -> L.Trainer:  # after an out-of-memory error: a fresh Trainer, the earlier log kept
            _keep_previous_log(run.work / "logs")  # a new CSV file; TensorBoard/MLflow go on in the same run
            return _make_trainer(config, strategy.min_epochs(), callbacks,
                                 [CSVLogger(run.work, name="logs", version=""), *loggers[1:]], convolutional=convolutional)

        # OOM -> smaller steps, same effective batch; Ctrl-C -> RunInterrupted (resilience.py)
        trainer = resilience.fit(trainer, rebuild, module, datamodule, run.last_checkpoint, resume, log)
    finally:
        quiet.__exit__(None, None, None)
    if trainer.interrupted:  # Lightning turns Ctrl-C into a graceful stop; last.ckpt is on disk
        raise KeyboardInterrupt
    if not run.is_writer or not trainer.is_global_zero:
        return None

    best_path = Path(checkpoint.best_model_path or run.last_checkpoint)
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    return best_path, int(best["epoch"]), trainer.current_epoch


def training_inputs(task: Task, module: TaskModule, pipeline: Pipeline, config: RunConfig) -> Any:
    """What the module trains on: cached frozen-backbone features when the backbone never trains
    and the task's head works on pooled features, else the raw inputs' datamodule."""
    if _trains_on_features(task, module, config):
        module.inputs_are_features = True
        return pipeline.features()
    return pipeline.datamodule()


def _trains_on_features(task: Task, module: TaskModule, config: RunConfig) -> bool:
    return bool(config.data.feature_cache and task.caches_features and module.backbone_always_frozen())


def _budgeted_strategy(config: RunConfig, log: Callable[[str], None]) -> Strategy:
    """The configured strategy, its unset options scaled to the epoch budget (said, and saved in
    config.yaml), then checked: an impossible option the user set is a one-line error."""
    strategy = create_strategy(config.strategy)
    changed = strategy.fit_budget(config.train.epochs, set(config.strategy.options()))
    if changed:
        config.strategy = StrategyConfig(name=config.strategy.name, **config.strategy.options(), **changed)
        shown = ", ".join(f"strategy.{k}={v}" for k, v in changed.items())
        log(f"strategy: {shown} to fit {config.train.epochs} epochs (the defaults need more; set them to override)")
    strategy.check(config.train.epochs)
    return strategy


def _refuse(task: Task, strategy: Strategy) -> None:
    """One line when the strategy cannot apply to the task (e.g. LP-FT's closed-form probe needs a linear head)."""
    why = task.refusal(strategy)
    if why:
        raise SftuneError(f"strategy {strategy.name} does not apply to task {task.name}: {why}")


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar, counting epochs from 1 of N as every summary and report does
    (Lightning's own shows the 0-based index: "Epoch 1" during the second of two)."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # TQDMProgressBar.on_train_epoch_start with our description (calling it would draw its own first).
        from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset()
        self.train_progress_bar.total = convert_inf(self.total_train_batches)
        self.train_progress_bar.initial = 0
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


class _ElapsedTime(L.Callback):
    """Logs ``time/elapsed_s`` (seconds since the run started), ``time/train_s`` (this
    epoch's training batches, validation excluded) and ``lr-<group>`` with each epoch's val
    metrics, so metrics.json's history shows time-to-accuracy, throughput and the schedule."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.epoch_started = started
        self.train_seconds = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_started = time.time()
        # The learning rate of each param group as the epoch starts (the report's LR curve); a
        # group split by weight decay shares its name and its LR, so each name is kept once.
        self.lrs: dict[str, float] = {}
        for optimizer in trainer.optimizers[:1]:
            for group in optimizer.param_groups:
                self.lrs.setdefault(f"lr-{group.get('name', f'group{len(self.lrs)}')}", float(group["lr"]))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.train_seconds = time.time() - self.epoch_started  # validation runs after the epoch's batches

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/elapsed_s", float(time.time() - self.started))
            pl_module.log("time/train_s", float(self.train_seconds))
            for name, lr in getattr(self, "lrs", {}).items():
                pl_module.log(name, lr)


def _loggers(config: RunConfig, run: B.RunFolder) -> list[Any]:
    """CSV always (logs/metrics.csv: the history in metrics.json and the report's curves come from
    it); TensorBoard and MLflow when asked for, the usual Lightning loggers."""
    loggers: list[Any] = [CSVLogger(run.work, name="logs", version="")]
    options = config.logging
    if options.tensorboard:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            # Written beside the CSV log; <bundle>/logs/tensorboard once the run is in place.
            loggers.append(TensorBoardLogger(run.work / "logs", name="tensorboard", version="", default_hp_metric=False))
        except ModuleNotFoundError:
            raise SftuneError("logging.tensorboard needs TensorBoard: pip install tensorboard (or set logging.tensorboard=false)") from None
    if options.mlflow:
        try:
            import mlflow  # noqa: F401 - Lightning's MLFlowLogger needs it; say so before training starts
            from lightning.pytorch.loggers import MLFlowLogger
        except ModuleNotFoundError:
            raise SftuneError("logging.mlflow needs MLflow: pip install mlflow-skinny (or set logging.mlflow=false)") from None
        import os

        uri = options.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # one person's local store: MLflow 3 keeps its file store only behind this opt-in
            uri = f"file:{Path('mlruns').absolute()}"
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            logger = MLFlowLogger(experiment_name=options.mlflow_experiment, run_name=run.final.name, tracking_uri=uri,
                                  tags={"sftune.bundle": str(run.final)})
            logger.log_hyperparams(_flat_config(config))  # creates the experiment and run: fails here, not mid-training
        except Exception as e:  # noqa: BLE001 - MLflow raises many kinds; the user needs the first line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise SftuneError(f"MLflow tracking at {uri!r} failed: {first}; check logging.mlflow_tracking_uri "
                              f"(an MLflow server, e.g. http://host:5000) or set logging.mlflow=false") from None
        loggers.append(logger)
    return loggers


def _log_solved_head(loggers: list[Any], metrics: dict[str, Any]) -> None:
    """A head fitted without epochs (linear_probe's L-BFGS) still reaches the run's ``loggers`` (the
    CSV log, and TensorBoard/MLflow when the config turns them on): its val metrics once, at step 0.
    metrics.json's ``history`` stays empty: there are no epochs."""
    values = {f"val/{k}": float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("seconds", "best_epoch", "epochs_run")}
    for logger in loggers:
        logger.log_metrics(values, step=0)
        logger.finalize("success")


def _flat_config(config: RunConfig) -> dict[str, Any]:
    """``section.key: value`` pairs of the config, for loggers that take flat hyperparameters."""
    return {f"{section}.{key}": value for section, values in config.to_dict().items() if isinstance(values, dict)
            for key, value in values.items()} | {"task": config.task.name}


def _probe_head(strategy: Strategy, task: TaskModule, features: FeatureData, log: Callable[[str], None],
                from_parent: bool = False) -> ProbeFit:
    """LP-FT: fit the task's linear head on the frozen features before fine-tuning starts
    (``from_parent``: anchored on the parent bundle's head, L2-SP; strategies/probe.py)."""
    fit = strategy.fit_probe(task.linear_head(), features, anchored=from_parent)
    log(f"probe: head fitted on frozen features ({fit.describe()}); fine-tuning everything from it")
    return fit


def _solve_head(strategy: Strategy, task: TaskModule, features: FeatureData, auto_probe: tuple[dict[str, torch.Tensor], ProbeFit] | None,
                log: Callable[[str], None], from_parent: bool = False) -> ProbeFit:
    """``linear_probe`` (L-BFGS solver): the head is the logistic regression fitted on the cached
    features. After ``auto`` chose ``linear_probe`` with the same options, its probe *is* that fit
    (same function, features and options): its weights are taken instead of fitting again.
    ``from_parent`` (a re-fine-tune starting from a parent bundle's head, as ``sftune update``
    does): the fit starts from that head and its L2 penalty pulls towards it (L2-SP), so the
    validation split chooses how far the head moves from what the parent knew."""
    head = task.linear_head()
    if auto_probe is not None and strategy == LinearProbe() and not from_parent:
        state, fit = auto_probe
        head.load_state_dict(state)
        log(f"{strategy.name}: the head is auto's probe ({fit.describe()})")
        return fit
    fit = strategy.fit_probe(head, features, anchored=from_parent)
    log(f"{strategy.name}: head fitted to convergence on frozen features ({fit.describe()}); no training epochs")
    return fit


def _choose_strategy(auto: Automatic, task: Task, pipeline: Pipeline, log: Callable[[str], None],
                     stage: Stages | None = None) -> tuple[Choice, tuple[dict[str, torch.Tensor], ProbeFit] | None]:
    """``auto``: a quick probe on the (cached) frozen features, then the rule of strategies/auto.py.
    The probe is ``linear_probe``'s own head fit (strategies/probe.py, default options), so the
    score it reports is what ``linear_probe`` then delivers; it is returned (head weights, fit) for
    reuse. Tasks whose heads need feature maps, not pooled features (segmentation), have no such
    probe: the rule then goes by the data size alone."""
    if not task.caches_features:
        choice = auto.choose(len(pipeline.data.train), len(pipeline.data.classes), None, pipeline.config.train.epochs)
        log(f"auto: chose {choice.strategy} — {choice.why}")
        return choice, None
    with (stage or Stages())("feature pass (frozen backbone)"):
        features = pipeline.features()
    train_x, _ = features.train_set.tensors
    data = pipeline.data
    probe = None
    if getattr(data, "multi_label", False):
        probe_acc = 0.0  # the probe rule is for single-label data; multi-label goes by size alone
    else:
        with torch.random.fork_rng():  # the probe's init must not shift the global RNG: auto -> X equals X
            fc = torch.nn.Linear(train_x.shape[1], len(data.classes))
        fit = LinearProbe().fit_probe(fc, features)
        probe_acc = fit.val_acc if fit.val_acc is not None else 0.0
        probe = ({k: v.detach().clone() for k, v in fc.state_dict().items()}, fit)
    choice = auto.choose(len(data.train), len(data.classes), probe_acc, pipeline.config.train.epochs)
    log(f"auto: chose {choice.strategy} — {choice.why}")
    return choice, probe


def _start_weights(task: TaskModule, run: B.RunFolder, resume: bool) -> dict[str, torch.Tensor]:
    """The weights training starts from (after any probe), kept on disk so a resumed run has them too."""
    from safetensors.torch import load_file

    path = run.work / B.CHECKPOINTS / "start.safetensors"
    if resume and path.is_file():
        return load_file(path)
    state = {k: v.detach().cpu().clone() for k, v in task.state_dict().items()}
    if run.is_writer:
        path.parent.mkdir(parents=True, exist_ok=True)
        B.save_tensors(path, state)
    return state


class EMA(WeightAveraging):
    """Lightning's weight-averaging callback with timm's EMA warm-up: the decay used at
    update n is min(decay, (1 + n) / (10 + n)), so short fine-tunes (a few hundred steps)
    average recent weights instead of staying at the pretrained start. Validation,
    checkpoints (hence the bundle) use the averaged weights."""

    def __init__(self, decay: float) -> None:
        def ema(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
            n = float(num_averaged)
            d = min(decay, (1.0 + n) / (10.0 + n))
            return averaged * d + current * (1.0 - d)

        super().__init__(avg_fn=ema, use_buffers=True)


def _compute_options(trainer: L.Trainer, task: TaskModule, datamodule: Any, config: RunConfig, resume: bool,
                     log: Callable[[str], None]) -> None:
    """torch.compile and the automatic per-step batch size, both opt-in."""
    if config.trainer.compile and not task.inputs_are_features:
        task.backbone.model.compile()  # in place: parameter names (and so the bundle's keys) stay the same
        log("compile: the backbone is compiled with torch.compile; the first steps include compiling")
    if not config.train.auto_batch_size or resume:
        return
    effective = datamodule.batch_size * config.train.accumulate_grad_batches
    if not isinstance(trainer.accelerator, L.pytorch.accelerators.CUDAAccelerator):
        log(f"auto batch size: no accelerator memory limit to find here; keeping batch {datamodule.batch_size}")
        return
    from lightning.pytorch.tuner import Tuner

    found = Tuner(trainer).scale_batch_size(task, datamodule=datamodule, mode="binsearch", init_val=effective) or effective
    datamodule.batch_size, trainer.accumulate_grad_batches = split_batch(found, effective)
    log(f"auto batch size: {datamodule.batch_size} per step x {trainer.accumulate_grad_batches} accumulated "
        f"(effective batch {effective} kept)")


def split_batch(fits: int, effective: int) -> tuple[int, int]:
    """Per-step batch and accumulation steps so that batch x steps >= effective, batch <= what fits.

    The effective batch is what the learning rate was chosen for, so a larger device only
    takes bigger steps up to it; a smaller one accumulates, e.g. fits=24, effective=64 -> (22, 3).
    """
    if fits >= effective:
        return effective, 1
    steps = -(-effective // max(1, fits))  # ceil
    return -(-effective // steps), steps


def _silent(message: str) -> None:
    pass


def _make_trainer(config: RunConfig, min_epochs: int, callbacks: list[Any], logger: Any, root_dir: str | None = None,
                  convolutional: bool = True):
    """The Lightning Trainer; hardware/scale-out settings it rejects become one-line errors.
    ``convolutional``: the model's kind, for ``trainer.precision: auto`` (precision.training_precision)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    t = config.trainer
    if config.train.grad_clip and "fsdp" in str(t.distributed).lower():
        # Lightning clips FSDP-sharded gradients only through the wrapped module, not by norm here:
        # without this line the run would fail at its first optimizer step.
        raise SftuneError(f"train.grad_clip ({config.train.grad_clip:g}) cannot be used with trainer.distributed="
                          f"{t.distributed!r}: leave out one of the two (ddp clips)")
    precision = training_precision(t.precision, t.accelerator, convolutional)
    try:
        return L.Trainer(
            max_epochs=config.train.epochs,
            accumulate_grad_batches=config.train.accumulate_grad_batches,
            gradient_clip_val=config.train.grad_clip,  # global L2 norm over every trained parameter
            gradient_clip_algorithm="norm",
            min_epochs=min_epochs,
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.distributed,  # Lightning's "strategy" = how devices cooperate; ours is the fine-tuning one
            precision=precision,
            deterministic=t.deterministic,
            callbacks=callbacks,
            logger=logger,
            plugins=[resilience.AtomicCheckpointIO()],  # kill -9 while saving leaves the previous last.ckpt whole
            enable_progress_bar=t.progress_bar,
            enable_model_summary=False,
            log_every_n_steps=1,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # our samplers shard by rank themselves (data/datamodule.py)
            default_root_dir=root_dir,
        )
    except (ValueError, TypeError, ImportError, RuntimeError, MisconfigurationException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SftuneError(
            f"trainer settings rejected (trainer.accelerator={t.accelerator!r}, trainer.devices={t.devices!r}, "
            f"trainer.distributed={t.distributed!r}, trainer.precision={t.precision!r}): {first}"
        ) from None


def _check_trainer_settings(config: RunConfig) -> None:
    """Raise the one-line SftuneError :func:`_make_trainer` gives for hardware settings Lightning
    rejects, without training: runs that fit the head without a loop still refuse them."""
    with _quiet_lightning():
        _make_trainer(config, 0, [], False)


def _resumed_config(out: Path, requested: RunConfig) -> RunConfig:
    """The interrupted run's own config, with only epoch budget / hardware allowed to change.

    A setting the user gave (flag, --set or config file) that differs from the saved run is
    refused in one line, even when it equals the default; settings not given come from the
    saved run. A config built without that record (an API caller's RunConfig) is compared
    key by key, values equal to the defaults counting as not given."""
    saved_path = B.partial_dir(out.expanduser().absolute()) / B.CONFIG
    if not saved_path.is_file():
        raise SftuneError(f"cannot resume '{out}': no unfinished run there ({saved_path} is missing)")
    saved = validate(load_yaml(saved_path), source=str(saved_path))
    merged = saved.to_dict()
    wanted = requested.to_dict()
    defaults = RunConfig().to_dict()
    for tree in (merged, wanted, defaults):  # `task: name` shorthand -> {name: ...}, like every other section
        if isinstance(tree.get("task"), str):
            tree["task"] = {"name": tree["task"]}
    given = requested._given
    for section, values in wanted.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if key == "arch" or value == merged[section].get(key):
                continue  # resolved at run time, or the same as the saved run
            if given and dotted not in given:
                continue  # not asked to change: the saved value holds
            if not given and value == defaults[section].get(key):
                continue
            if dotted in ("strategy.name", "task.name") and value == "auto":
                continue  # the original command of an auto run: the saved config holds what was chosen
            if not any(dotted == p or (p.endswith(".") and dotted.startswith(p)) for p in RESUMABLE_CHANGES):
                raise SftuneError(
                    f"--resume continues the saved run: {dotted} is {merged[section].get(key)!r} there, not {value!r}; "
                    f"only train.epochs, train.patience and trainer.* may change (drop that setting, or start a new --out)"
                )
            merged[section][key] = value
    resumed = validate(merged, source=str(saved_path))
    resumed._given = {f"{section}.{key}" for section, values in merged.items() if isinstance(values, dict)
                      for key in values}  # resolved already: no task default may replace a saved value
    return resumed


def _lineage(config: RunConfig, data: dict[str, Any], backbone_source: str) -> dict[str, Any]:
    import lightning
    import timm

    parent = None
    if backbone_source.startswith("file:"):
        parent_path = Path(backbone_source[len("file:") :])
        parent = {"path": str(parent_path.absolute()), "is_bundle": B.is_bundle(parent_path)}
    return {
        "format": B.BUNDLE_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": config.task.name,
        "model": {"name": config.model.name, "arch": config.model.arch, "pretrained": config.model.pretrained},
        "parent": parent,
        "data": data,
        "versions": {
            "sftune": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "lightning": lightning.__version__, "python": platform.python_version(),
        },
        "host": {"platform": platform.platform(), "cuda": torch.cuda.is_available()},
    }


def _keep_previous_log(log_dir: Path) -> None:
    """Lightning's CSVLogger truncates metrics.csv on start; keep an interrupted run's rows."""
    current = log_dir / "metrics.csv"
    if current.is_file():
        n = len(list(log_dir.glob("metrics-*.csv")))
        current.rename(log_dir / f"metrics-{n}.csv")


def _history(log_dir: Path) -> list[dict[str, float]]:
    """Per-epoch rows of the CSV logs (validation metrics and epoch-mean train loss).

    Logs of earlier, interrupted attempts (metrics-<n>.csv) are read first so the
    resumed attempt's rows win for any epoch that was run twice.
    """
    files = sorted(log_dir.glob("metrics-*.csv"), key=lambda p: int(p.stem.split("-")[1])) + [log_dir / "metrics.csv"]
    by_epoch: dict[int, dict[str, float]] = {}
    for csv_path in (f for f in files if f.is_file()):
        with csv_path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                entry = by_epoch.setdefault(epoch, {"epoch": epoch})
                for key, value in row.items():
                    if value and key not in ("epoch", "step") and not key.endswith("_step"):
                        entry[key.removesuffix("_epoch")] = float(value)
    return [by_epoch[e] for e in sorted(by_epoch)]


class _quiet_lightning:
    """Keep Lightning's start-up chatter (and known-harmless warnings) off the terminal."""

    def __enter__(self) -> None:
        self._loggers = {name: logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")}
        self._levels = {name: lg.level for name, lg in self._loggers.items()}
        for lg in self._loggers.values():
            lg.setLevel(logging.WARNING)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        for message in (
            ".*does not have many workers.*",
            ".*The number of training batches.*",
            ".*module\\(s\\) in eval mode.*",  # our frozen BatchNorm layers, on purpose
            ".*LeafSpec.*",
            ".*litlogger.*",
            ".*sync_dist=True.*",  # val metrics are already synced by torchmetrics; train loss is rank 0's
            ".*exists and is not empty.*",  # our own run folder (locked): resume, or wise_ft's start weights
        ):
            warnings.filterwarnings("ignore", message=message)

    def __exit__(self, *exc: object) -> None:
        self._warn.__exit__(*exc)
        for name, lg in self._loggers.items():
            lg.setLevel(self._levels[name])
