"""Data: finding labeled images, reading them, transforms and loaders."""

from .datamodule import FeatureData, ImageClassificationData, ImageDataset, make_loader
from .images import load_rgb
from .sources import LabeledImages, Sample, find_labeled_images, find_unlabeled_images
from .transforms import build_transforms

__all__ = [
    "FeatureData",
    "ImageClassificationData",
    "ImageDataset",
    "LabeledImages",
    "Sample",
    "build_transforms",
    "find_labeled_images",
    "find_unlabeled_images",
    "load_rgb",
    "make_loader",
]
