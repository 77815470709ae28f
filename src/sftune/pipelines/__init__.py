"""Modalities: how raw items are found, decoded, batched and encoded (images, text).

A pipeline finds the labeled data, builds the backbone, and serves batches either
as raw inputs (a LightningDataModule) or as cached frozen-backbone features. Each
task (tasks/) picks its pipeline; the engine, strategies and bundle code never ask
which modality they are working with.
"""

from __future__ import annotations

from .base import Pipeline

__all__ = ["Pipeline"]
