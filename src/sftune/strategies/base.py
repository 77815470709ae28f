"""What a fine-tuning strategy decides: which parameters train, from when, how fast.

A strategy returns :class:`ParamGroup` objects. The engine turns them into
optimizer param groups once, for the whole run, and derives everything else
from the epoch number:

* a group trains from ``start_epoch`` on; before that its parameters have
  ``requires_grad=False`` and its LR multiplier is 0;
* parameters in no group never train (and BatchNorm layers whose parameters
  don't train keep their running statistics).

Because the optimizer layout never changes and trainability is a function of
the epoch, resuming a checkpoint restores exactly the same state — unlike
callbacks that add param groups mid-run (Lightning issues #6891, #21901).
Adding a strategy = one new class registered in ``STRATEGIES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from .._registry import Registry

if TYPE_CHECKING:
    from ..tasks.base import TaskModule


@dataclass
class ParamGroup:
    name: str
    params: list[nn.Parameter]
    lr_scale: float = 1.0  # multiplies train.lr
    start_epoch: int = 0  # frozen (requires_grad False, LR 0) before this epoch


class Strategy:
    """Base class; subclasses are pydantic dataclasses whose fields are their options."""

    name: ClassVar[str]
    default_lr: ClassVar[float]
    summary: ClassVar[str]
    probes_head: ClassVar[bool] = False  # True: fit_probe() fits the head on frozen features before training
    keeps_start_weights: ClassVar[bool] = False  # True: the engine saves the weights training starts from for after_fit()

    def solves_head(self) -> bool:
        """True: the head is fitted on cached features by ``fit_probe()`` and no training loop runs
        (``linear_probe``'s L-BFGS solver), where the task has a linear head on cached pooled
        features; elsewhere the strategy's param groups train as usual."""
        return False

    def prepare(self, task: "TaskModule") -> None:
        """Change the model before its param groups are taken (e.g. inject LoRA adapters)."""

    def param_groups(self, task: "TaskModule") -> list[ParamGroup]:
        raise NotImplementedError

    def after_fit(self, task: "TaskModule", start: dict[str, torch.Tensor] | None,
                  evaluate: Callable[[], dict[str, float]]) -> dict[str, Any] | None:
        """Adjust the best weights after training (e.g. WiSE-FT interpolation); returns a report
        for metrics.json. ``start``: the task's state dict before training (keeps_start_weights);
        ``evaluate()``: val metrics of the task's current weights."""
        return None

    def min_epochs(self) -> int:
        """Epochs that must run before early stopping may end the run."""
        return 0

    def check(self, epochs: int) -> None:
        """Reject options that cannot work with the run's epoch budget (raise SftuneError)."""

    def fit_budget(self, epochs: int, given: set[str]) -> dict[str, Any]:
        """Scale options the user did not set (not in ``given``) to the epoch budget; return the
        changed options (empty when none changed). An option the user set is never changed:
        :meth:`check` refuses it if it cannot work."""
        return {}


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


# Strategies reach a model only through the task module's explicit methods (tasks/base.py
# TaskModule), never attribute names: every task (classification, segmentation, ...) fits.


def head_params(task: "TaskModule") -> list[nn.Parameter]:
    return task.head_parameters()


def backbone_params(task: "TaskModule") -> list[nn.Parameter]:
    return task.backbone_parameters()


def backbone_layer_groups(task: "TaskModule") -> list[list[nn.Parameter]]:
    """The backbone's parameters grouped by depth, input side first (timm's group_matcher)."""
    return task.backbone_layer_groups()
