"""Classification as a LightningModule: backbone -> head -> loss, for any input the backbone takes.

Images (B, 3, H, W), tokenized text (a dict of (B, T) tensors) or cached backbone
features (B, F) all go through the same module: the task only needs the backbone
to return pooled features (B, F). Single-label uses cross-entropy (with label
smoothing, mixup/cutmix for images); multi-label uses a sigmoid per class (BCE).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...config import TrainConfig
from ...eval import classification_metrics
from ...heads import ClassifierHead
from ...strategies import Strategy
from ..base import TaskModule


class Classifier(TaskModule):
    """Backbone -> pooled features (B, F) -> linear head -> logits (B, num_classes)."""

    def __init__(self, backbone: nn.Module, num_classes: int, strategy: Strategy, train_cfg: TrainConfig,
                 drop_rate: float = 0.0, multi_label: bool = False) -> None:
        super().__init__(strategy, train_cfg)
        self.backbone = backbone
        self.head = ClassifierHead(backbone.num_features, num_classes, drop_rate)
        self.num_classes = num_classes
        self.multi_label = multi_label
        if multi_label:
            self.criterion: nn.Module = nn.BCEWithLogitsLoss()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=train_cfg.label_smoothing)
        self.val_metrics = classification_metrics(num_classes, multi_label=multi_label)
        self.mixup = _mixup(train_cfg, num_classes) if not multi_label else None
        self.setup_strategy()  # e.g. LoRA adapters are injected into the backbone here

    def forward(self, inputs: Any) -> torch.Tensor:
        if self.inputs_are_features:
            return self.head(inputs)  # (B, F) -> (B, num_classes)
        return self.head(self.backbone_features(inputs))  # (B, F) -> (B, num_classes)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def linear_head(self) -> nn.Linear:
        return self.head.fc

    def training_losses(self, batch: tuple[Any, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        inputs, labels = batch
        if self.mixup is not None and not self.inputs_are_features and self.mixup.mix_prob > 0:
            inputs, targets = _mix_batch(self.mixup, inputs, labels)
            logits = self(inputs)
            loss = torch.sum(-targets * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()  # soft-target CE
        else:
            logits = self(inputs)
            loss = self.criterion(logits.float() if self.multi_label else logits, labels)
        return {"bce" if self.multi_label else "ce": loss}, len(labels)

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
