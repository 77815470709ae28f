"""Semantic segmentation as a TaskModule: encoder feature pyramid -> smp decoder -> per-pixel logits.

The encoder is the module's ``backbone`` (what strategies freeze, unfreeze and decay layer by
layer); the decoder and the 1x1 segmentation head are the task's head. Losses: pixel-wise
cross-entropy that skips ``ignore_index`` pixels, plus (``task.dice_weight`` > 0) the soft Dice
loss of smp (Milletari et al. 2016, V-Net), which helps small classes; both are logged.
Validation streams a confusion matrix (metrics.py), never every pixel's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...config import TrainConfig
from ...strategies import Strategy
from ..base import TaskModule
from .metrics import SegmentationMetric
from .model import SegmentationNet


class Segmenter(TaskModule):
    """images (B, 3, H, W) -> logits (B, C, H, W) for any H, W (padded to the encoder's stride, cropped back)."""

    def __init__(self, net: SegmentationNet, strategy: Strategy, train_cfg: TrainConfig, ignore_index: int,
                 dice_weight: float = 0.0, class_weights: torch.Tensor | None = None) -> None:
        super().__init__(strategy, train_cfg)
        # The network's parts are registered here directly (not as one `net` child) so the
        # checkpoint keys read backbone.* / decoder.* / segmentation_head.*.
        self.backbone = net.encoder
        self.decoder = net.decoder
        self.segmentation_head = net.segmentation_head
        self.pad_to = net.pad_to
        self.num_classes = net.num_classes
        self.decoder_name = net.decoder_name
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(self.num_classes),
                             persistent=False)
        self.dice = None
        if dice_weight > 0:
            from segmentation_models_pytorch.losses import DiceLoss

            self.dice = DiceLoss(mode="multiclass", ignore_index=ignore_index)
            self.loss_weights = {"ce": 1.0, "dice": dice_weight}
        self.val_metrics = SegmentationMetric(self.num_classes, ignore_index=ignore_index)
        self.setup_strategy()

    # ------------------------------------------------------------------ model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        pad_h, pad_w = -h % self.pad_to, -w % self.pad_to
        if pad_h or pad_w:  # zero = the mean colour after normalization; cropped off the logits below
            images = F.pad(images, (0, pad_w, 0, pad_h))
        features = self.backbone_features(images)  # [(B, C_i, H / 2^i, W / 2^i)], under no_grad when frozen
        logits = self.segmentation_head(self.decoder(features))  # (B, C, H_padded, W_padded)
        return logits[..., :h, :w]

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.decoder.parameters(), *self.segmentation_head.parameters()]

    def backbone_layer_groups(self) -> list[list[nn.Parameter]]:
        by_name = dict(self.backbone.named_parameters())
        return [[by_name[n] for n in names] for names in self.backbone.layer_groups() if names]

    def adapter_host(self) -> nn.Module:
        return self.backbone.body.model  # the timm feature network inside smp's encoder wrapper

    def head_state(self) -> dict[str, torch.Tensor]:
        """Decoder + segmentation head weights (the bundle's ``head.*`` tensors)."""
        return {**{f"decoder.{k}": v for k, v in self.decoder.state_dict().items()},
                **{f"segmentation_head.{k}": v for k, v in self.segmentation_head.state_dict().items()}}

    # ------------------------------------------------------------------ steps

    def _losses(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()  # losses in fp32 under bf16 autocast
        losses = {"ce": F.cross_entropy(logits, masks, weight=self.class_weights, ignore_index=self.ignore_index)}
        if self.dice is not None:
            losses["dice"] = self.dice(logits, masks)
        if not (masks != self.ignore_index).any():  # a crop of void only: nothing to learn, not NaN
            losses = {k: logits.sum() * 0.0 for k in losses}
        return losses

    def training_losses(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        images, masks = batch
        return self._losses(self(images), masks), len(images)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, masks = batch
        logits = self(images)
        losses = self._losses(logits, masks)
        loss = sum(self.loss_weights.get(k, 1.0) * v for k, v in losses.items())
        self.val_metrics.update(logits.argmax(1), masks)
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=len(images))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # summed confusion matrix; synced across processes under DDP
        self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=True)
        self.val_metrics.reset()

