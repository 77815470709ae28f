"""The backbone contract every strategy and task relies on.

A :class:`Backbone` wraps a timm model whose classifier was removed: images
``(B, 3, H, W)`` in, pooled features ``(B, num_features)`` out. Strategies talk
to it through :meth:`layer_groups` (ordered input -> output), never through
attribute names, so any timm architecture works with every strategy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Backbone(nn.Module):
    def __init__(self, model: nn.Module, arch: str, source: str) -> None:
        super().__init__()
        model.reset_classifier(0)  # forward() now returns pooled pre-logits features
        self.model = model
        self.arch = arch  # timm architecture name, enough to rebuild it without weights
        self.source = source  # what the user asked for, e.g. "efficientnet_lite0" or "file:x.pth"
        self.num_features: int = int(model.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)  # (B, num_features)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)  # unpooled, e.g. (B, C, h, w)

    def layer_groups(self) -> list[list[str]]:
        """Parameter names of ``self.model`` grouped by depth, input side first.

        Uses timm's per-architecture ``group_matcher`` (stem, then each stage)
        so layer-wise strategies need no knowledge of the architecture.
        """
        from timm.models import group_parameters

        matcher = getattr(self.model, "group_matcher", None)
        if matcher is None:
            return [[n for n, _ in self.model.named_parameters()]]
        groups = group_parameters(self.model, matcher(coarse=False))
        return [names for _, names in sorted(groups.items())]

    def data_config(self, image_size: int | None = None) -> dict[str, Any]:
        """Preprocessing from the pretrained config: input_size, mean, std, crop_pct, interpolation."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=self.model)
        if image_size is not None:
            cfg["input_size"] = (3, image_size, image_size)
        return cfg

    def weights(self) -> dict[str, torch.Tensor]:
        """State dict with timm's own key names (readable without sftune); LoRA adapters merged in."""
        from ..adapters import plain_state_dict

        return plain_state_dict(self.model)

    def load_weights(self, state: dict[str, torch.Tensor], origin: str) -> None:
        from ..errors import SftuneError

        result = self.model.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise SftuneError(
                f"{origin}: weights do not fit architecture '{self.arch}': missing {len(result.missing_keys)} "
                f"tensors (e.g. {result.missing_keys[0]}); pass the architecture they were trained with via model.arch"
            )
