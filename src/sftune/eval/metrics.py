"""Streaming classification metrics (torchmetrics): nothing keeps every logit in memory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MultilabelAccuracy,
    MultilabelExactMatch,
    MultilabelF1Score,
    MultilabelPrecision,
    MultilabelRecall,
)

HEADLINE = ("acc", "precision", "recall", "f1")


def classification_metrics(num_classes: int, sync: bool = True, multi_label: bool = False) -> MetricCollection:
    """Accuracy (micro) and macro precision/recall/F1 — each class counts equally in the macro ones.

    Multi-label (logits are per-class sigmoid scores, threshold 0.5): ``acc`` is the
    per-label accuracy, ``exact_match`` the share of samples with every label right,
    ``f1_micro`` pools all labels, ``f1`` averages the per-label F1.
    ``sync=False`` for a single process evaluating alone inside a distributed job
    (the final bundle evaluation on rank 0): no collective calls to other ranks.
    """
    common = {"sync_on_compute": sync}
    if multi_label:
        return MetricCollection(
            {
                "acc": MultilabelAccuracy(num_classes, average="micro", **common),
                "exact_match": MultilabelExactMatch(num_classes, **common),
                "precision": MultilabelPrecision(num_classes, average="macro", zero_division=0, **common),
                "recall": MultilabelRecall(num_classes, average="macro", zero_division=0, **common),
                "f1": MultilabelF1Score(num_classes, average="macro", zero_division=0, **common),
                "f1_micro": MultilabelF1Score(num_classes, average="micro", zero_division=0, **common),
            }
        )
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **common),
            "precision": MulticlassPrecision(num_classes, average="macro", zero_division=0, **common),
            "recall": MulticlassRecall(num_classes, average="macro", zero_division=0, **common),
            "f1": MulticlassF1Score(num_classes, average="macro", zero_division=0, **common),
        }
    )


def evaluate_logits(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                    multi_label: bool = False) -> dict[str, float]:
    """Headline metrics and mean loss over ``(logits (B, C), labels)`` batches, streamed.

    Labels are class indices (B,), or multi-hot (B, C) with ``multi_label`` (loss = BCE summed over
    classes; ``per_label_f1`` lists each label's F1).
    """
    metrics = classification_metrics(num_classes, sync=False, multi_label=multi_label)
    per_label = MultilabelF1Score(num_classes, average=None, zero_division=0, sync_on_compute=False) if multi_label else None
    loss_sum, n = 0.0, 0
    for logits, labels in batches:
        logits = logits.float()
        if multi_label:
            metrics.update(logits.sigmoid(), labels.int())
            per_label.update(logits.sigmoid(), labels.int())
            loss_sum += torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="sum").item()
        else:
            metrics.update(logits, labels)
            loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        n += len(labels)
    if n == 0:
        return {"n": 0}
    result: dict[str, Any] = {k: float(v) for k, v in metrics.compute().items()}
    result["loss"] = loss_sum / n
    if per_label is not None:  # F1 of each label, in class-index order
        result["per_label_f1"] = [round(float(v), 6) for v in per_label.compute()]
    result["n"] = n
    return result
