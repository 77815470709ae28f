"""What differs between input kinds (images, text), behind one interface the engine uses.

A pipeline finds the labeled data, builds the backbone, and serves batches either
as raw inputs (a LightningDataModule) or as cached frozen-backbone features. The
engine, strategies, task module and bundle are the same for every kind.
"""

from __future__ import annotations

from ..config import RunConfig
from .base import Pipeline


def create_pipeline(config: RunConfig, workers: int, log) -> Pipeline:
    if config.task == "text_classification":
        from .text import TextPipeline

        return TextPipeline(config, workers, log)
    from .images import ImagePipeline

    return ImagePipeline(config, workers, log)


__all__ = ["Pipeline", "create_pipeline"]
