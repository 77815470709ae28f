"""Fine-tuning strategies, one class each; ``create_strategy`` builds one from config."""

from __future__ import annotations

import dataclasses

from pydantic import ValidationError

from ..config import StrategyConfig
from ..errors import SftuneError, did_you_mean
from . import auto, bitfit, freeze_unfreeze, full, gradual_unfreeze, linear_probe, llrd, lora, lp_ft, wise_ft  # noqa: F401  (registers the classes)
from .base import STRATEGIES, ParamGroup, Strategy

__all__ = ["STRATEGIES", "ParamGroup", "Strategy", "create_strategy", "strategy_options", "strategy_options_of"]


def create_strategy(cfg: StrategyConfig) -> Strategy:
    cls = STRATEGIES.get(cfg.name)
    options = cfg.options()
    known = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in known:
            listed = ", ".join(known) if known else "none"
            raise SftuneError(
                f"config: unknown key 'strategy.{key}' for strategy '{cfg.name}'{did_you_mean(key, known)}; its options: {listed}"
            )
    try:
        return cls(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise SftuneError(f"config: strategy.{field}: {err['msg']} (got {err.get('input')!r})") from None


def strategy_options(cls: type[Strategy]) -> dict[str, object]:
    """Option names and their defaults, e.g. {"unfreeze_epoch": 3, "backbone_lr_scale": 0.1}."""
    defaults = cls()
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(cls)}


def strategy_options_of(strategy: Strategy) -> dict[str, object]:
    """A strategy instance as config: {"name": "lora", "rank": 8, ...}."""
    return {"name": strategy.name, **{f.name: getattr(strategy, f.name) for f in dataclasses.fields(strategy)}}
