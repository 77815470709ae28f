from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import lightning as L
from torch import nn

from ..config import RunConfig
from ..data import FeatureData


class Pipeline:
    """One input kind. ``load()`` must run first; it sets ``data`` (train/val/classes/split/
    fingerprint/skipped) and ``backbone``."""

    kind: str  # the modality: "images", "text" (how a report shows an example)
    data: Any
    backbone: nn.Module
    convolutional: bool = True  # bf16 inference pays on CPUs for convolutions (precision.py)
    items_are_files: bool = True  # examples are files a report can show as thumbnails

    def __init__(self, config: RunConfig, workers: int, log: Callable[[str], None]) -> None:
        self.config = config
        self.workers = workers
        self.log = log
        self._features: FeatureData | None = None

    def load(self) -> None:
        raise NotImplementedError

    def features(self) -> FeatureData:
        """Frozen-backbone features of every train/val example (computed once, cached on disk)."""
        if self._features is None:
            self._features = self._compute_features()
        return self._features

    def _compute_features(self) -> FeatureData:
        raise NotImplementedError

    def datamodule(self) -> L.LightningDataModule:
        """Raw inputs (images, tokenized text) for training a backbone that changes."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line about the data, e.g. '245 train / 153 val images, 2 classes (given split)'."""
        raise NotImplementedError

    def save_inputs_spec(self, work: Path) -> None:
        """Whatever the bundle needs besides weights to read inputs as training did (e.g. a
        tokenizer); images need nothing (their preprocessing is in config.yaml)."""

    def lineage(self) -> dict[str, Any]:
        """The data part of lineage.json."""
        raise NotImplementedError
