"""What a bundle says about each example of a labeled set: the raw material of reports,
comparisons and drift checks.

Only (N, C) scores are kept (and, on request, (N, F) pooled features), never
per-token or per-pixel outputs, so a 100k-example evaluation stays in the tens of MB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Outputs:
    """Per-example results of one model on one labeled data set, in data order.

    ``logits`` (N, C) float32: softmax scores for single-label models; for multi-label models
    per-class sigmoid logits shifted so that 0 is each class's tuned threshold.
    ``targets``: (N,) class indices, or (N, C) multi-hot. ``items``: the image path or text of
    each example (what a person looks at in a gallery of mistakes). ``features``: (N, F) pooled
    backbone features when asked for, else None.
    """

    classes: list[str]
    logits: torch.Tensor
    targets: torch.Tensor
    items: list[str]
    multi_label: bool = False
    features: torch.Tensor | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what changed the inputs (e.g. long texts truncated): warned
    truncated: int | None = None  # texts longer than the model's max_length (None: inputs are not texts)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def probs(self) -> torch.Tensor:
        """(N, C): softmax probabilities, or per-class sigmoid probabilities for multi-label."""
        return self.logits.sigmoid() if self.multi_label else self.logits.softmax(dim=-1)

    @property
    def predicted(self) -> torch.Tensor:
        """(N,) predicted class index, or (N, C) bool for multi-label."""
        return self.logits > 0 if self.multi_label else self.logits.argmax(dim=-1)

    def names(self, row: torch.Tensor) -> str | list[str]:
        """The class name of a class index, or the names of a multi-hot / boolean row's classes."""
        if row.ndim == 0:
            return self.classes[int(row)]
        return [self.classes[c] for c in row.nonzero().flatten().tolist()]

    def headline(self) -> dict[str, Any]:
        """metrics.json's numbers (accuracy, macro precision/recall/F1, loss, n) of these outputs."""
        from .metrics import evaluate_logits

        return evaluate_logits([(self.logits, self.targets)], len(self.classes), multi_label=self.multi_label)

    @property
    def correct(self) -> torch.Tensor:
        """(N,) bool: the prediction is right (multi-label: every label right)."""
        if self.multi_label:
            return (self.predicted == self.targets.bool()).all(dim=1)
        return self.predicted == self.targets


def describe_item(sample: Any) -> str:
    """How an example shows in reports: an image's path, a text, or "text ⟂ pair" for sentence pairs."""
    if hasattr(sample, "path"):
        return str(sample.path)
    pair = getattr(sample, "text_pair", None)
    return sample.text if pair is None else f"{sample.text} ⟂ {pair}"


def gather(classes: list[str], items: list[str], batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
           multi_label: bool = False, skipped: list[tuple[str, str]] | None = None) -> Outputs:
    """Concatenate ``(logits, targets, features or None)`` batches into one :class:`Outputs`."""
    logits, targets, features = [], [], []
    for batch_logits, batch_targets, batch_features in batches:
        logits.append(batch_logits.float().cpu())
        targets.append(batch_targets.cpu())
        if batch_features is not None:
            features.append(batch_features.float().cpu())
    num_classes = len(classes)
    return Outputs(
        classes=classes,
        logits=torch.cat(logits) if logits else torch.zeros(0, num_classes),
        targets=torch.cat(targets) if targets else torch.zeros((0, num_classes) if multi_label else (0,), dtype=torch.long),
        items=items,
        multi_label=multi_label,
        features=torch.cat(features) if features else None,
        skipped=list(skipped or []),
    )
