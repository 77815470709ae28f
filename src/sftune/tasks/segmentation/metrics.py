"""Semantic segmentation metrics from a streamed pixel confusion matrix.

Nothing here keeps logits or masks: every batch is folded into a (C, C) int64 confusion
matrix (rows = true class, columns = predicted class), and one such matrix per image for the
bootstrap over images (outputs.py). 11 classes cost 121 integers per image.

**The mIoU rule** (the README quotes this paragraph):

    Only pixels whose true label is a class index in [0, C) are scored; pixels labelled with
    the ignore index (255 by default) or any other value outside [0, C) are left out of every
    metric, and the out-of-range ones are counted so that a label mix-up shows. Each class's
    IoU = TP / (TP + FP + FN) is computed once over all scored pixels of the evaluated set
    (not averaged over images). A class with no true pixel and no predicted pixel in that set
    is *absent*: it has no IoU, is left out of the mean (scored neither 0 nor 1) and is listed
    under ``absent``. A class that is present in the truth but never predicted scores 0, and so
    does a class that is predicted but absent from the truth (all its pixels are false
    positives). mIoU is the mean IoU over the classes that are not absent. Mean Dice uses the
    same rule with Dice = 2TP / (2TP + FP + FN).

This is the rule of mmsegmentation's ``IoUMetric`` and of HF ``evaluate``'s ``mean_iou``
(both take the ``nanmean`` of per-class IoU, a class being NaN exactly when its union is
empty), and of torchmetrics 1.9's ``MulticlassJaccardIndex(average="macro")``. Elsewhere in
torchmetrics an absent class still reads as a number: ``average="none"`` gives it 0 (its
``zero_division``), older releases kept that 0 in the macro mean (torchmetrics #1693), and
``torchmetrics.segmentation.MeanIoU`` averages per-image scores and marks an absent class -1
(#2558, #2866). Here an absent class is None in per-class output and named in ``absent``.

Definitions follow Long et al. 2015 (*Fully Convolutional Networks for Semantic
Segmentation*, section 5): pixel accuracy = sum TP / scored pixels; frequency-weighted IoU =
sum over classes of (true pixels of the class / scored pixels) x IoU (an absent or predicted-
only class has weight 0). Dice is Sørensen-Dice (Dice 1945), the per-class F1 of pixels.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torchmetrics import Metric

DEFAULT_IGNORE_INDEX = 255  # the "void" / "unlabelled" mask value of Pascal VOC and Cityscapes (trainIds)
HEADLINE = ("miou", "pixel_acc", "mean_dice", "fw_iou")


def as_labels(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Predicted class indices (B, H, W) int64 from ``preds``: class indices (B, H, W) as they
    are, or per-class scores (B, C, H, W) (logits or probabilities) reduced by argmax.

    Raises ValueError when the shapes do not match ``target`` (B, H, W), or when ``preds`` has
    the target's shape but floating values (scores without a class axis).
    """
    if target.ndim != 3:
        raise ValueError(f"target must be (B, H, W) class indices, got shape {tuple(target.shape)}")
    if preds.ndim == 4:
        if preds.shape[:1] + preds.shape[2:] != target.shape:
            raise ValueError(f"scores {tuple(preds.shape)} do not match target {tuple(target.shape)}: "
                             "expected (B, C, H, W)")
        return preds.argmax(dim=1)
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} do not match target {tuple(target.shape)}: expected (B, H, W)")
    if preds.is_floating_point():
        raise ValueError("preds of shape (B, H, W) must be class indices (an integer tensor), got floating values")
    return preds.long()


