"""Train/eval transforms from the backbone's pretrained preprocessing config."""

from __future__ import annotations

from typing import Any, Callable

from ..config import DataConfig


def build_transforms(data_cfg: dict[str, Any], cfg: DataConfig) -> tuple[Callable, Callable]:
    """``data_cfg`` is timm's resolved config (input_size, mean, std, crop_pct, interpolation).

    Training: RandomResizedCrop(scale) + flip + colour jitter (timm's standard
    recipe). Eval: resize to size / crop_pct, then centre crop.
    """
    from timm.data import create_transform

    common = dict(
        input_size=data_cfg["input_size"],
        interpolation=data_cfg["interpolation"],
        mean=data_cfg["mean"],
        std=data_cfg["std"],
    )
    train = create_transform(
        **common,
        is_training=True,
        scale=tuple(cfg.crop_scale),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter if cfg.color_jitter > 0 else None,
    )
    evaluate = create_transform(**common, is_training=False, crop_pct=data_cfg.get("crop_pct", 0.875))
    return train, evaluate
