"""Streaming classification metrics (torchmetrics): nothing keeps every logit in memory."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

HEADLINE = ("acc", "precision", "recall", "f1")


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy (micro) and macro precision/recall/F1 — each class counts equally in the macro ones."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro", zero_division=0),
            "recall": MulticlassRecall(num_classes, average="macro", zero_division=0),
            "f1": MulticlassF1Score(num_classes, average="macro", zero_division=0),
        }
    )
