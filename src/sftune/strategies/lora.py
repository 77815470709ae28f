from __future__ import annotations

from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn

from ..errors import SftuneError
from .base import STRATEGIES, ParamGroup, Strategy, head_params


@STRATEGIES.register("lora")
@dataclass
class LowRankAdapters(Strategy):
    """LoRA (Hu et al. 2021) via peft: the pretrained weights stay frozen; each targeted
    layer learns a low-rank update W + (alpha / r) * B @ A, plus the new head.

    Targets by default: every ``nn.Linear`` (attention qkv/proj and MLP layers of ViTs,
    query/key/value/dense of text encoders) and every dense ``nn.Conv2d`` (groups=1:
    the 1x1 expand/project convolutions of EfficientNet/MobileNet, ResNet convolutions).
    Depthwise and "same"-padding subclasses are left out: peft's conv adapter assumes a
    plain, non-grouped convolution. BatchNorm layers keep their pretrained statistics.
    The bundle's model.safetensors holds the merged weights (plain timm/transformers keys);
    adapters.safetensors holds the adapters alone.
    """

    name = "lora"
    default_lr = 1e-3
    summary = "pretrained weights frozen; low-rank adapters (peft) on linear and dense conv layers + the head train"
    rank: int = Field(8, ge=1, le=1024, description="rank r of each adapter")
    alpha: float = Field(16.0, gt=0, description="scale numerator: updates are multiplied by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    targets: list[str] | None = Field(None, description="module-name suffixes to adapt (default: every Linear and dense Conv2d)")
    adapter_lr_scale: float = Field(1.0, gt=0, le=10, description="adapter LR = train.lr x this")

    def prepare(self, task) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        model = task.adapter_host()
        names = self.target_modules(model)
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=names,
                            bias="none")
        inject_adapter_in_model(config, model)  # in place: the adapters become submodules of the backbone

    def target_modules(self, model: nn.Module) -> list[str]:
        if self.targets:
            names = [n for n, m in model.named_modules()
                     if any(n == t or n.endswith("." + t) for t in self.targets) and _adaptable(m)]
            if not names:
                raise SftuneError(f"strategy.targets: no Linear/dense Conv2d layer of the backbone is named like "
                                  f"{self.targets}; leave it unset to adapt every one")
            return names
        names = [n for n, m in model.named_modules() if _adaptable(m)]
        if not names:
            raise SftuneError("strategy lora: the backbone has no Linear or dense Conv2d layer to adapt; use bitfit or llrd")
        return names

    def param_groups(self, task) -> list[ParamGroup]:
        adapters = [p for n, p in task.adapter_host().named_parameters() if ".lora_" in n]
        return [ParamGroup("head", head_params(task)),
                ParamGroup("adapters", adapters, lr_scale=self.adapter_lr_scale)]


def _adaptable(module: nn.Module) -> bool:
    # Exact types on purpose: subclasses such as timm's Conv2dSame pad in forward(), which
    # peft's conv adapter would not repeat.
    if type(module) is nn.Linear:
        return True
    return type(module) is nn.Conv2d and module.groups == 1
