"""Streaming classification metrics (torchmetrics): nothing keeps every logit in memory."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

HEADLINE = ("acc", "precision", "recall", "f1")


def classification_metrics(num_classes: int, sync: bool = True) -> MetricCollection:
    """Accuracy (micro) and macro precision/recall/F1 — each class counts equally in the macro ones.

    ``sync=False`` for a single process evaluating alone inside a distributed job
    (the final bundle evaluation on rank 0): no collective calls to other ranks.
    """
    common = {"sync_on_compute": sync}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **common),
            "precision": MulticlassPrecision(num_classes, average="macro", zero_division=0, **common),
            "recall": MulticlassRecall(num_classes, average="macro", zero_division=0, **common),
            "f1": MulticlassF1Score(num_classes, average="macro", zero_division=0, **common),
        }
    )
