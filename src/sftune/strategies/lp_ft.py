from __future__ import annotations

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from .base import STRATEGIES, ParamGroup, Strategy, backbone_params, head_params


@STRATEGIES.register("lp_ft")
@dataclass
class LinearProbeThenFineTune(Strategy):
    """LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): first fit
    the head to convergence on frozen features, then fine-tune everything from that head.

    The probe is an L2-regularised logistic regression solved with L-BFGS on the
    cached features (the feature cache makes it take seconds); fine-tuning then
    starts from a head that already fits, so early gradients do not distort the
    pretrained features, and uses a small LR for the whole network.
    """

    name = "lp_ft"
    default_lr = 1e-4
    summary = "head fitted to convergence on cached frozen features (L-BFGS), then everything fine-tunes from it"
    probes_head = True
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)
    probe_l2: float = Field(1e-3, ge=0, description="L2 penalty on the probe's weights (sum of squares)")
    probe_steps: int = Field(100, ge=1, le=10_000, description="L-BFGS iterations of the probe")

    def param_groups(self, task) -> list[ParamGroup]:
        return [
            ParamGroup("head", head_params(task)),
            ParamGroup("backbone", backbone_params(task), lr_scale=self.backbone_lr_scale),
        ]

    def fit_probe(self, fc: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Fit ``fc`` (F -> C) to ``features (N, F)`` / ``labels``: class indices (N,) (softmax
        cross-entropy) or multi-hot (N, C) (sigmoid BCE, multi-label); return the loss before and after."""
        optimizer = torch.optim.LBFGS(fc.parameters(), lr=1.0, max_iter=self.probe_steps, history_size=20,
                                      line_search_fn="strong_wolfe")
        multi_label = labels.ndim == 2

        def loss_fn() -> torch.Tensor:
            logits = fc(features)
            fit = (torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float()) if multi_label
                   else torch.nn.functional.cross_entropy(logits, labels))
            return fit + self.probe_l2 * fc.weight.pow(2).sum()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        with torch.enable_grad():
            before = float(loss_fn().detach())
            optimizer.step(closure)
            after = float(loss_fn().detach())
        return before, after
