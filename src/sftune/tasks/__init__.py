"""One LightningModule per task."""

from .image_classification import ImageClassifier

__all__ = ["ImageClassifier"]
