"""Object detection metrics: COCO mAP, a fast re-run of COCO's evaluation for the bootstrap, and
the confusion matrix of matched boxes.

Conventions (every function here). A prediction is ``{"boxes": (N, 4) float xyxy pixels,
"scores": (N,), "labels": (N,) int64}``; a truth is ``{"boxes", "labels", "difficult": (N,) bool,
"iscrowd": (N,) bool}`` (the two flags optional, False when missing). Labels are 0-based class
indices in [0, C): there is no background class (torchvision's detectors put background at 0
and number the classes from 1; a label equal to C is refused, not shifted).

**The mAP rule** (``MAP_RULE``; the README and the report quote it):

    mAP is COCO's mAP@[.5:.95] (Lin et al. 2014, cocodataset.org/#detection-eval) as
    pycocotools' COCOeval computes it, run through torchmetrics' ``MeanAveragePrecision``
    (pycocotools backend) with COCO's own thresholds. Per class, the detections of all images
    (at most 100 per image and class, the highest-scoring: COCOeval applies its "max 100
    detections" per class) are ranked by score, and each is matched in that order to the
    not-yet-matched true box of its class with the highest IoU >= t. Precision is made
    monotone (each point takes the best precision at any higher recall) and read at the 101
    recall points 0, 0.01, ..., 1 (a recall never reached reads 0); AP is their mean. AP is
    averaged over t = 0.50, 0.55, ..., 0.95, and mAP over the classes with at least one scored
    true box in the evaluated images; a class without one has no AP (listed as absent, scored
    neither 0 nor 1). mAP50 / mAP75 use t = 0.5 / 0.75 alone. Small, medium and large: true
    boxes of area below 32², 32² to 96², above 96² pixels. AR@100: the recall reached with 100
    detections, averaged over the IoU thresholds and the classes.

**Difficult and crowd boxes** are both passed to COCOeval as ``iscrowd`` and so are *ignored*,
the rule VOC applies to ``difficult`` objects and COCO to crowd regions: an ignored box is never
a miss and does not count in recall, and a detection matched to it is neither a true nor a
false positive. The matching is COCO's, which differs from the VOC devkit's in two details:
(1) the overlap with an ignored box is intersection over the *detection's* area (COCO's crowd
IoU; VOC uses the ordinary IoU), so a small detection inside a large difficult box is ignored
too; (2) a detection overlapping both takes an ordinary box first (VOC takes whichever overlaps
more, and ignores the detection when that one is difficult). VOC's own AP is also read
differently (11 points in VOC 2007, the whole curve from 2010): only COCO's 101 points here.
As in COCOeval, a box with one inverted side (x2 < x1 or y2 < y1) has a negative area, outside
the area range: such a true box is left out like an ignored one (:func:`unscored`) and such a
detection, unmatched, is neither right nor wrong (readers drop degenerate boxes, so this only
shows with hand-made inputs; it is mirrored so that the numbers stay pycocotools').

**Why the thresholds are passed explicitly**: torchmetrics 1.9 builds its defaults with
``torch.linspace`` in float32, so its IoU thresholds are 0.550000011920929... and its recall
points 0.6000000238... instead of COCOeval's float64 values; a recall that lands exactly on a
point (3 of 5 boxes = 0.6) then reads the next, lower precision, and a class with 5 boxes
scores differently from pycocotools. With COCO's thresholds the numbers equal pycocotools'
(tests/detection/test_metrics.py checks them to 1e-6 on random cases).

**The bootstrap** needs mAP on a thousand resamples of the images; COCOeval per resample is far
too slow. :func:`match_detections` runs COCOeval's per-image matching once (same sort orders,
tie rules and crowd IoU) and keeps, per class, the ranked detections with their image and
true/false/ignored flags at each IoU threshold; :meth:`Matches.average_precision` then
re-accumulates AP for any (R, N) matrix of image draw counts, a weight w_i counting image i
w_i times, which is what COCOeval sees when the image is repeated. At unit weights it equals
pycocotools (tested).

**The confusion matrix of matched boxes** (:func:`match_boxes`), at one IoU (0.5) and one
score threshold (0.5: the boxes a person would be shown), rows the true class and columns the
predicted class, plus a background row and column (index C): predictions above the threshold,
highest score first, (1) each take the unmatched true box of their own class with the highest
IoU >= iou (COCO's matching, so the diagonal is exactly COCO's true positives at IoU 0.5 among
those predictions), or (1b) are dropped when they overlap an ignored box of their class (as
COCO ignores them); then (2) the predictions left, highest score first, take the unmatched true
box of any other class with the highest IoU >= iou: a class confusion, cell [true, predicted];
(3) a prediction still left that overlaps an ignored box of any class is dropped; any other is
a false alarm, cell [background, predicted]; a true box left unmatched is a miss, cell [true,
background]. Ignored true boxes never count. Ultralytics' matrix instead pairs boxes by IoU
alone, ignoring class first, so a confusion can steal a true positive there; matching the own
class first keeps the diagonal equal to what mAP counts.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision

# COCOeval's Params.setDetParams, expression for expression, so the float64 values are the same.
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)  # (10,)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)  # (101,)
MAX_DETECTIONS = (1, 10, 100)
AREA_RANGES = ("all", "small", "medium", "large")  # COCOeval's areaRngLbl order
AREA_ALL = (0.0, 1e5 ** 2)  # COCOeval's area range "all", in square pixels
MATCH_IOU = 0.5  # the confusion matrix's and the per-image ranking's IoU (VOC's and mAP50's)
SCORE_THRESHOLD = 0.5  # the confusion matrix's and the drawings' operating point
# Bootstrapped headline metrics (the ones a resample can recompute from area "all").
HEADLINE = ("map", "map_50", "map_75", "mar_100")
SIZES = ("map_small", "map_medium", "map_large")
MAP_RULE = (
    "mAP is COCO's mAP@[.5:.95] as pycocotools' COCOeval computes it (through torchmetrics' MeanAveragePrecision with "
    "COCO's own thresholds): per class, the detections of all images (at most 100 per image and class, the "
    "highest-scoring) are ranked by score and each is matched in that order to the unmatched true box of its class "
    "with the highest IoU ≥ t; precision is made monotone and read at the 101 recall points 0, 0.01, …, 1 (101-point "
    "interpolation; a recall never reached reads 0), and AP is their mean. AP is averaged over t = 0.50, 0.55, …, 0.95, "
    "and mAP over the classes with at least one scored true box in the evaluated images; a class without one is absent "
    "(no AP, scored neither 0 nor 1). mAP50 and mAP75 use t = 0.5 and 0.75 alone. Difficult (VOC) and crowd (COCO) boxes "
    "are ignored: never a miss, and a detection matched to one (overlap = intersection over the detection's area, COCO's "
    "crowd rule) is neither right nor wrong. Small / medium / large: true boxes under 32², 32²–96², over 96² pixels. "
    "AR@100: the recall reached with 100 detections per image, averaged over IoU thresholds and classes. "
    "The bootstrap resamples whole images.")
CONFUSION_RULE = (
    "Predictions scoring at least the threshold, highest score first, each take the unmatched true box of their own class "
    "with the highest IoU ≥ the IoU threshold (COCO's matching: the diagonal is what mAP50 counts as right), or are "
    "dropped when they overlap an ignored (difficult / crowd) box of their class; the predictions left then take an "
    "unmatched true box of another class (a confusion, [true, predicted]); a prediction still left is a false alarm "
    "(row background) unless it overlaps an ignored box, and a true box left unmatched is a miss (column background).")


# --- inputs ----------------------------------------------------------------------------------------------------------

def _tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(value).detach().to("cpu", dtype)


def as_prediction(pred: dict[str, Any], num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """``pred`` as CPU tensors: boxes (N, 4) float32, scores (N,) float32, labels (N,) int64.
    Raises ValueError on mismatched lengths or a label outside [0, num_classes)."""
    boxes = _tensor(pred["boxes"], torch.float32).reshape(-1, 4)
    scores = _tensor(pred["scores"], torch.float32).reshape(-1)
    labels = _tensor(pred["labels"], torch.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"a prediction has {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
    _check_labels(labels, num_classes, "predicted")
    return {"boxes": boxes, "scores": scores, "labels": labels}


def as_truth(truth: dict[str, Any], num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """``truth`` as CPU tensors: boxes (N, 4) float32, labels (N,) int64, difficult and iscrowd
    (N,) bool (False where missing). Raises ValueError as :func:`as_prediction`."""
    boxes = _tensor(truth["boxes"], torch.float32).reshape(-1, 4)
    labels = _tensor(truth["labels"], torch.int64).reshape(-1)
    n = len(labels)
    flags = {}
    for key in ("difficult", "iscrowd"):
        value = truth.get(key)
        flags[key] = torch.zeros(n, dtype=torch.bool) if value is None else _tensor(value, torch.bool).reshape(-1)
        if len(flags[key]) != n:
            raise ValueError(f"a truth has {n} labels but {len(flags[key])} {key} flags")
    if len(boxes) != n:
        raise ValueError(f"a truth has {len(boxes)} boxes and {n} labels")
    _check_labels(labels, num_classes, "true")
    return {"boxes": boxes, "labels": labels, **flags}


def ignored(truth: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) bool: the true boxes left out of every metric (difficult or crowd)."""
    n = len(truth["labels"])
    out = torch.zeros(n, dtype=torch.bool)
    for key in ("difficult", "iscrowd"):
        if truth.get(key) is not None:
            out |= torch.as_tensor(truth[key]).to("cpu", torch.bool).reshape(-1)
    return out


