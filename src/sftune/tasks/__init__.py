"""One LightningModule per task kind; classification serves images and text alike."""

from .classification import Classifier

__all__ = ["Classifier"]
