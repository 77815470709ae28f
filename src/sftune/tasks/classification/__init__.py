"""Classification (single- and multi-label) over images and text."""

from .module import Classifier
from .task import Classification, ImageClassification, TextClassification

__all__ = ["Classification", "Classifier", "ImageClassification", "TextClassification"]