def unscored(truth: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) bool: the true boxes COCOeval leaves out: ignored (difficult or crowd), or with an
    area outside its range (a box with one inverted side has a negative area; readers drop such
    boxes, so this only shows with hand-made targets)."""
    boxes = torch.as_tensor(truth["boxes"]).to("cpu", torch.float32).reshape(-1, 4)
    return ignored(truth) | torch.from_numpy(_outside_area(_xywh(boxes)))


def _check_labels(labels: torch.Tensor, num_classes: int | None, what: str) -> None:
    if num_classes is None or labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        hint = (" (torchvision detectors number classes from 1 with 0 = background; subtract 1)"
                if high == num_classes else "")
        raise ValueError(f"{what} labels must be class indices in [0, {num_classes}), got values in [{low}, {high}]{hint}")


def _coco_target(truth: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our truth as torchmetrics wants it: difficult and crowd boxes both become iscrowd = 1."""
    return {"boxes": truth["boxes"], "labels": truth["labels"], "iscrowd": ignored(truth).long()}


# --- torchmetrics ----------------------------------------------------------------------------------------------------

class DetectionMetric(MeanAveragePrecision):
    """torchmetrics' MeanAveragePrecision configured as COCOeval (see the module's rule), taking
    sftune's conventions: 0-based labels checked against ``num_classes``, and a truth's
    ``difficult`` and ``iscrowd`` flags both passed as ``iscrowd`` (ignored boxes). Its state
    is torchmetrics' lists of per-image boxes, gathered across processes under DDP."""

    def __init__(self, num_classes: int, class_metrics: bool = True, extended_summary: bool = False,
                 **kwargs: Any) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        super().__init__(box_format="xyxy", iou_type="bbox", iou_thresholds=IOU_THRESHOLDS.tolist(),
                         rec_thresholds=RECALL_THRESHOLDS.tolist(), max_detection_thresholds=list(MAX_DETECTIONS),
                         class_metrics=class_metrics, extended_summary=extended_summary, average="macro",
                         backend="pycocotools", **kwargs)
        self.num_classes = num_classes

    def update(self, preds: Sequence[dict[str, Any]], target: Sequence[dict[str, Any]]) -> None:  # type: ignore[override]
        """One batch: a prediction and a truth per image (sftune's conventions, any device)."""
        if len(preds) != len(target):
            raise ValueError(f"{len(preds)} predictions for {len(target)} truths")
        c = self.num_classes
        super().update([as_prediction(p, c) for p in preds], [_coco_target(as_truth(t, c)) for t in target])


