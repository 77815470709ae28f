from __future__ import annotations

from pydantic.dataclasses import dataclass

from .base import STRATEGIES, ParamGroup, Strategy, head_params


@STRATEGIES.register("linear_probe")
@dataclass
class LinearProbe(Strategy):
    """Backbone frozen (weights and BatchNorm statistics); only the head trains."""

    name = "linear_probe"
    default_lr = 3e-3
    summary = "train the head only; backbone weights and BatchNorm statistics frozen"

    def param_groups(self, task) -> list[ParamGroup]:
        return [ParamGroup("head", head_params(task))]
