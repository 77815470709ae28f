"""The task contract: what every task (classification, segmentation, ...) provides, and the
machinery every task's LightningModule shares.

Two axes are kept apart (DESIGN.md section 2): the *modality* (how raw items are found,
decoded and batched: a :class:`~sftune.pipelines.base.Pipeline`) and the *task* (targets,
heads, losses, metrics, outputs, predictions, report). A task is a :class:`Task` subclass
registered in :data:`TASKS`; the engine, CLI, eval and bundle code only talk to it through
the methods below, so adding a task is a folder under ``tasks/`` and no edit elsewhere.

:class:`TaskModule` is the one LightningModule base: trainability per epoch from the
strategy's :class:`~sftune.strategies.ParamGroup` list, the BatchNorm rule, per-epoch
seeding (exact resume), the optimizer and LR schedule, checkpoint-layout checks and the
finite-loss check. A task module adds its heads, :meth:`TaskModule.training_losses` (a dict
of named losses whose weighted sum is the loss) and its validation metrics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import lightning as L
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import rng
from .._registry import Registry
from ..errors import SftuneError, did_you_mean

if TYPE_CHECKING:
    from ..config import RunConfig, TrainConfig
    from ..pipelines.base import Pipeline
    from ..strategies import ParamGroup, Strategy


class TaskOptions(BaseModel):
    """A task's own typed ``task:`` config section (``--set task.<key>=...``); no keys by default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Task:
    """One kind of supervised target over one modality. Subclasses set the class attributes
    and implement the methods; instances hold the validated :class:`TaskOptions`.

    ``monitor``: the metric that picks the best checkpoint and stops early, with its direction.
    ``metrics``: every metric name ``train.monitor`` may name (``val/<name>``), with its direction.
    ``backbone_output``: ``"pooled"`` (B, F) features or a ``"pyramid"`` of feature maps.
    ``caches_features``: a frozen backbone's pooled features may be computed once and cached
    (the head then trains on them); dense tasks need full feature maps and say False.
    ``continual``: the bundle supports ``sftune drift`` / ``update`` (else they refuse in one line).
    """

    name: ClassVar[str]
    modality: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    monitor: ClassVar[tuple[str, str]] = ("val/acc", "max")
    metrics: ClassVar[dict[str, str]] = {"val/acc": "max", "val/f1": "max", "val/loss": "min"}
    backbone_output: ClassVar[str] = "pooled"
    caches_features: ClassVar[bool] = True
    continual: ClassVar[bool] = False
    default_model: ClassVar[str] = "efficientnet_lite0"
    # Config defaults of this task where the global ones do not fit it (dotted keys), applied to
    # settings the user did not give (config.resolve_task), e.g. smaller batches of whole images.
    defaults: ClassVar[dict[str, Any]] = {}
    detect_priority: ClassVar[int] = 0  # task=auto asks tasks in decreasing priority whether they claim the data

    def __init__(self, options: TaskOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    # ------------------------------------------------------------- detection

    @classmethod
    def claims(cls, config: "RunConfig") -> bool:
        """task=auto: whether this task is evidently meant for the model name / data (cheap checks)."""
        return False

    # ------------------------------------------------------------- training

    def pipeline(self, config: "RunConfig", workers: int, log: Callable[[str], None]) -> "Pipeline":
        """Finds the labeled data and builds the backbone (after ``load()``), batches and caches."""
        raise NotImplementedError

    def refusal(self, strategy: "Strategy") -> str | None:
        """Why ``strategy`` cannot apply to this task (one line), or None when it can."""
        return None

    def module(self, pipeline: "Pipeline", strategy: "Strategy", config: "RunConfig") -> "TaskModule":
        """The LightningModule (backbone + heads) for ``pipeline``'s data."""
        raise NotImplementedError

    def start_from_parent(self, module: "TaskModule", config: "RunConfig", pipeline: "Pipeline") -> bool:
        """Re-fine-tuning a ``file:<bundle>`` of this task: start the heads from the parent's when
        they fit (True), else they start fresh (False)."""
        return False

    def monitor_of(self, config: "RunConfig") -> tuple[str, str]:
        """The monitored metric and its direction: ``train.monitor`` if set, else the task's."""
        wanted = config.train.monitor
        if wanted is None:
            return self.monitor
        if wanted not in self.metrics:
            raise SftuneError(f"train.monitor: {wanted!r} is not a metric of task {self.name}"
                              f"{did_you_mean(wanted, list(self.metrics))}; it has {', '.join(self.metrics)}")
        return wanted, self.metrics[wanted]

    def evaluate_in_memory(self, module: "TaskModule", datamodule: Any, bf16: bool) -> dict[str, float]:
        """Val metrics of ``module``'s current weights (strategies that adjust weights after
        training, e.g. WiSE-FT, compare candidates with it)."""
        raise NotImplementedError

    def save_model(self, work: Path, module: "TaskModule", pipeline: "Pipeline", datamodule: Any,
                   strategy: "Strategy", config: "RunConfig") -> None:
        """model.safetensors, labels.json and whatever else the predictor needs, into ``work``."""
        raise NotImplementedError

    def final_outputs(self, work: Path, module: "TaskModule", datamodule: Any, pipeline: "Pipeline",
                      config: "RunConfig", workers: int) -> Any:
        """Per-example outputs of the saved model on the validation set (metrics.json, report,
        drift reference); the object has ``headline() -> dict`` and ``skipped``."""
        raise NotImplementedError

    def write_report(self, work: Path, final: Path, outputs: Any, pipeline: "Pipeline", config: "RunConfig") -> None:
        """report.json + report.html of the final weights on the validation set."""
        raise NotImplementedError

    def write_reference(self, work: Path, module: "TaskModule", datamodule: Any, pipeline: "Pipeline",
                        outputs: Any, config: "RunConfig", log: Callable[[str], None]) -> None:
        """Drift reference statistics and the replay sample (continual/); nothing by default."""

    # ------------------------------------------------------------- bundles

    def load_predictor(self, path: Path, device: str | None, precision: str) -> Any:
        """The bundle at ``path`` as a predictor: ``predict(inputs)``, ``outputs(data)``,
        ``evaluate(data)``; its ``modality`` attribute says what inputs it takes."""
        raise NotImplementedError

    def evaluation_report(self, outputs: Any, bundle: str | Path, data: str, title: str, bootstrap: int,
                          mistakes: int) -> dict[str, Any]:
        """report.json content of ``sftune eval`` for one bundle."""
        raise SftuneError(f"sftune eval is not available for {self.name} bundles")

    def comparison_report(self, a: Any, b: Any, bundle_a: str | Path, bundle_b: str | Path, data: str, title: str,
                          bootstrap: int, mistakes: int) -> dict[str, Any]:
        """report.json content of ``sftune eval A B``."""
        raise SftuneError(f"sftune eval A B (comparison) is not available for {self.name} bundles")

    def write_evaluation(self, folder: Path, report: dict[str, Any], model: Any) -> tuple[Path, Path]:
        """Write report.json/report.html of ``sftune eval`` into ``folder``."""
        raise SftuneError(f"sftune eval reports are not available for {self.name} bundles")


TASKS: Registry[type[Task]] = Registry("task")


def create_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """The registered task ``name`` with its options validated (one-line errors naming the key)."""
    cls = TASKS.get(name)
    try:
        return cls(cls.Options.model_validate(options or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = list(cls.Options.model_fields)
            listed = ", ".join(known) if known else "none"
            raise SftuneError(f"config: unknown key 'task.{key}' for task '{name}'{did_you_mean(key, known)}; "
                              f"its options: {listed}") from None
        raise SftuneError(f"config: task.{key}: {err['msg']} (got {err.get('input')!r})") from None


def detect_task(config: "RunConfig") -> str:
    """task=auto: the first task (highest ``detect_priority``) that claims the model/data; else
    image classification."""
    for name in sorted(TASKS.list(), key=lambda n: -TASKS.get(n).detect_priority):
        if TASKS.get(name).claims(config):
            return name
    return "image_classification"


# ----------------------------------------------------------------------------- the module


class TaskModule(L.LightningModule):
    """What every task's LightningModule shares. Subclasses set ``self.backbone`` (a module
    with ``layer_groups()`` naming parameters of ``backbone.model``) and their heads before
    calling :meth:`setup_strategy`, and implement :meth:`head_parameters`,
    :meth:`training_losses`, ``validation_step`` and ``on_validation_epoch_end``.

    Strategies reach the model only through :meth:`head_parameters`,
    :meth:`backbone_parameters`, :meth:`backbone_layer_groups` and :meth:`linear_head`.
    """

    backbone: nn.Module
    loss_weights: dict[str, float]
    # When train.lr is not given, the head LR is the strategy's default (AdamW; x10 for SGD-style
    # optimizers), tuned for a linear/MLP head. A task whose head is a large new network that needs the
    # same steps whether or not the backbone trains (detection: FPN + RPN + box regression from scratch)
    # sets one head LR for every strategy here.
    default_head_lr: ClassVar[float | None] = None

    def __init__(self, strategy: "Strategy", train_cfg: "TrainConfig") -> None:
        super().__init__()
        from ..optim import default_lr

        self.strategy = strategy
        self.train_cfg = train_cfg
        base = self.default_head_lr if self.default_head_lr is not None else strategy.default_lr
        self.lr = train_cfg.lr or default_lr(base, train_cfg.optimizer)
        self.loss_weights = {}  # name -> weight of each loss in the total (default 1)
        self._backbone_frozen = False
        self.inputs_are_features = False  # True: batches hold cached pooled backbone features (B, F)
        self.stop_on_nonfinite_loss = True  # False in the LR range test, which drives the loss up on purpose
        # channels_last (NHWC) lets oneDNN/cuDNN use their fast convolution kernels:
        # 2x training throughput for EfficientNet-Lite0 on a 2-core AVX-512 CPU.
        self.channels_last = False

    def setup_strategy(self) -> None:
        """Let the strategy change the model (e.g. LoRA adapters), then take its param groups."""
        self.strategy.prepare(self)
        self.groups: list[ParamGroup] = self.strategy.param_groups(self)
        self.apply_trainability(epoch=0)

    # ------------------------------------------------------- the strategies' view

    def head_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is new for this task (heads, decoders)."""
        raise NotImplementedError

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    def backbone_layer_groups(self) -> list[list[nn.Parameter]]:
        """The backbone's parameters grouped by depth, input side first (timm's group_matcher)."""
        by_name = dict(self.backbone.model.named_parameters())
        return [[by_name[n] for n in names] for names in self.backbone.layer_groups() if names]

    def adapter_host(self) -> nn.Module:
        """The backbone network that adapters (LoRA) are injected into, in place."""
        return self.backbone.model

    def linear_head(self) -> nn.Linear | None:
        """A linear layer on pooled features that a probe can fit in closed form (LP-FT), if any."""
        return None

    # ------------------------------------------------------- what trains, when

    def apply_trainability(self, epoch: int) -> None:
        """requires_grad from the strategy's groups at this epoch; everything else frozen."""
        for p in self.parameters():
            p.requires_grad_(False)
        for group in self.groups:
            for p in group.params:
                p.requires_grad_(epoch >= group.start_epoch)
        self._backbone_frozen = not any(p.requires_grad for p in self.backbone.parameters())
        self.train(self.training)  # re-apply the BatchNorm rule below

    def train(self, mode: bool = True) -> "TaskModule":
        super().train(mode)
        if mode:
            if self._backbone_frozen:
                self.backbone.eval()  # frozen backbone: BN statistics and dropout off
            else:
                for m in self.backbone.modules():
                    if isinstance(m, _BatchNorm) and not any(p.requires_grad for p in m.parameters(recurse=False)):
                        m.eval()  # a BN layer that doesn't train keeps its running statistics
        return self

    def on_fit_start(self) -> None:
        if self.channels_last and not self.inputs_are_features and any(p.ndim == 4 for p in self.backbone.parameters()):
            self.to(memory_format=torch.channels_last)  # convolutional models only

    def on_train_start(self) -> None:
        # Runs once, after a checkpoint was restored. Lightning skips on_train_epoch_start when it
        # resumes in the middle of an epoch, so trainability and seeding are applied here too.
        self.on_train_epoch_start()

    def on_train_epoch_start(self) -> None:
        self.apply_trainability(self.current_epoch)
        # Dropout and DataLoader worker seeds draw from the global generators: seeding them per
        # (seed, epoch) makes a run resumed at epoch k continue exactly as if never stopped.
        # (Augmentation is seeded per sample in data/datamodule.py.)
        rng.seed_all(self.train_cfg.seed * 100_003 + 7919 * self.current_epoch)

    def backbone_always_frozen(self) -> bool:
        """No backbone parameter trains at any epoch: its features can be computed once."""
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        return not any(id(p) in backbone_ids for g in self.groups for p in g.params)

    def trainable_parameters(self) -> int:
        """Parameters that train at any point of the run."""
        return sum(p.numel() for g in self.groups for p in g.params)

    def backbone_features(self, inputs: Any) -> Any:
        """The backbone's output; without building a graph while the backbone is frozen."""
        if self.channels_last and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self._backbone_frozen:
            with torch.no_grad():  # no activations kept for a backbone that does not train
                return self.backbone(inputs)
        return self.backbone(inputs)

    # ------------------------------------------------------------------ steps

    def training_losses(self, batch: Any) -> tuple[dict[str, torch.Tensor], int]:
        """Named losses of one training batch and its size; the loss is their weighted sum."""
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        losses, size = self.training_losses(batch)
        loss = sum(self.loss_weights.get(name, 1.0) * value for name, value in losses.items())
        if not torch.isfinite(loss) and self.stop_on_nonfinite_loss:
            raise SftuneError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step {batch_idx}; "
                f"lower train.lr (now {self.lr:g}) or use precision 32-true"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        if len(losses) > 1:  # several heads or feature losses: each one's curve too
            for name, value in losses.items():
                self.log(f"train/loss_{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return loss

    # -------------------------------------------------------------- optimizer

    def configure_optimizers(self) -> dict[str, Any]:
        from ..optim import build_optimizer, lr_multiplier

        cfg = self.train_cfg
        param_groups, starts = [], []
        for group in self.groups:
            decay = [p for p in group.params if p.ndim > 1]
            no_decay = [p for p in group.params if p.ndim <= 1]  # biases and norm weights
            for params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
                if params:
                    param_groups.append({"params": params, "lr": self.lr * group.lr_scale, "weight_decay": wd, "name": group.name})
                    starts.append(group.start_epoch)
        fused = torch.cuda.is_available() and self.device.type == "cuda"
        optimizer = build_optimizer(param_groups, cfg.optimizer, cfg.weight_decay, cfg.momentum, fused=fused)

        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, math.ceil(total_steps / max(1, self.trainer.max_epochs or 1)))
        # Default warm-up: 10% of the run, at most one epoch (1 of 10 epochs for images; 0.3 of a
        # 3-epoch text fine-tune, where a full epoch of warm-up cost 1 point on SST-2).
        warmup_epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else min(1.0, 0.1 * (self.trainer.max_epochs or 1))
        warmup = max(1, round(warmup_epochs * steps_per_epoch))
        lambdas = [lr_multiplier(cfg.schedule, start * steps_per_epoch, warmup, total_steps) for start in starts]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sftune_groups"] = self._group_layout()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("sftune_groups")
        if saved is not None and saved != self._group_layout():
            raise SftuneError(
                "checkpoint was written by a different strategy or model (param groups differ); "
                "resume with the run's own config.yaml or start a new --out"
            )

    def _group_layout(self) -> list[list[Any]]:
        return [[g.name, g.start_epoch, float(g.lr_scale), sum(p.numel() for p in g.params)] for g in self.groups]
