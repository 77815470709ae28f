from __future__ import annotations

from pydantic import Field
from pydantic.dataclasses import dataclass

from .base import STRATEGIES, ParamGroup, Strategy, backbone_params, head_params


@STRATEGIES.register("full")
@dataclass
class Full(Strategy):
    """Everything trains from the first step; the backbone at ``backbone_lr_scale`` x the head LR."""

    name = "full"
    default_lr = 1e-3
    summary = "train everything; backbone LR = backbone_lr_scale x head LR"
    backbone_lr_scale: float = Field(0.1, gt=0, le=1)

    def param_groups(self, task) -> list[ParamGroup]:
        return [
            ParamGroup("head", head_params(task)),
            ParamGroup("backbone", backbone_params(task), lr_scale=self.backbone_lr_scale),
        ]
