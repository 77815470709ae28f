from __future__ import annotations

from pydantic import Field
from pydantic.dataclasses import dataclass

from ..errors import SftuneError
from .base import STRATEGIES, ParamGroup, Strategy, backbone_layer_groups, head_params


@STRATEGIES.register("gradual_unfreeze")
@dataclass
class GradualUnfreeze(Strategy):
    """Head first, then the backbone from the top down, one stage every ``unfreeze_every`` epochs.

    ULMFiT's gradual unfreezing (Howard & Ruder 2018): the backbone's layer groups
    (timm's group_matcher, input side first) are split into ``stages`` contiguous
    chunks; the chunk nearest the head unfreezes at epoch ``unfreeze_every``, the
    next at ``2 * unfreeze_every``, ..., all at ``backbone_lr_scale`` x the head LR,
    each warming up from 0 when it starts.
    """

    name = "gradual_unfreeze"
    default_lr = 1e-3
    summary = "head first, then backbone stages top-down every unfreeze_every epochs"
    stages: int = Field(4, ge=1, le=64)
    unfreeze_every: int = Field(1, ge=1)
    backbone_lr_scale: float = Field(0.1, gt=0, le=1)

    def param_groups(self, task) -> list[ParamGroup]:
        layers = backbone_layer_groups(task)
        n = min(self.stages, len(layers))
        # Contiguous chunks of layer groups, input side first: chunk i holds layers[bounds[i]:bounds[i+1]].
        bounds = [round(i * len(layers) / n) for i in range(n + 1)]
        groups = [ParamGroup("head", head_params(task))]
        for i in range(n):
            depth_from_top = n - i  # the last chunk (next to the head) unfreezes first
            params = [p for layer in layers[bounds[i] : bounds[i + 1]] for p in layer]
            groups.append(ParamGroup(f"backbone.stage{i}", params, lr_scale=self.backbone_lr_scale,
                                     start_epoch=depth_from_top * self.unfreeze_every))
        return groups

    def min_epochs(self) -> int:
        return self.stages * self.unfreeze_every + 1

    def fit_budget(self, epochs: int, given: set[str]) -> dict[str, object]:
        # The last stage must start before the last epoch: fewer stages (then a stage every epoch)
        # when the defaults (4 stages, one per epoch) do not fit the budget.
        if self.stages * self.unfreeze_every < epochs or epochs < 2:
            return {}
        changed: dict[str, object] = {}
        if "unfreeze_every" not in given and self.unfreeze_every > 1:
            self.unfreeze_every = max(1, (epochs - 1) // self.stages)
            changed["unfreeze_every"] = self.unfreeze_every
        if "stages" not in given and self.stages * self.unfreeze_every >= epochs:
            self.stages = max(1, (epochs - 1) // self.unfreeze_every)
            changed["stages"] = self.stages
        return changed

    def check(self, epochs: int) -> None:
        last = self.stages * self.unfreeze_every
        if last >= epochs:
            raise SftuneError(
                f"strategy gradual_unfreeze unfreezes its last stage at epoch {last} "
                f"(stages {self.stages} x unfreeze_every {self.unfreeze_every}), but train.epochs is {epochs}; "
                f"train longer or use fewer stages"
            )
