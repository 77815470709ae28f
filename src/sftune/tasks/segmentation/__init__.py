"""Semantic segmentation: a per-pixel class for every image, on the task contract (tasks/base.py)."""
