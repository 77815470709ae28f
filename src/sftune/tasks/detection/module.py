"""Object detection as a TaskModule: a torchvision detector (Faster R-CNN, RetinaNet, FCOS) on a
timm encoder. The encoder is the module's ``backbone`` (what strategies freeze, unfreeze and decay
layer by layer); FPN + RPN + RoI heads (or the one-stage heads) are the task's head.

Detectors return their named losses in train mode and boxes in eval mode, so validation scores
COCO mAP from the boxes (metrics.py), never a loss; the monitor is ``val/map``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...config import TrainConfig
from ...strategies import Strategy
from ..base import TaskModule
from .metrics import detection_metric
from .model import DetectionNet


class Detector(TaskModule):
    """images: a list of (3, H, W) float tensors in [0, 1] (any sizes); targets: per-image dicts
    {"boxes" (N, 4) xyxy pixels, "labels" (N,) 0-based, "difficult", "iscrowd"}."""

    # One head LR for every strategy: FPN + RPN + RoI heads are new whether or not the encoder trains.
    # The strategies' AdamW defaults (3e-3 for a frozen backbone's head, 1e-3 otherwise) make the RPN's and
    # the box head's regression losses blow up in the first steps (BCCD: loss 93 in epoch 1, mAP 0 after
    # 2 epochs); 3e-4 is in the usual AdamW range for detection heads (1e-4 to 3e-4, e.g. DETR's 1e-4).
    # A tenth of the strategy's default instead (1e-4 for full/freeze_unfreeze) left `full` at mAP50
    # 0.647 after 2 BCCD epochs (the frozen-encoder head at 3e-4: 0.821). The encoder gets
    # backbone_lr_scale x this.
    default_head_lr = 3e-4

    def __init__(self, net: DetectionNet, strategy: Strategy, train_cfg: TrainConfig) -> None:
        super().__init__(strategy, train_cfg)
        # The network's parts are registered here directly (checkpoint keys backbone.* / detector.*);
        # the DetectionNet wrapper (label offsets, input checks) is kept outside the module tree.
        self.backbone = net.encoder
        self.detector = net.detector
        self._net = [net]
        self.num_classes = net.num_classes
        self.val_metrics = detection_metric(net.num_classes, class_metrics=False)
        self.setup_strategy()

    @property
    def net(self) -> DetectionNet:
        return self._net[0]

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        self.net.training = self.training  # the wrapper is outside the module tree: follow train/eval
        return self.net(images, targets)

    def head_parameters(self) -> list[nn.Parameter]:
        return self.net.head_parameters()

    def backbone_layer_groups(self) -> list[list[nn.Parameter]]:
        by_name = dict(self.backbone.named_parameters())
        return [[by_name[n] for n in names] for names in self.backbone.layer_groups() if names]

    def adapter_host(self) -> nn.Module:
        return self.backbone.body.model  # the timm feature network

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"detector.{k}": v for k, v in self.detector.state_dict().items()}

    # ------------------------------------------------------------------ steps

    def training_losses(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]]
                        ) -> tuple[dict[str, torch.Tensor], int]:
        images, targets = batch
        # Crowd regions are kept in the data for the metrics to ignore, but torchvision would train
        # on them as objects: the training targets leave them out. VOC "difficult" objects train.
        trainable = []
        for t in targets:
            keep = ~t["iscrowd"].bool() if "iscrowd" in t else torch.ones(len(t["boxes"]), dtype=torch.bool)
            trainable.append({"boxes": t["boxes"][keep], "labels": t["labels"][keep]})
        losses = self(images, trainable)
        return {k: v.float() for k, v in losses.items()}, len(images)

    def validation_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> None:
        images, targets = batch
        self.val_metrics.update(self(images), targets)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # COCOeval over every val image (gathered under DDP)
        keys = ("map", "map_50", "map_75", "mar_100")
        self.log_dict({f"val/{k}": values[k].float() for k in keys}, prog_bar=True)
        self.val_metrics.reset()
