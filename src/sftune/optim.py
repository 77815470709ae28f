"""Optimizer and LR schedule from a strategy's param groups.

The optimizer comes from timm's factory (``adamw``, ``sgd``, ``lamb``, ``lion`` ...,
every name of ``timm.optim.list_optimizers()``); sftune only decides the groups:
one per strategy group and decay kind, with no weight decay on biases and norm
weights (ndim <= 1), and the group's LR = train.lr x the strategy's lr_scale.

The schedule is one LR multiplier per optimizer group (torch ``LambdaLR``), as a
function of the optimizer step. A group that starts training at epoch k (freeze
then unfreeze) gets multiplier 0 before step k x steps_per_epoch and its own
warm-up from there, so the optimizer layout never changes during a run.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .errors import SftuneError, did_you_mean

SCHEDULES = ("cosine", "onecycle", "constant")

# One-cycle constants of torch.optim.lr_scheduler.OneCycleLR (Smith & Topin 2018), as multipliers of the peak LR.
ONECYCLE_START = 1 / 25  # div_factor=25
ONECYCLE_END = ONECYCLE_START / 1e4  # final_div_factor=1e4
ONECYCLE_RISE = 0.3  # pct_start: share of the group's steps spent rising to the peak

# SGD needs a larger step than Adam-style optimizers for the same progress; strategies'
# default LRs are tuned for AdamW, so SGD without an explicit train.lr uses this multiple.
SGD_DEFAULT_LR_FACTOR = 10.0


def check_optimizer_name(name: str) -> str:
    """The timm optimizer name, or a one-line error listing the close ones."""
    from timm.optim import list_optimizers

    known = list_optimizers()
    if name.lower() not in known:
        raise SftuneError(f"config: train.optimizer: unknown optimizer '{name}'{did_you_mean(name, known)}; "
                          f"common ones: adamw, sgd, lamb, lion, adan (all: timm.optim.list_optimizers())")
    return name.lower()


def default_lr(strategy_lr: float, optimizer: str) -> float:
    sgd_like = "sgd" in optimizer or optimizer in ("momentum", "nesterov", "nesterovw")  # sgd, sgdw, sgdp, csgdc...
    return strategy_lr * SGD_DEFAULT_LR_FACTOR if sgd_like else strategy_lr


def build_optimizer(groups: Sequence[dict], name: str, weight_decay: float, momentum: float,
                    fused: bool = False) -> torch.optim.Optimizer:
    """``groups``: torch param-group dicts that already carry their own ``lr`` and ``weight_decay``."""
    from timm.optim import create_optimizer_v2

    kwargs = {"fused": True} if fused and name == "adamw" else {}
    try:
        return create_optimizer_v2(list(groups), opt=name, weight_decay=weight_decay, momentum=momentum, **kwargs)
    except (ImportError, ValueError, AssertionError) as e:
        raise SftuneError(f"config: train.optimizer '{name}' cannot be created here: {str(e).splitlines()[0]}") from None


def lr_multiplier(schedule: str, start: int, warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier at optimizer step ``s`` for a group that trains from step ``start``.

    * ``cosine``: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``
      (the decay follows the run's global progress, so late groups join mid-decay).
    * ``onecycle``: torch's OneCycleLR curve over the group's own steps: cosine rise from
      peak/25 to the peak over the first 30%, cosine fall to peak/25e4 at ``total``.
    * ``constant``: linear warm-up, then flat.
    """
    if schedule not in SCHEDULES:
        raise SftuneError(f"config: train.schedule: unknown schedule '{schedule}'; use one of {', '.join(SCHEDULES)}")

    def cosine(step: int) -> float:
        if step < start:
            return 0.0
        ramp = min(1.0, (step - start + 1) / max(1, warmup))
        progress = min(1.0, step / max(1, total))
        return ramp * 0.5 * (1.0 + math.cos(math.pi * progress))

    def constant(step: int) -> float:
        return 0.0 if step < start else min(1.0, (step - start + 1) / max(1, warmup))

    def onecycle(step: int) -> float:
        if step < start:
            return 0.0
        span = max(1, total - start)
        rise = max(1, round(ONECYCLE_RISE * span))
        t = step - start
        if t < rise:
            return _cos_anneal(ONECYCLE_START, 1.0, t / rise)
        return _cos_anneal(1.0, ONECYCLE_END, min(1.0, (t - rise) / max(1, span - rise)))

    return {"cosine": cosine, "onecycle": onecycle, "constant": constant}[schedule]


def _cos_anneal(begin: float, end: float, fraction: float) -> float:
    return end + (begin - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