def detection_metric(num_classes: int, **kwargs: Any) -> DetectionMetric:
    """A torchmetrics ``MeanAveragePrecision`` for ``num_classes`` classes, configured as COCOeval:
    box xyxy, thresholds IoU 0.50:0.05:0.95 and recall 0:0.01:1 (COCO's float64 values), max
    detections 1/10/100, ``class_metrics=True``, pycocotools backend. ``update(preds, targets)``
    takes sftune's dicts (difficult and crowd boxes ignored); ``compute()`` gives torchmetrics'
    dict (map, map_50, map_75, map_small/medium/large, mar_1/10/100, ..., map_per_class).
    Keyword arguments go to the metric (``class_metrics``, ``extended_summary``, ``sync_on_compute``...)."""
    return DetectionMetric(num_classes, **kwargs)


def _mean_valid(values: np.ndarray) -> float | None:
    """COCOeval.summarize's mean of the entries > -1; None when there is none (COCO's -1)."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def detection_scores(preds: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]],
                     classes: Sequence[str], curves: bool = True) -> dict[str, Any]:
    """Every COCO number of ``preds`` against ``targets`` (one dict per image, same order), JSON-ready.

    ``map``, ``map_50``, ``map_75``, ``map_small``, ``map_medium``, ``map_large``, ``mar_1``,
    ``mar_10``, ``mar_100`` (fractions; None where COCO has nothing to average, e.g. no true
    box of that size), ``per_class_ap`` / ``per_class_ap50`` / ``per_class_ap75`` /
    ``per_class_ar100`` {class: value, None for a class without scored true boxes}, ``absent``
    (those classes' names), ``n`` (images), ``n_boxes`` (scored true boxes), ``n_ignored_boxes``
    (difficult or crowd, see :func:`unscored`), ``n_predictions``, and with ``curves`` the per-class
    precision-recall curves at IoU 0.5 and 0.75 (``pr_curves``: ``recall`` = the 101 recall
    points, ``curves`` = [{"iou", "precision": {class: 101 values or None}}]; COCO's
    interpolated precision, read from torchmetrics' ``extended_summary`` precision array
    (T, R, K, A, M)). Everything is computed in float64 from that array, as COCOeval.summarize
    does (torchmetrics' own scalars are float32).
    Raises ValueError on mismatched lengths or labels outside [0, len(classes)).
    """
    c = len(classes)
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} truths")
    preds = [as_prediction(p, c) for p in preds]
    truths = [as_truth(t, c) for t in targets]
    metric = detection_metric(c, class_metrics=False, extended_summary=True)
    metric.warn_on_many_detections = False  # COCO's cap of 100 per image and class is the rule, said in MAP_RULE
    if preds:
        metric.update(preds, truths)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # numpy's "mean of empty slice" when nothing has a true box
        result = metric.compute() if preds else {}
    n_ignored = sum(int(unscored(t).sum()) for t in truths)
    n_truth = sum(len(t["labels"]) for t in truths)
    out: dict[str, Any] = {k: None for k in ("map", "map_50", "map_75", *SIZES, "mar_1", "mar_10", "mar_100")}
    per_class = {key: dict.fromkeys(classes) for key in ("per_class_ap", "per_class_ap50", "per_class_ap75",
                                                         "per_class_ar100")}
    precision = result.get("precision")
    pr_curves = None
    if precision is not None:
        precision = precision.double().numpy()  # (T, R, K, A, M): -1 for a class without true boxes
        recall = result["recall"].double().numpy()  # (T, K, A, M)
        seen = [int(k) for k in torch.as_tensor(result["classes"]).reshape(-1).tolist()]  # K: labels seen, sorted
        t50, t75 = _iou_index(0.5), _iou_index(0.75)
        last = len(MAX_DETECTIONS) - 1
        out["map"] = _mean_valid(precision[:, :, :, 0, last])
        out["map_50"] = _mean_valid(precision[t50, :, :, 0, last])
        out["map_75"] = _mean_valid(precision[t75, :, :, 0, last])
        for a, name in enumerate(SIZES, start=1):
            out[name] = _mean_valid(precision[:, :, :, a, last])
        for m, limit in enumerate(MAX_DETECTIONS):
            out[f"mar_{limit}"] = _mean_valid(recall[:, :, 0, m])
        if precision.shape[2] == len(seen):
            for j, k in enumerate(seen):
                name = classes[k]
                per_class["per_class_ap"][name] = _mean_valid(precision[:, :, j, 0, last])
                per_class["per_class_ap50"][name] = _mean_valid(precision[t50, :, j, 0, last])
                per_class["per_class_ap75"][name] = _mean_valid(precision[t75, :, j, 0, last])
                per_class["per_class_ar100"][name] = _mean_valid(recall[:, j, 0, last])
            if curves:
                pr_curves = {"recall": RECALL_THRESHOLDS.tolist(), "curves": []}
                for t in (t50, t75):
                    table: dict[str, list[float] | None] = dict.fromkeys(classes)
                    for j, k in enumerate(seen):
                        row = precision[t, :, j, 0, last]
                        table[classes[k]] = row.tolist() if (row > -1).all() else None
                    pr_curves["curves"].append({"iou": float(IOU_THRESHOLDS[t]), "precision": table})
    out.update(per_class)
    out["absent"] = [name for name, v in per_class["per_class_ap"].items() if v is None]
    out.update({"n": len(truths), "n_boxes": n_truth - n_ignored, "n_ignored_boxes": n_ignored,
                "n_predictions": sum(len(p["labels"]) for p in preds)})
    if curves:
        out["pr_curves"] = pr_curves or {"recall": RECALL_THRESHOLDS.tolist(), "curves": []}
    return out


def _iou_index(value: float) -> int:
    return int(np.argmin(np.abs(IOU_THRESHOLDS - value)))


# --- COCOeval's matching, once; AP for any image weights ---------------------------------------------------------------

def coco_iou(detections: np.ndarray, truths: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) float64 overlaps exactly as pycocotools' ``maskUtils.iou`` computes them for boxes
    (its C ``bbIou``): inputs xywh float64; for a crowd (ignored) true box the union is the
    detection's own area (intersection over detection area)."""
    if len(detections) == 0 or len(truths) == 0:
        return np.zeros((len(detections), len(truths)))
    d, g = detections[:, None, :], truths[None, :, :]
    w = np.fmin(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.fmax(d[..., 0], g[..., 0])
    h = np.fmin(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.fmax(d[..., 1], g[..., 1])
    da = d[..., 2] * d[..., 3]
    ga = g[..., 2] * g[..., 3]
    inter = w * h
    union = np.where(crowd[None, :], da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _xywh(boxes: torch.Tensor) -> np.ndarray:
    """xyxy float32 -> xywh float64, widths computed in float32 as torchvision's box_convert does
    for torchmetrics (so the doubles COCO sees are the same)."""
    b = boxes.float()
    return torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1).double().numpy().reshape(-1, 4)


def _outside_area(xywh: np.ndarray) -> np.ndarray:
    """(N,) bool: boxes whose area w * h (COCO's, negative for a box with one side inverted) lies
    outside COCOeval's area range "all", [0, 1e5 ** 2]."""
    area = xywh[:, 2] * xywh[:, 3]
    return (area < AREA_ALL[0]) | (area > AREA_ALL[1])


def _match_class(det_xywh: np.ndarray, gt_xywh: np.ndarray, gt_crowd: np.ndarray,
                 thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.evaluateImg for one image and class, area "all": detections already sorted by
    score (highest first) and capped; true boxes in their given order, ``gt_crowd`` their
    iscrowd flags (difficult or crowd). Returns (matched, ignored), each (T, D) bool.

    As COCO: a true box is ignored when crowd or when its area is outside the range (a box with
    one inverted side has a negative area); crowd boxes use the crowd IoU and can absorb any
    number of detections; an unmatched detection whose area is outside the range is ignored."""
    t_count, d_count, g_count = len(thresholds), len(det_xywh), len(gt_xywh)
    matched = np.zeros((t_count, d_count), dtype=bool)
    det_ignored = np.zeros((t_count, d_count), dtype=bool)
    if d_count and g_count:
        gt_ignored = gt_crowd | _outside_area(gt_xywh)
        order = np.argsort(gt_ignored, kind="mergesort")  # ignored boxes last, as COCO sorts them
        crowd, skip = gt_crowd[order], gt_ignored[order]
        ious = coco_iou(det_xywh, gt_xywh[order], crowd)  # (D, G)
        limit = np.minimum(thresholds, 1 - 1e-10)[:, None]  # (T, 1)
        taken = np.zeros((t_count, g_count), dtype=bool)
        rows = np.arange(t_count)
        for d in range(d_count):
            # COCO's loop over true boxes, for every threshold at once: a box already matched is
            # skipped unless crowd; an ordinary candidate wins over any ignored one; among the
            # candidates the highest IoU wins, the last one on ties (COCO replaces on ">=").
            candidate = ~(taken & ~crowd) & (ious[d][None, :] >= limit)  # (T, G)
            regular = candidate & ~skip
            use = np.where(regular.any(axis=1, keepdims=True), regular, candidate & skip)
            found = use.any(axis=1)
            if not found.any():
                continue
            value = np.where(use, ious[d][None, :], -1.0)[:, ::-1]
            best = g_count - 1 - value.argmax(axis=1)  # the last maximum
            t_found, g_found = rows[found], best[found]
            taken[t_found, g_found] = True
            matched[t_found, d] = True
            det_ignored[t_found, d] = skip[g_found]
    det_ignored |= ~matched & _outside_area(det_xywh)[None, :]
    return matched, det_ignored


@dataclass
class ClassMatches:
    """One class's detections over all images in COCOeval's accumulation order (score, highest
    first; ties in image order, then each image's own score order): ``image`` (D,) int64,
    ``score`` (D,) float64, ``tp`` / ``fp`` (T, D) bool per IoU threshold (a detection matched to
    an ignored box is neither), and ``truth`` (N,) int64: each image's scored true boxes."""

    image: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    truth: np.ndarray


@dataclass
class Matches:
    """COCOeval's per-image matching of a whole set, done once (:func:`match_detections`)."""

    per_class: list[ClassMatches]
    n_images: int
    thresholds: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def average_precision(self, weights: np.ndarray | None = None,
                          chunk_elements: int = 4_000_000) -> dict[str, np.ndarray]:
        """AP and recall per class for each row of ``weights`` (R, N) image draw counts (None:
        one row of ones, the set as it is): ``ap`` (R, T, K) and ``recall`` (R, T, K), NaN for a
        class with no scored true box in that row, exactly as COCOeval.accumulate computes them
        for the images repeated that many times.

        Only the true positives' points of the ranked list are built. COCO reads the monotone
        precision at the first point whose recall reaches each of the 101 recall thresholds:
        recall only grows at a true positive, and precision only falls at a false positive, so
        both the point read and the best precision after it are true-positive points (a recall
        threshold of 0 reads the best precision of all, again a true positive's, or 0). The false
        positives only enter through how many of them rank above each true positive: a sum over
        (image, gap between two true positives) pairs, weighted by the image's draw count. The
        cost is O(R x T x true positives) instead of O(R x T x detections): the many low-scoring
        false alarms below the last true positive cost nothing.
        """
        n, t_count, k_count = self.n_images, len(self.thresholds), len(self.per_class)
        w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1, n)
        r_count = len(w)
        ap = np.full((r_count, t_count, k_count), np.nan)
        recall = np.full((r_count, t_count, k_count), np.nan)
        eps = np.spacing(1)  # COCO's
        r_points = len(RECALL_THRESHOLDS)
        for k, cm in enumerate(self.per_class):
            npig = w @ cm.truth.astype(np.float64)  # (R,) scored true boxes in each resample
            present = npig > 0
            for t in range(t_count):
                tp_image, fp_image, fp_count, fp_last = self._ranked(k, t)
                m = len(tp_image)
                if m == 0:  # no true positive: every precision read is 0, and so is the recall
                    ap[present, t, k] = 0.0
                    recall[present, t, k] = 0.0
                    continue
                vectorised = m <= 256  # few true positives: compare all at once; many: searchsorted row by row
                step = max(1, chunk_elements // (m * (r_points if vectorised else 4)))
                for start in range(0, r_count, step):
                    rows = slice(start, start + step)
                    wb = w[rows]
                    tp_sum = np.cumsum(wb[:, tp_image], axis=1)  # (B, m): weighted true positives so far
                    if len(fp_image):  # (B, m): weighted false positives ranked above each true positive
                        fp_cum = np.cumsum(wb[:, fp_image] * fp_count, axis=1)
                        fp_sum = np.where(fp_last >= 0, fp_cum[:, np.maximum(fp_last, 0)], 0.0)
                    else:
                        fp_sum = np.zeros_like(tp_sum)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        rc = tp_sum / npig[rows][:, None]
                    pr = tp_sum / (fp_sum + tp_sum + eps)
                    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # COCO's monotone envelope
                    # searchsorted(rc, thresholds, "left") per row = the number of points below each threshold
                    if vectorised:
                        index = (rc[:, :, None] < RECALL_THRESHOLDS[None, None, :]).sum(axis=1)  # (B, 101)
                    else:
                        index = np.stack([np.searchsorted(row, RECALL_THRESHOLDS, side="left") for row in rc])
                    q = np.where(index < m, np.take_along_axis(pr, np.minimum(index, m - 1), axis=1), 0.0)
                    block_ap, block_rc = q.mean(axis=1), rc[:, -1].copy()
                    block_ap[~present[rows]] = np.nan
                    block_rc[~present[rows]] = np.nan
                    ap[rows, t, k] = block_ap
                    recall[rows, t, k] = block_rc
        return {"ap": ap, "recall": recall}

    def _ranked(self, k: int, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Class ``k`` at threshold ``t``: the image of each true positive in rank order (m,), and
        the false positives above them collapsed into (image, gap) pairs sorted by gap: pair
        image, pair count, and for each true positive the index of the last pair ranked above it
        (-1: none). Cached: every chunk of resamples reuses it."""
        key = (k, t)
        if key not in self._cache:
            cm = self.per_class[k]
            tp_at = np.flatnonzero(cm.tp[t])
            fp_at = np.flatnonzero(cm.fp[t])
            gap = np.searchsorted(tp_at, fp_at)  # true positives ranked above each false positive
            above = gap < len(tp_at)  # false positives below the last true positive change no point read
            pair, count = np.unique(gap[above] * self.n_images + cm.image[fp_at[above]], return_counts=True)
            pair_gap = pair // self.n_images
            last = np.searchsorted(pair_gap, np.arange(len(tp_at)), side="right") - 1
            self._cache[key] = (cm.image[tp_at], pair % self.n_images, count.astype(np.float64), last)
        return self._cache[key]

    def summary(self, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The bootstrapped headline (``HEADLINE``) for each row of ``weights``: (R,) float64 each,
        NaN where no class has a scored true box. At unit weights: COCOeval's map, map_50, map_75
        and mar_100."""
        result = self.average_precision(weights)
        ap, recall = result["ap"], result["recall"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no class with a true box
            per_class = np.nanmean(ap, axis=1)  # (R, K): NaN stays NaN for absent classes
            return {"map": np.nanmean(per_class, axis=1),
                    "map_50": np.nanmean(ap[:, _index_of(self.thresholds, 0.5)], axis=1),
                    "map_75": np.nanmean(ap[:, _index_of(self.thresholds, 0.75)], axis=1),
                    "mar_100": np.nanmean(np.nanmean(recall, axis=1), axis=1)}

    def per_image_ap(self, threshold: float = MATCH_IOU, score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
        """(N,) float64: each image's own AP at IoU ``threshold`` (COCO's matching and 101-point
        reading, on that image alone), averaged over the classes with a scored true box in it or
        with an unignored prediction scoring at least ``score_threshold`` (such a class has no
        true box there, so its AP is 0). NaN for an image with neither: nothing to score."""
        t = _index_of(self.thresholds, threshold)
        total = np.zeros(self.n_images)
        count = np.zeros(self.n_images)
        for cm in self.per_class:
            by_image: dict[int, list[int]] = {}
            for position, image in enumerate(cm.image.tolist()):  # COCO order, kept within each image
                by_image.setdefault(image, []).append(position)
            for image in set(by_image) | set(np.flatnonzero(cm.truth).tolist()):
                positions = np.asarray(by_image.get(image, []), dtype=np.int64)
                npig = int(cm.truth[image])
                tp, fp = cm.tp[t, positions], cm.fp[t, positions]
                if npig == 0:
                    if (fp & (cm.score[positions] >= score_threshold)).any():
                        count[image] += 1  # confident false alarms of a class the image does not hold: AP 0
                    continue
                total[image] += _ap_101(tp, fp, npig)
                count[image] += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _index_of(thresholds: np.ndarray, value: float) -> int:
    index = int(np.argmin(np.abs(thresholds - value)))
    if abs(thresholds[index] - value) > 1e-9:
        raise ValueError(f"IoU threshold {value} is not among {thresholds.tolist()}")
    return index


def _ap_101(tp: np.ndarray, fp: np.ndarray, npig: int) -> float:
    """COCOeval.accumulate's AP of one ranked list of true / false positives against ``npig`` boxes."""
    if len(tp) == 0:
        return 0.0
    tp_sum, fp_sum = np.cumsum(tp).astype(float), np.cumsum(fp).astype(float)
    rc = tp_sum / npig
    pr = np.maximum.accumulate((tp_sum / (fp_sum + tp_sum + np.spacing(1)))[::-1])[::-1]
    index = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
    inside = index < len(tp)
    q = np.zeros(len(RECALL_THRESHOLDS))
    q[inside] = pr[index[inside]]
    return float(q.mean())


def match_detections(preds: Sequence[dict[str, Any]], truths: Sequence[dict[str, Any]], num_classes: int,
                     thresholds: np.ndarray = IOU_THRESHOLDS, max_detections: int = MAX_DETECTIONS[-1]) -> Matches:
    """COCOeval's per-image matching (area "all", at most ``max_detections`` per image and
    class, crowd IoU for ignored boxes) of a whole set, once, kept per class for
    :meth:`Matches.average_precision`. Raises ValueError as :func:`detection_scores`."""
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} truths")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n = len(preds)
    parts: list[dict[str, list]] = [{"image": [], "score": [], "tp": [], "fp": []} for _ in range(num_classes)]
    truth_counts = np.zeros((num_classes, n), dtype=np.int64)
    for i, (raw_pred, raw_truth) in enumerate(zip(preds, truths)):
        pred, truth = as_prediction(raw_pred, num_classes), as_truth(raw_truth, num_classes)
        skip = ignored(truth).numpy()
        p_labels, t_labels = pred["labels"].numpy(), truth["labels"].numpy()
        scores = pred["scores"].double().numpy()
        p_xywh, t_xywh = _xywh(pred["boxes"]), _xywh(truth["boxes"])
        for k in np.union1d(p_labels, t_labels).tolist():
            d_idx = np.flatnonzero(p_labels == k)
            g_idx = np.flatnonzero(t_labels == k)
            truth_counts[k, i] = int((~skip[g_idx] & ~_outside_area(t_xywh[g_idx])).sum())
            if len(d_idx) == 0:
                continue
            d_idx = d_idx[np.argsort(-scores[d_idx], kind="mergesort")][:max_detections]
            matched, det_ignored = _match_class(p_xywh[d_idx], t_xywh[g_idx], skip[g_idx], thresholds)
            part = parts[k]
            part["image"].append(np.full(len(d_idx), i, dtype=np.int64))
            part["score"].append(scores[d_idx])
            part["tp"].append(matched & ~det_ignored)
            part["fp"].append(~matched & ~det_ignored)
    per_class = []
    t_count = len(thresholds)
    for k, part in enumerate(parts):
        if part["score"]:
            score = np.concatenate(part["score"])
            order = np.argsort(-score, kind="mergesort")  # COCOeval.accumulate's global ranking
            per_class.append(ClassMatches(np.concatenate(part["image"])[order], score[order],
                                          np.concatenate(part["tp"], axis=1)[:, order],
                                          np.concatenate(part["fp"], axis=1)[:, order], truth_counts[k]))
        else:
            empty = np.zeros((t_count, 0), dtype=bool)
            per_class.append(ClassMatches(np.zeros(0, np.int64), np.zeros(0), empty, empty.copy(), truth_counts[k]))
    return Matches(per_class, n, thresholds)


# --- the confusion matrix of matched boxes -----------------------------------------------------------------------------

def match_boxes(pred: dict[str, Any], truth: dict[str, Any], num_classes: int, iou: float = MATCH_IOU,
                score_threshold: float = SCORE_THRESHOLD) -> torch.Tensor:
    """The (C+1, C+1) int64 confusion matrix of one image's boxes under the module's matching
    rule: rows true class, columns predicted class, index C = background (row C: false alarms,
    column C: misses). Predictions scoring below ``score_threshold`` are left out; ignored
    (difficult / crowd) true boxes never count. Raises ValueError on labels outside [0, C)."""
    return _confusion_image(as_prediction(pred, num_classes), as_truth(truth, num_classes), num_classes,
                            iou, score_threshold)


def box_confusion(preds: Sequence[dict[str, Any]], truths: Sequence[dict[str, Any]], num_classes: int,
                  iou: float = MATCH_IOU, score_threshold: float = SCORE_THRESHOLD) -> torch.Tensor:
    """(N, C+1, C+1) int64: :func:`match_boxes` of every image (sum over dim 0 for the set)."""
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} truths")
    c = num_classes
    if not preds:
        return torch.zeros(0, c + 1, c + 1, dtype=torch.int64)
    return torch.stack([match_boxes(p, t, c, iou, score_threshold) for p, t in zip(preds, truths)])


def _confusion_image(pred: dict[str, torch.Tensor], truth: dict[str, torch.Tensor], c: int, iou: float,
                     score_threshold: float) -> torch.Tensor:
    matrix = torch.zeros(c + 1, c + 1, dtype=torch.int64)
    # Predictions below the threshold are not shown; one with a negative area (an inverted side) is
    # a box of nothing, ignored by COCO when unmatched, and it cannot match: left out here too.
    keep = (pred["scores"] >= score_threshold).numpy() & ~_outside_area(_xywh(pred["boxes"]))
    scores = pred["scores"].double().numpy()[keep]
    order = np.argsort(-scores, kind="mergesort")
    p_labels = pred["labels"].numpy()[keep][order]
    p_xywh = _xywh(pred["boxes"])[keep][order]
    skip = unscored(truth).numpy()
    t_labels = truth["labels"].numpy()
    t_xywh = _xywh(truth["boxes"])
    plain = coco_iou(p_xywh, t_xywh, np.zeros(len(t_labels), dtype=bool))  # (P, G) ordinary IoU
    over_pred = coco_iou(p_xywh, t_xywh, np.ones(len(t_labels), dtype=bool))  # intersection / prediction area
    same = p_labels[:, None] == t_labels[None, :]
    free_truth = ~skip.copy()  # ordinary true boxes not matched yet
    left = np.ones(len(p_labels), dtype=bool)  # predictions not matched nor dropped yet

    def best(p: int, allowed: np.ndarray) -> int:
        value = np.where(allowed & free_truth & (plain[p] >= iou), plain[p], -1.0)
        if value.max(initial=-1.0) < 0:
            return -1
        return len(value) - 1 - int(value[::-1].argmax())  # the highest IoU, the last on ties (as COCO)

    for p in range(len(p_labels)):  # (1) own class, COCO's greedy matching by score; (1b) own-class ignored box
        g = best(p, same[p])
        if g >= 0:
            free_truth[g] = False
            left[p] = False
            matrix[t_labels[g], p_labels[p]] += 1
        elif (skip & same[p] & (over_pred[p] >= iou)).any():
            left[p] = False
    for p in np.flatnonzero(left):  # (2) confusions with another class's box
        g = best(p, ~same[p])
        if g >= 0:
            free_truth[g] = False
            left[p] = False
            matrix[t_labels[g], p_labels[p]] += 1
    for p in np.flatnonzero(left):  # (3) false alarms, unless they cover an ignored box
        if not (skip & (over_pred[p] >= iou)).any():
            matrix[c, p_labels[p]] += 1
    for g in np.flatnonzero(free_truth):
        matrix[t_labels[g], c] += 1
    return matrix


def confusion_counts(matrix: torch.Tensor) -> dict[str, int]:
    """What a (C+1, C+1) matched-box matrix (or a sum of them) holds: ``matched`` (right class),
    ``confused`` (matched to another class's box), ``missed``, ``false_alarms``."""
    m = torch.as_tensor(matrix).long()
    c = m.shape[-1] - 1
    inner = m[:c, :c]
    return {"matched": int(inner.diagonal().sum()), "confused": int(inner.sum() - inner.diagonal().sum()),
            "missed": int(m[:c, c].sum()), "false_alarms": int(m[c, :c].sum())}


def per_class_at_threshold(matrix: torch.Tensor, classes: Sequence[str]) -> dict[str, list]:
    """Per-class counts and rates at the matrix's operating point, columns: ``true_boxes``
    (scored), ``predicted`` (kept predictions, not dropped on an ignored box), ``matched``,
    ``missed``, ``false_alarms``, ``precision`` = matched / predicted and ``recall`` = matched /
    true_boxes (None when the denominator is 0)."""
    m = torch.as_tensor(matrix).long()
    c = len(classes)
    if m.shape != (c + 1, c + 1):
        raise ValueError(f"a matched-box matrix for {c} classes is ({c + 1}, {c + 1}), got {tuple(m.shape)}")
    diag = m.diagonal()[:c]
    true_boxes = m[:c].sum(dim=1)
    predicted = m[:, :c].sum(dim=0)

    def ratio(a: torch.Tensor, b: torch.Tensor) -> list[float | None]:
        return [float(x) / float(y) if y > 0 else None for x, y in zip(a.tolist(), b.tolist())]

    return {"class": list(classes), "true_boxes": true_boxes.tolist(), "predicted": predicted.tolist(),
            "matched": diag.tolist(), "missed": m[:c, c].tolist(), "false_alarms": m[c, :c].tolist(),
            "precision": ratio(diag, predicted), "recall": ratio(diag, true_boxes)}
