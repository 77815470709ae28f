"""Classification as a LightningModule: backbone -> head -> loss, for any input the backbone takes.

Images (B, 3, H, W), tokenized text (a dict of (B, T) tensors) or cached backbone
features (B, F) all go through the same module: the task only needs the backbone
to return pooled features (B, F). Single-label uses cross-entropy (with label
smoothing, mixup/cutmix for images); multi-label uses a sigmoid per class (BCE).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..config import TrainConfig
from .. import rng
from ..errors import SftuneError
from ..eval import classification_metrics
from ..heads import ClassifierHead
from ..optim import build_optimizer, default_lr, lr_multiplier
from ..strategies import ParamGroup, Strategy


class Classifier(L.LightningModule):
    def __init__(self, backbone: nn.Module, num_classes: int, strategy: Strategy, train_cfg: TrainConfig,
                 drop_rate: float = 0.0, multi_label: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ClassifierHead(backbone.num_features, num_classes, drop_rate)
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.strategy = strategy
        self.train_cfg = train_cfg
        self.lr = train_cfg.lr or default_lr(strategy.default_lr, train_cfg.optimizer)
        if multi_label:
            self.criterion: nn.Module = nn.BCEWithLogitsLoss()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=train_cfg.label_smoothing)
        self.val_metrics = classification_metrics(num_classes, multi_label=multi_label)
        self.mixup = _mixup(train_cfg, num_classes) if not multi_label else None
        strategy.prepare(self)  # e.g. LoRA adapters are injected into the backbone here
        self.groups: list[ParamGroup] = strategy.param_groups(self)
        self._backbone_frozen = False
        self.inputs_are_features = False  # True: batches hold cached backbone features (B, F), not images
        self.stop_on_nonfinite_loss = True  # False in the LR range test, which drives the loss up on purpose
        # channels_last (NHWC) lets oneDNN/cuDNN use their fast convolution kernels:
        # 2x training throughput for EfficientNet-Lite0 on a 2-core AVX-512 CPU.
        self.channels_last = False
        self.apply_trainability(epoch=0)

    # ------------------------------------------------------------------ model

    def forward(self, inputs: Any) -> torch.Tensor:
        if self.inputs_are_features:
            return self.head(inputs)  # (B, F) -> (B, num_classes)
        if self.channels_last and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self._backbone_frozen:
            with torch.no_grad():  # no activations kept for a backbone that does not train
                features = self.backbone(inputs)
        else:
            features = self.backbone(inputs)  # (B, F)
        return self.head(features)  # (B, num_classes)

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

    def train(self, mode: bool = True) -> "Classifier":
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
            self.backbone.to(memory_format=torch.channels_last)  # convolutional backbones only

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

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, labels = batch
        if self.mixup is not None and not self.inputs_are_features and self.mixup.mix_prob > 0:
            inputs, targets = _mix_batch(self.mixup, inputs, labels)
            logits = self(inputs)
            loss = torch.sum(-targets * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()  # soft-target CE
        else:
            logits = self(inputs)
            loss = self.criterion(logits.float() if self.multi_label else logits, labels)
        if not torch.isfinite(loss) and self.stop_on_nonfinite_loss:
            raise SftuneError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step {batch_idx}; "
                f"lower train.lr (now {self.lr:g}) or use precision 32-true"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels))
        return {"loss": loss, "output": logits.detach()}

    def validation_step(self, batch: tuple[Any, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, labels = batch
        logits = self(inputs)
        loss = self.criterion(logits.float() if self.multi_label else logits, labels)
        if self.multi_label:
            self.val_metrics.update(logits.float().sigmoid(), labels.int())
        else:
            self.val_metrics.update(logits, labels)
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=len(labels))
        return {"loss": loss, "output": logits}

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # torchmetrics syncs across processes under DDP
        self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=True)
        self.val_metrics.reset()

    # -------------------------------------------------------------- optimizer

    def configure_optimizers(self) -> dict[str, Any]:
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


def _mixup(cfg: TrainConfig, num_classes: int):
    """timm's Mixup/CutMix (one of the two per batch when both are on), or None when off."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                 label_smoothing=cfg.label_smoothing, num_classes=num_classes)


def _mix_batch(mixup: Any, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed images and soft targets (B, C). timm mixes a batch with its flipped self and
    needs an even size: an odd last sample keeps its image and a smoothed one-hot target."""
    from timm.data.mixup import mixup_target

    even = len(images) - len(images) % 2
    targets = mixup_target(labels, mixup.num_classes, lam=1.0, smoothing=mixup.label_smoothing)
    if even >= 2:
        images = images.clone()  # timm mixes in place
        images[:even], targets[:even] = mixup(images[:even], labels[:even])
    return images, targets
