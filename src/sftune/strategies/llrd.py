from __future__ import annotations

from pydantic import Field
from pydantic.dataclasses import dataclass

from .base import STRATEGIES, ParamGroup, Strategy, backbone_layer_groups, head_params


@STRATEGIES.register("llrd")
@dataclass
class LayerwiseLRDecay(Strategy):
    """Everything trains; each backbone layer group's LR shrinks geometrically towards the input.

    Layer-wise LR decay (BEiT, ELECTRA; timm's param_groups_layer_decay): with n
    layer groups (input side first), group i gets ``decay ** (n - i)`` x the head
    LR, so the layer next to the head gets ``decay`` x and the stem ``decay ** n`` x.
    """

    name = "llrd"
    default_lr = 1e-3
    summary = "everything trains; LR x decay^(distance from the head) per backbone layer group"
    decay: float = Field(0.75, gt=0, le=1)

    def param_groups(self, task) -> list[ParamGroup]:
        layers = backbone_layer_groups(task)
        n = len(layers)
        groups = [ParamGroup("head", head_params(task))]
        groups += [ParamGroup(f"backbone.layer{i}", params, lr_scale=self.decay ** (n - i)) for i, params in enumerate(layers)]
        return groups