def confusion_per_image(preds: torch.Tensor, target: torch.Tensor, num_classes: int,
                        ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> tuple[torch.Tensor, int, int]:
    """One (C, C) confusion matrix per image of a batch, on the inputs' device.

    ``preds``: (B, H, W) class indices or (B, C, H, W) scores; ``target``: (B, H, W) true class
    indices. Returns ``(confusion (B, C, C) int64, ignored, out_of_range)``: rows are true
    classes, columns predicted ones; ``ignored`` counts pixels whose target is ``ignore_index``,
    ``out_of_range`` those whose target is any other value outside [0, C) — both are unscored.
    Raises ValueError on mismatched shapes or a predicted index outside [0, C).
    """
    from_scores = preds.ndim == target.ndim + 1
    if from_scores and preds.shape[1] != num_classes:
        raise ValueError(f"scores have {preds.shape[1]} classes on dim 1, expected {num_classes}")
    labels = as_labels(preds, target)
    target = target.long()
    b, c = target.shape[0], num_classes
    in_range = (target >= 0) & (target < c)
    # An ignore index inside [0, C) (e.g. 0 when "background" is unlabelled) is not scored either.
    is_ignored = target == ignore_index if ignore_index is not None else torch.zeros_like(in_range)
    scored = in_range & ~is_ignored
    ignored, out_of_range = int(is_ignored.sum()), int((~in_range & ~is_ignored).sum())
    if not from_scores:  # an argmax is in range by construction; given indices may not be
        checked = labels[scored]
        if checked.numel() and (int(checked.min()) < 0 or int(checked.max()) >= c):
            raise ValueError(f"predicted class indices must lie in [0, {c}), got values in "
                             f"[{int(checked.min())}, {int(checked.max())}]")
    # One bincount for the whole batch: bin = image * C*C + truth * C + prediction, so a GPU batch
    # costs one kernel and no Python loop over images.
    image = torch.arange(b, device=target.device).view(b, 1, 1).expand_as(target)
    index = (image * (c * c) + target * c + labels)[scored]
    counts = torch.bincount(index, minlength=b * c * c)
    return counts.view(b, c, c), ignored, out_of_range


class ConfusionStream:
    """Pixel confusion matrices accumulated batch by batch; never keeps logits or masks.

    Keeps the total (C, C) int64 matrix and one (C, C) matrix per image (in arrival order) on
    the CPU, so inputs may live on any device. One process only: under DDP each rank holds its
    own images; use :class:`SegmentationMetric` (whose state is summed across ranks) for
    validation inside Lightning, and evaluate a bundle on a single process.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.total = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # (C, C)
        self.ignored_pixels = 0  # target == ignore_index
        self.out_of_range_pixels = 0  # any other target outside [0, C): a label mix-up, reported
        self._chunks: list[torch.Tensor] = []  # (B, C, C) per batch

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``preds`` (B, H, W) int64 class indices or (B, C, H, W) scores,
        ``target`` (B, H, W) int64. Raises ValueError as :func:`confusion_per_image`."""
        per_image, ignored, out_of_range = confusion_per_image(preds, target, self.num_classes, self.ignore_index)
        per_image = per_image.cpu()
        self._chunks.append(per_image)
        self.total += per_image.sum(dim=0)
        self.ignored_pixels += ignored
        self.out_of_range_pixels += out_of_range

    @property
    def per_image(self) -> torch.Tensor:
        """(N, C, C) int64: each image's confusion matrix, in the order the images arrived."""
        if len(self._chunks) != 1:
            c = self.num_classes
            self._chunks = [torch.cat(self._chunks) if self._chunks else torch.zeros(0, c, c, dtype=torch.int64)]
        return self._chunks[0]

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self._chunks)

    def scores(self, classes: list[str]) -> dict[str, Any]:
        """:func:`segmentation_scores` of the total, plus the unscored pixel counts."""
        return {**segmentation_scores(self.total, classes), "ignored_pixels": self.ignored_pixels,
                "out_of_range_pixels": self.out_of_range_pixels}


def confusion_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """The headline metrics of any batch of confusion matrices, vectorised.

    ``confusion``: (..., C, C) counts (rows true, columns predicted), any numeric dtype.
    Returns float64 tensors of shape (...): ``miou``, ``mean_dice`` (absent classes left out, as
    in the module's rule), ``pixel_acc``, ``fw_iou``. A matrix with no scored pixel gives NaN
    for each (nothing to score); callers decide what that means.
    """
    m = confusion.double()
    tp = m.diagonal(dim1=-2, dim2=-1)  # (..., C)
    true = m.sum(dim=-1)  # (..., C) pixels of each true class
    predicted = m.sum(dim=-2)  # (..., C) pixels predicted as each class
    union = true + predicted - tp  # TP + FN + FP
    present = union > 0  # not absent: some true or predicted pixel
    n_present = present.sum(dim=-1)
    iou = tp / union.clamp_min(1)  # 0 for absent classes; they are masked out of the means below
    dice = 2 * tp / (true + predicted).clamp_min(1)
    scored = true.sum(dim=-1)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=m.device)
    return {
        "miou": torch.where(n_present > 0, (iou * present).sum(-1) / n_present.clamp_min(1), nan),
        "pixel_acc": torch.where(scored > 0, tp.sum(-1) / scored.clamp_min(1), nan),
        "mean_dice": torch.where(n_present > 0, (dice * present).sum(-1) / n_present.clamp_min(1), nan),
        # Truth frequency x IoU: a predicted-only class has weight 0, so fw_iou ignores it.
        "fw_iou": torch.where(scored > 0, (true * iou).sum(-1) / scored.clamp_min(1), nan),
    }


