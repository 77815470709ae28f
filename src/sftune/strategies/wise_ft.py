from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from ..errors import SftuneError
from .base import STRATEGIES
from .lp_ft import LinearProbeThenFineTune


@STRATEGIES.register("wise_ft")
@dataclass
class WeightSpaceEnsemble(LinearProbeThenFineTune):
    """WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): fine-tune,
    then average the weights of the starting point and of the fine-tuned model,
    theta(alpha) = (1 - alpha) * theta_start + alpha * theta_ft.

    The starting point is the pretrained backbone with a head fitted on its frozen
    features (the LP-FT probe: our stand-in for CLIP's zero-shot head), so alpha = 0
    is the linear probe and alpha = 1 the LP-FT model. Val accuracy is reported for
    every alpha of the grid; ``alpha: val`` keeps the best one (then the reported val
    accuracy is optimistic: it also chose alpha), a number fixes it (paper default 0.5).
    """

    name = "wise_ft"
    default_lr = 1e-4
    summary = "LP-FT, then the weights are interpolated between the probe start and the fine-tuned model (alpha)"
    keeps_start_weights = True
    alpha: float | Literal["val"] = Field(0.5, description="interpolation weight of the fine-tuned model, or 'val' to pick it on the val set")
    alphas: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], description="grid evaluated and reported")

    def check(self, epochs: int) -> None:
        bad = [a for a in self.alphas + ([self.alpha] if self.alpha != "val" else []) if not 0 <= a <= 1]
        if bad:
            raise SftuneError(f"strategy.alpha/alphas: interpolation weights must lie in [0, 1] (got {bad[0]})")

    def after_fit(self, task, start: dict[str, torch.Tensor] | None,
                  evaluate: Callable[[], dict[str, float]]) -> dict[str, Any]:
        if start is None:
            raise SftuneError("wise_ft: the run's starting weights are missing (checkpoints/start.safetensors); "
                              "start a new run")
        finetuned = {k: v.detach().clone() for k, v in task.state_dict().items()}
        grid = sorted(set(self.alphas) | ({self.alpha} if self.alpha != "val" else set()))
        scores = []
        for alpha in grid:
            task.load_state_dict(interpolate(start, finetuned, alpha))
            metrics = evaluate()
            scores.append({"alpha": alpha, "acc": metrics["acc"], "f1": metrics["f1"]})
        chosen = max(scores, key=lambda s: (s["acc"], s["alpha"]))["alpha"] if self.alpha == "val" else self.alpha
        task.load_state_dict(interpolate(start, finetuned, chosen))
        return {"alpha": chosen, "chosen_on": "val" if self.alpha == "val" else "config", "alphas": scores}


def interpolate(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * start + alpha * end for floating tensors; counters (BatchNorm's
    num_batches_tracked) come from ``end``."""
    out = {}
    for key, value in end.items():
        if value.is_floating_point():
            out[key] = torch.lerp(start[key].to(value.dtype), value, alpha)
        else:
            out[key] = value
    return out
