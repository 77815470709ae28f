"""Object detection: boxes and classes for every object in an image, on the task contract (tasks/base.py)."""

from .task import DetectionOptions, ObjectDetection

__all__ = ["DetectionOptions", "ObjectDetection"]