def segmentation_scores(confusion: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Every number of a segmentation report from one (C, C) confusion matrix (rows true, columns
    predicted; pixel counts), under the module's mIoU rule.

    Returns a JSON-ready dict: ``miou``, ``pixel_acc``, ``mean_dice``, ``fw_iou`` (fractions in
    [0, 1]; None when no pixel was scored), ``per_class_iou`` {class: IoU or None}, ``absent``
    (names of classes with no true and no predicted pixel), ``scored_pixels``, ``per_class``
    (columns: class, pixels (true), predicted_pixels, iou, dice, precision, recall; None where a
    value is undefined: every value of an absent class, precision of a never-predicted class,
    recall of a class with no true pixel) and ``confusion_matrix`` as nested lists.
    Raises ValueError when the matrix is not (C, C) for C = len(classes).
    """
    c = len(classes)
    if confusion.shape != (c, c):
        raise ValueError(f"confusion matrix of shape {tuple(confusion.shape)} does not match {c} classes")
    m = confusion.long().cpu()
    tp, true, predicted = m.diagonal(), m.sum(dim=1), m.sum(dim=0)
    union = true + predicted - tp
    heads = {k: _none_if_nan(float(v)) for k, v in confusion_scores(m).items()}

    def ratio(num: torch.Tensor, den: torch.Tensor) -> list[float | None]:
        return [float(a) / float(b) if b > 0 else None for a, b in zip(num.tolist(), den.tolist())]

    iou = ratio(tp, union)
    result: dict[str, Any] = {
        **heads,
        "per_class_iou": dict(zip(classes, iou)),
        "absent": [name for name, u in zip(classes, union.tolist()) if u == 0],
        "scored_pixels": int(true.sum()),
        "per_class": {
            "class": list(classes),
            "pixels": true.tolist(),
            "predicted_pixels": predicted.tolist(),
            "iou": iou,
            "dice": ratio(2 * tp, true + predicted),
            "precision": ratio(tp, predicted),
            "recall": ratio(tp, true),
        },
        "confusion_matrix": m.tolist(),
    }
    if result["scored_pixels"] == 0:
        result["note"] = "no pixel was scored (every target pixel was ignored or outside the classes)"
    return result


class SegmentationMetric(Metric):
    """Streaming mIoU, pixel accuracy, mean Dice and frequency-weighted IoU for Lightning.

    The only state is the (C, C) int64 ``confusion`` matrix, summed across processes
    (``dist_reduce_fx="sum"``), so DDP validation gives the same numbers as one process.
    ``compute()`` returns float32 scalar tensors under the module's rule; when no pixel was
    scored they are 0 (not NaN, which would poison a "max" checkpoint monitor) and a warning
    says so. Extra keyword arguments go to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confusion: torch.Tensor
    out_of_range: torch.Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = DEFAULT_IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("out_of_range", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """``preds``: (B, C, H, W) scores or (B, H, W) class indices; ``target``: (B, H, W)."""
        per_image, _, out_of_range = confusion_per_image(preds, target, self.num_classes, self.ignore_index)
        self.confusion += per_image.sum(dim=0)
        self.out_of_range += out_of_range

    def compute(self) -> dict[str, torch.Tensor]:
        """{"miou", "pixel_acc", "mean_dice", "fw_iou"}: scalar float32 tensors in [0, 1]."""
        values = confusion_scores(self.confusion)
        if bool(values["pixel_acc"].isnan()):
            warnings.warn("segmentation metrics: no pixel was scored (every target pixel ignored or outside the "
                          "classes); reporting 0", stacklevel=2)
        return {k: v.nan_to_num(0.0).float() for k, v in values.items()}


def _none_if_nan(value: float) -> float | None:
    return None if value != value else value
