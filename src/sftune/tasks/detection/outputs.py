"""What a detector did on each image of a labeled set: the raw material of metrics.json,
confidence intervals, model comparisons, the confusion matrix and the worst-images gallery.

Boxes are few (a torchvision detector keeps at most 100 per image), so every image's
predictions and truths are kept as small CPU tensors: 100 boxes cost 2.4 kB, 10k images a few
tens of MB. Every metric is recomputed from them; the predictions drawn in the report come from
here too (no second pass of the model).

The bootstrap resamples *images*, not boxes: boxes of one image share its lighting, scale and
annotator, so the image is the unit that was sampled. COCOeval on each of 1000 resamples would
take minutes; instead COCOeval's matching is done once (metrics.match_detections) and AP is
re-accumulated for each resample from the ranked detections weighted by their image's draw count
(metrics.Matches.average_precision; equal to pycocotools at unit weights). Each of R resamples
draws N images with replacement from ``torch.Generator().manual_seed(seed)`` as
sftune.eval.bootstrap and the segmentation outputs do, and a comparison uses the same draws
for both models, so differences are paired. 1000 resamples of 100 images take about a second.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...eval.bootstrap import CONFIDENCE, RESAMPLES, percentile_interval
from .metrics import (HEADLINE, MATCH_IOU, SCORE_THRESHOLD, SIZES, Matches, as_prediction, as_truth, box_confusion,
                      detection_scores, ignored, match_detections, unscored)

_CHUNK_ELEMENTS = 5_000_000  # resamples x images per chunk of draw counts: 40 MB of float64


@dataclass
class DetectionOutputs:
    """Per-image results of one detector on one labeled detection set, in data order.

    ``predictions``: per image {"boxes": (N, 4) float32 xyxy pixels, "scores": (N,),
    "labels": (N,) int64 class index}; ``truths``: per image {"boxes", "labels", "difficult",
    "iscrowd"} (flags (N,) bool; difficult and crowd boxes are ignored by every metric).
    ``items``: each image's path (what a person looks at). ``image_sizes``: (height, width) of
    each image as its boxes' pixels count (may be empty when unknown). ``features``: (N, F)
    pooled backbone features when asked for (drift, replay), else None. ``score_threshold``:
    the operating point of the confusion matrix, the per-image ranking and the drawings.
    All tensors are moved to the CPU. Raises ValueError when lengths or labels disagree.
    """

    classes: list[str]
    predictions: list[dict[str, torch.Tensor]]
    truths: list[dict[str, torch.Tensor]]
    items: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    features: torch.Tensor | None = None
    score_threshold: float = SCORE_THRESHOLD
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = len(self.classes)
        if c < 1:
            raise ValueError("a detection set needs at least one class")
        n = len(self.items)
        if len(self.predictions) != n or len(self.truths) != n:
            raise ValueError(f"{n} items for {len(self.predictions)} predictions and {len(self.truths)} truths")
        if self.image_sizes and len(self.image_sizes) != n:
            raise ValueError(f"{len(self.image_sizes)} image sizes for {n} images")
        if self.features is not None and len(self.features) != n:
            raise ValueError(f"{len(self.features)} feature rows for {n} images")
        self.classes = list(self.classes)
        self.items = [str(item["image"]) if isinstance(item, dict) else str(item) for item in self.items]
        self.predictions = [as_prediction(p, c) for p in self.predictions]
        self.truths = [as_truth(t, c) for t in self.truths]
        self.image_sizes = [(int(h), int(w)) for h, w in self.image_sizes]
        self.skipped = [(str(p), str(r)) for p, r in self.skipped]
        if self.features is not None:
            self.features = self.features.detach().cpu()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_boxes(self) -> int:
        """Scored true boxes (difficult and crowd ones left out: metrics.unscored)."""
        return sum(int((~unscored(t)).sum()) for t in self.truths)

    def scores(self) -> dict[str, Any]:
        """Every number of :func:`~sftune.tasks.detection.metrics.detection_scores` (COCO's, through
        torchmetrics with the pycocotools backend), including the precision-recall curves. Cached."""
        if "scores" not in self._cache:
            self._cache["scores"] = detection_scores(self.predictions, self.truths, self.classes, curves=True)
        return self._cache["scores"]

    def headline(self) -> dict[str, Any]:
        """metrics.json's numbers: ``map`` (COCO mAP@[.5:.95]), ``map_50``, ``map_75``,
        ``map_small``/``medium``/``large``, ``mar_100`` (fractions; None where there is nothing
        to score), ``per_class_ap`` {class: AP or None for a class without true boxes},
        ``absent`` (those classes), ``n`` (images), ``n_boxes`` (scored true boxes),
        ``n_ignored_boxes`` (difficult / crowd)."""
        s = self.scores()
        return {**{k: s[k] for k in ("map", "map_50", "map_75", *SIZES, "mar_100")},
                "per_class_ap": dict(s["per_class_ap"]), "absent": list(s["absent"]), "n": len(self),
                "n_boxes": s["n_boxes"], "n_ignored_boxes": s["n_ignored_boxes"]}

    @property
    def matches(self) -> Matches:
        """COCOeval's per-image matching of the whole set, done once (for the bootstrap)."""
        if "matches" not in self._cache:
            self._cache["matches"] = match_detections(self.predictions, self.truths, len(self.classes))
        return self._cache["matches"]

    def per_image_ap50(self) -> torch.Tensor:
        """(N,) float64: each image's own AP at IoU 0.5 over the classes true in it or predicted
        in it at ``score_threshold`` (metrics.Matches.per_image_ap); NaN for an image with nothing
        to score, which an ascending ``torch.sort`` puts last, so it never ranks among the worst."""
        if "per_image_ap50" not in self._cache:
            self._cache["per_image_ap50"] = torch.from_numpy(
                self.matches.per_image_ap(MATCH_IOU, self.score_threshold))
        return self._cache["per_image_ap50"]

    def per_image_confusion(self, iou: float = MATCH_IOU) -> torch.Tensor:
        """(N, C+1, C+1) int64: each image's matched-box confusion matrix at ``score_threshold``
        (metrics.match_boxes: rows true, columns predicted, index C = background)."""
        key = f"confusion@{iou}"
        if key not in self._cache:
            self._cache[key] = box_confusion(self.predictions, self.truths, len(self.classes), iou,
                                             self.score_threshold)
        return self._cache[key]

    def confusion(self, iou: float = MATCH_IOU) -> torch.Tensor:
        """(C+1, C+1) int64: the matched-box confusion matrix of the whole set."""
        per_image = self.per_image_confusion(iou)
        c = len(self.classes) + 1
        return per_image.sum(dim=0) if len(per_image) else torch.zeros(c, c, dtype=torch.int64)

    def intervals(self, resamples: int = RESAMPLES, seed: int = 0,
                  confidence: float = CONFIDENCE) -> dict[str, dict[str, float]]:
        """Percentile bootstrap intervals over images of ``map``, ``map_50``, ``map_75`` and
        ``mar_100``: {name: {"low", "high"}}, fractions; NaN when there is no image or no true box."""
        samples = resampled_scores([self], resamples, seed)[0]
        return {name: percentile_interval(v, confidence) for name, v in samples.items()}

    def to_dict(self, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> dict[str, Any]:
        """JSON-ready: :meth:`scores`, their bootstrap ``intervals`` (None where undefined), the
        skipped files and each image's path, size and AP50 (None where there is nothing to score)."""
        intervals = {name: {k: _none_if_nan(v) for k, v in iv.items()}
                     for name, iv in self.intervals(resamples, seed, confidence).items()}
        return {**self.scores(), "intervals": intervals, "confidence": confidence, "resamples": resamples,
                "score_threshold": self.score_threshold,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "per_image": {"items": list(self.items), "size": [list(s) for s in self.image_sizes],
                              "ap50": [_none_if_nan(v) for v in self.per_image_ap50().tolist()]}}


def resampled_scores(outs: Sequence[DetectionOutputs], resamples: int = RESAMPLES,
                     seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """For each of ``outs`` (same images, same order), ``map``, ``map_50``, ``map_75`` and
    ``mar_100`` over the same ``resamples`` bootstrap draws of images: a (resamples,) float64
    tensor each (NaN for a draw without any scored true box). Raises ValueError when the
    outputs hold different image counts."""
    n = len(outs[0])
    if any(len(o) != n for o in outs):
        raise ValueError("a paired bootstrap needs outputs over the same images")
    if n == 0 or resamples <= 0:
        nan = torch.full((max(resamples, 0),), float("nan"), dtype=torch.float64)
        return [{name: nan.clone() for name in HEADLINE} for _ in outs]
    per_model: list[dict[str, list[np.ndarray]]] = [{} for _ in outs]
    for weights in _draw_counts(n, resamples, seed):
        w = weights.numpy()
        for out, acc in zip(outs, per_model):
            for name, v in out.matches.summary(w).items():
                acc.setdefault(name, []).append(v)
    return [{k: torch.from_numpy(np.concatenate(v)) for k, v in m.items()} for m in per_model]


def compare(a: DetectionOutputs, b: DetectionOutputs, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """B - A for ``map``, ``map_50``, ``map_75`` and ``mar_100``, with a paired bootstrap over the same images.

    Per metric: the point values ``a`` and ``b`` (COCO's, from :meth:`DetectionOutputs.headline`),
    ``delta`` = b - a, the percentile interval ``low``/``high`` of the resampled differences,
    ``excludes_zero``, and ``p_value``: twice the smaller share of resampled differences on either
    side of 0 (at most 1), a two-sided bootstrap p-value (Efron & Tibshirani 1993, ch. 16) that
    cannot resolve below 1/R. ``verdict`` says in one sentence what the mAP difference means.
    Raises SftuneError when the two outputs are not over the same images, truths and classes.
    """
    check_comparable(a, b)
    samples_a, samples_b = resampled_scores([a, b], resamples, seed)
    point_a, point_b = a.headline(), b.headline()
    differences: dict[str, dict[str, Any]] = {}
    for name in HEADLINE:
        d = samples_b[name] - samples_a[name]
        d = d[~d.isnan()]
        interval = percentile_interval(d, CONFIDENCE)
        low, high = interval["low"], interval["high"]
        if d.numel():
            p_value = min(1.0, 2 * min(float((d <= 0).double().mean()), float((d >= 0).double().mean())))
        else:
            p_value = None
        va, vb = point_a[name], point_b[name]
        differences[name] = {
            "a": va, "b": vb, "delta": None if va is None or vb is None else vb - va,
            "low": _none_if_nan(low), "high": _none_if_nan(high),
            "excludes_zero": bool(low > 0 or high < 0), "p_value": p_value,
        }
    return {"differences": differences, "verdict": _verdict(differences["map"], len(a), resamples),
            "confidence": CONFIDENCE, "resamples": resamples, "n": len(a)}


def check_comparable(a: DetectionOutputs, b: DetectionOutputs) -> None:
    """Raise SftuneError (one line) unless ``a`` and ``b`` cover the same classes, images and true boxes."""
    from ...errors import SftuneError

    if a.classes != b.classes:
        raise SftuneError(f"the two models have different classes ({', '.join(a.classes[:5])}... vs "
                          f"{', '.join(b.classes[:5])}...); compare models trained on the same labels")
    if a.items != b.items:
        raise SftuneError(f"the two models were evaluated on different images ({len(a)} vs {len(b)}, e.g. one "
                          "skipped unreadable files); evaluate both on the same data and compare again")
    if a.image_sizes and b.image_sizes and a.image_sizes != b.image_sizes:
        raise SftuneError("the two evaluations read the images at different sizes; evaluate both on the same data")
    for ta, tb in zip(a.truths, b.truths):
        if not (torch.equal(ta["labels"], tb["labels"]) and torch.equal(ta["boxes"], tb["boxes"])
                and torch.equal(ignored(ta), ignored(tb))):
            raise SftuneError("the two evaluations read different true boxes for the same images; evaluate both on "
                              "the same data with the same annotation settings")


def _draw_counts(n: int, resamples: int, seed: int) -> Iterator[torch.Tensor]:
    """(b, N) float64 chunks of bootstrap draw counts (each row sums to N), ``resamples`` rows in all."""
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        draws = torch.randint(n, (b, n), generator=generator)
        yield torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(b, n, dtype=torch.float64))
        done += b


def _verdict(value: dict[str, Any], n: int, resamples: int) -> str:
    if value["delta"] is None or value["low"] is None:
        return "no mAP to compare: no scored true box"
    points = 100 * value["delta"]
    span = f"{CONFIDENCE:.0%} interval {100 * value['low']:+.2f} to {100 * value['high']:+.2f} points"
    p = value["p_value"]
    p_text = f"p < {1 / resamples:.2g}" if p == 0 else f"p = {p:.3g}"
    basis = f"{span}; bootstrap {p_text} over {resamples} resamples of {n} images"
    if value["low"] > 0:
        return f"B is better: mAP {points:+.2f} points ({basis})"
    if value["high"] < 0:
        return f"B is worse: mAP {points:+.2f} points ({basis})"
    return f"no clear difference: mAP {points:+.2f} points, the interval includes 0 ({basis})"


def _none_if_nan(value: float) -> float | None:
    return None if value != value else value
