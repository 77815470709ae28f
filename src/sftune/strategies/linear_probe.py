from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn

from .base import STRATEGIES, ParamGroup, Strategy, head_params
from .probe import ProbeFit, fit_probe

if TYPE_CHECKING:
    from ..data import FeatureData


@STRATEGIES.register("linear_probe")
@dataclass
class LinearProbe(Strategy):
    """Backbone frozen (weights and BatchNorm statistics); only the head trains.

    ``solver: lbfgs`` (default), on tasks whose head is one linear layer on cached pooled
    features (classification over any modality): the head is fitted to convergence with
    L-BFGS as an L2-regularised logistic regression (multinomial; multi-label: per-class
    sigmoid/BCE), its L2 strength chosen on the validation split from a grid (k-fold
    cross-validation when there is none), classes weighted for imbalance (strategies/probe.py).
    No training loop runs: ``train.epochs``, ``train.lr`` and the batch size do not apply, and
    the run's val metrics are those of the fitted head. Tasks without such a head (segmentation,
    detection, a task that caches no features) and ``solver: sgd`` train the head with the
    run's optimizer for ``train.epochs`` epochs, as before.
    """

    name = "linear_probe"
    default_lr = 3e-3
    summary = ("fit the head only, backbone weights and BatchNorm statistics frozen; L-BFGS logistic regression on "
               "cached features (L2 chosen on val), or SGD epochs (solver=sgd)")
    solver: Literal["lbfgs", "sgd"] = Field("lbfgs", description="lbfgs: logistic regression to convergence on cached features; "
                                             "sgd: train.epochs of the run's optimizer")
    l2: float | None = Field(None, ge=0, description="lbfgs: L2 strength (coefficient of the weights' sum of squares on the "
                             "mean loss; scikit-learn C = 1 / (2 * l2 * N)); unset: chosen on the val split from a grid")
    class_weight: Literal["balanced", "none"] = Field("balanced", description="lbfgs: per-class loss weights N / (C * count)")
    max_iter: int = Field(500, ge=1, le=100_000, description="lbfgs: L-BFGS iterations per fit at most")

    def param_groups(self, task) -> list[ParamGroup]:
        return [ParamGroup("head", head_params(task))]

    def solves_head(self) -> bool:
        return self.solver == "lbfgs"

    def fit_probe(self, fc: nn.Linear, features: "FeatureData", anchored: bool = False) -> ProbeFit:
        """Fit ``fc`` (F -> C) on ``features``' train split, choosing L2 on its val split (strategies/probe.py);
        ``anchored``: ``fc`` holds a parent's head, which the fit starts from and is pulled towards (L2-SP)."""
        train_x, train_y = features.train_set.tensors
        val_x, val_y = features.val_set.tensors
        return fit_probe(fc, train_x, train_y, val_x, val_y, l2=self.l2, class_weight=self.class_weight,
                         max_iter=self.max_iter, anchored=anchored)
