"""Streaming classification metrics (torchmetrics): nothing keeps every logit in memory."""

from __future__ import annotations

from collections.abc import Iterable

import torch
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


def evaluate_logits(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> dict[str, float]:
    """Headline metrics and mean cross-entropy over ``(logits (B, C), labels (B,))`` batches, streamed."""
    metrics = classification_metrics(num_classes, sync=False)
    loss_sum, n = 0.0, 0
    for logits, labels in batches:
        logits = logits.float()
        metrics.update(logits, labels)
        loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        n += len(labels)
    if n == 0:
        return {"n": 0}
    result: dict[str, float] = {k: float(v) for k, v in metrics.compute().items()}
    result["loss"] = loss_sum / n
    result["n"] = n
    return result
