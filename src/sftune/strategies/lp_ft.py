from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from .base import STRATEGIES, ParamGroup, Strategy, backbone_params, head_params
from .probe import ProbeFit, fit_probe

if TYPE_CHECKING:
    from ..data import FeatureData


@STRATEGIES.register("lp_ft")
@dataclass
class LinearProbeThenFineTune(Strategy):
    """LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): first fit
    the head to convergence on frozen features, then fine-tune everything from that head.

    The probe is an L2-regularised logistic regression solved with L-BFGS on the
    cached features (strategies/probe.py, shared with ``linear_probe`` and ``auto``; the
    feature cache makes it take seconds); fine-tuning then
    starts from a head that already fits, so early gradients do not distort the
    pretrained features, and uses a small LR for the whole network.
    """

    name = "lp_ft"
    default_lr = 1e-4
    summary = "head fitted to convergence on cached frozen features (L-BFGS), then everything fine-tunes from it"
    probes_head = True
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)
    probe_l2: float | None = Field(None, ge=0, description="L2 strength of the probe (coefficient of the weights' sum of "
                                   "squares on the mean loss); unset: chosen on the val split from a grid")
    probe_steps: int = Field(500, ge=1, le=10_000, description="L-BFGS iterations per probe fit at most")
    probe_class_weight: Literal["balanced", "none"] = Field("balanced", description="per-class loss weights N / (C * count)")

    def param_groups(self, task) -> list[ParamGroup]:
        return [
            ParamGroup("head", head_params(task)),
            ParamGroup("backbone", backbone_params(task), lr_scale=self.backbone_lr_scale),
        ]

    def fit_probe(self, fc: torch.nn.Linear, features: "FeatureData", anchored: bool = False) -> ProbeFit:
        """Fit ``fc`` (F -> C) to the cached features: L2-regularised logistic regression (softmax
        cross-entropy for class indices, per-class sigmoid BCE for multi-hot labels) solved with
        L-BFGS, the same fit as ``linear_probe``'s (strategies/probe.py), L2 chosen on the val split
        unless ``probe_l2`` is set; ``anchored``: from and towards a parent's head (L2-SP)."""
        train_x, train_y = features.train_set.tensors
        val_x, val_y = features.val_set.tensors
        return fit_probe(fc, train_x, train_y, val_x, val_y, l2=self.probe_l2, class_weight=self.probe_class_weight,
                         max_iter=self.probe_steps, anchored=anchored)
