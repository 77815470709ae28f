from __future__ import annotations

from pydantic.dataclasses import dataclass
from torch import nn

from .base import STRATEGIES, ParamGroup, Strategy, head_params

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


@STRATEGIES.register("bitfit")
@dataclass
class BitFit(Strategy):
    """Only the backbone's biases and normalisation layers train, plus the head.

    BitFit (Ben Zaken et al. 2022) tunes bias terms alone; norm-layer scales are
    included, as is common for convnets whose convolutions have no bias. Batch-norm
    statistics keep updating since their layers train.
    """

    name = "bitfit"
    default_lr = 1e-3
    summary = "train backbone biases and norm layers (+ head); weights of convs/linears frozen"

    def param_groups(self, task) -> list[ParamGroup]:
        chosen: dict[int, nn.Parameter] = {}
        for module in task.backbone.modules():
            for name, param in module.named_parameters(recurse=False):
                if isinstance(module, _NORMS) or name == "bias":
                    chosen[id(param)] = param
        return [ParamGroup("head", head_params(task)), ParamGroup("backbone.bias_norm", list(chosen.values()))]
