from __future__ import annotations

from pydantic import Field
from pydantic.dataclasses import dataclass

from ..errors import SftuneError
from .base import STRATEGIES, ParamGroup, Strategy, backbone_params, head_params


@STRATEGIES.register("freeze_unfreeze")
@dataclass
class FreezeUnfreeze(Strategy):
    """Head alone for ``unfreeze_epoch`` epochs, then everything, the backbone at a lower LR.

    The backbone's LR warms up again from 0 after unfreezing so the freshly
    trained head's gradients do not wreck pretrained features in one step.
    """

    name = "freeze_unfreeze"
    default_lr = 1e-3
    summary = "head only for unfreeze_epoch epochs, then everything (backbone at backbone_lr_scale x LR)"
    unfreeze_epoch: int = Field(3, ge=1)
    backbone_lr_scale: float = Field(0.1, gt=0, le=1)

    def param_groups(self, task) -> list[ParamGroup]:
        return [
            ParamGroup("head", head_params(task)),
            ParamGroup("backbone", backbone_params(task), lr_scale=self.backbone_lr_scale, start_epoch=self.unfreeze_epoch),
        ]

    def min_epochs(self) -> int:
        return self.unfreeze_epoch + 1

    def fit_budget(self, epochs: int, given: set[str]) -> dict[str, object]:
        # The default (3) needs 4+ epochs; a shorter run gives the head about a third of it.
        if "unfreeze_epoch" in given or self.unfreeze_epoch < epochs or epochs < 2:
            return {}
        self.unfreeze_epoch = max(1, epochs // 3)
        return {"unfreeze_epoch": self.unfreeze_epoch}

    def check(self, epochs: int) -> None:
        if self.unfreeze_epoch >= epochs:
            raise SftuneError(
                f"strategy.unfreeze_epoch ({self.unfreeze_epoch}) must be smaller than train.epochs ({epochs}); "
                f"lower it or train longer"
            )
