"""Semantic segmentation: a per-pixel class for every image, on the task contract (tasks/base.py)."""

from .task import SegmentationOptions, SemanticSegmentation

__all__ = ["SegmentationOptions", "SemanticSegmentation"]
