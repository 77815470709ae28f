"""Anchor sizes and aspect ratios from the training boxes, instead of COCO's defaults.

``anchors_from_boxes(widths, heights)`` looks at the boxes the detector will actually see
(in the pixels of the detector's input, i.e. after its resize: pass ``scale``, see
:func:`input_scale`) and returns one or more anchor sizes per pyramid level and a shared set
of aspect ratios::

    plan = anchors_from_boxes(w, h, labels=y, scale=input_scale(480, 640, 480, 640))
    sizes, ratios = plan                 # ((36,), (91,), (110,), (197,)), (0.78, 0.96, 1.19)
    print(plan.summary())                # one line for the run log

The rule (simple on purpose, so the log line explains it):

* sizes: the (weighted) quantiles of the box side ``sqrt(w * h)`` at the probabilities
  ``(j + 0.5) / (levels * per_level)``, ascending, handed out to the levels from the finest
  stride up (small objects on the high-resolution maps). With ``labels``, every class weighs
  the same in total, so a rare class of small objects (BCCD's platelets: 7% of the boxes)
  gets its own anchor size instead of the frequent class (RBC: 85%) taking every level;
* aspect ratios (torchvision's convention: height / width): the weighted quantiles of
  ``h / w`` at ``ratio_quantiles`` (10/50/90 %), rounded to 2 decimals, duplicates merged,
  so round cells get ``(0.78, 0.96, 1.19)``, not COCO's ``(0.5, 1.0, 2.0)``;
* fewer than ``min_boxes`` usable boxes: torchvision's defaults (``4 * stride`` per level,
  with 2^(1/3) and 2^(2/3) steps when ``per_level == 3`` as in RetinaNet; ratios 0.5/1/2).

Boxes with no area are ignored (the data readers drop them; this is the last guard).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PYRAMID_STRIDES", "AnchorPlan", "anchors_from_boxes", "default_anchors", "input_scale"]

PYRAMID_STRIDES: tuple[int, ...] = (8, 16, 32, 64)  # the detection FPN's levels: three encoder maps + max-pool
DEFAULT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)  # torchvision's AnchorGenerator default


@dataclass(frozen=True)
class AnchorPlan:
    """Anchor sizes per pyramid level and the aspect ratios (h / w) shared by all levels.

    Unpacks like a pair: ``sizes, ratios = plan``.
    """

    sizes: tuple[tuple[int, ...], ...]  # one tuple per level, finest stride first
    aspect_ratios: tuple[float, ...]
    strides: tuple[int, ...]
    boxes: int  # usable boxes the plan was derived from
    fallback: bool  # True: too few boxes, torchvision's defaults
    side_quantiles: tuple[float, float, float] | None = None  # box side at 5 / 50 / 95 % (weighted)
    balanced: bool = False  # classes weighed equally

    def __iter__(self) -> Iterator:
        return iter((self.sizes, self.aspect_ratios))

    def summary(self) -> str:
        """One line for the run log."""
        sizes = " | ".join("/".join(str(s) for s in level) for level in self.sizes)
        strides = "/".join(str(s) for s in self.strides)
        ratios = "/".join(f"{r:g}" for r in self.aspect_ratios)
        if self.fallback:
            return (f"anchors: torchvision defaults (only {self.boxes} usable training boxes): sizes {sizes} px "
                    f"on strides {strides}, aspect ratios (h/w) {ratios}")
        lo, mid, hi = self.side_quantiles or (0.0, 0.0, 0.0)
        weighting = ", classes weighed equally" if self.balanced else ""
        return (f"anchors from {self.boxes} training boxes (side sqrt(w*h) 5/50/95%: {lo:.0f}/{mid:.0f}/{hi:.0f} px"
                f"{weighting}): sizes {sizes} px on strides {strides}, aspect ratios (h/w) {ratios}")

    def __str__(self) -> str:
        return self.summary()


def default_anchors(levels: Sequence[int] = PYRAMID_STRIDES, per_level: int = 1) -> AnchorPlan:
    """torchvision's defaults: size ``4 * stride`` per level (32 px on stride 8), times
    2^(i / per_level) for the extra sizes of a level (RetinaNet: 2^(1/3), 2^(2/3)); ratios 0.5/1/2."""
    sizes = tuple(tuple(int(4 * s * 2 ** (i / per_level)) for i in range(per_level)) for s in levels)
    return AnchorPlan(sizes=sizes, aspect_ratios=DEFAULT_RATIOS, strides=tuple(int(s) for s in levels), boxes=0,
                      fallback=True)


def input_scale(height: float, width: float, min_size: int, max_size: int) -> float:
    """The factor torchvision's GeneralizedRCNNTransform resizes an image of ``height x width``
    by (shorter side to ``min_size`` unless the longer side would pass ``max_size``)."""
    return min(min_size / min(height, width), max_size / max(height, width))


def anchors_from_boxes(widths: Sequence[float] | np.ndarray, heights: Sequence[float] | np.ndarray,
                       levels: Sequence[int] = PYRAMID_STRIDES, *, labels: Sequence[int] | np.ndarray | None = None,
                       scale: float | Sequence[float] | np.ndarray = 1.0, per_level: int = 1,
                       ratio_quantiles: Sequence[float] = (0.1, 0.5, 0.9), min_boxes: int = 20) -> AnchorPlan:
    """Anchor sizes per level and aspect ratios from the training boxes' size distribution.

    ``widths``/``heights``: box sizes in image pixels; ``scale``: the detector's resize factor
    (one number, or one per box: :func:`input_scale` of its image) so sizes are in the
    detector's input pixels; ``labels``: class of each box, to weigh classes equally;
    ``levels``: the pyramid's strides, finest first; ``per_level``: sizes per level (1 for
    Faster R-CNN's RPN as in the peer recipe, 3 for RetinaNet).
    """
    w = np.asarray(widths, dtype=np.float64).reshape(-1)
    h = np.asarray(heights, dtype=np.float64).reshape(-1)
    if w.shape != h.shape:
        raise ValueError(f"anchors_from_boxes: {w.size} widths but {h.size} heights")
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64).reshape(-1), w.shape) if np.ndim(scale) else float(scale)
    w, h = w * s, h * s
    usable = np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0)
    levels = tuple(int(x) for x in levels)
    if per_level < 1 or not levels:
        raise ValueError("anchors_from_boxes: needs at least one level and one size per level")
    n = int(usable.sum())
    if n < max(1, min_boxes):
        plan = default_anchors(levels, per_level)
        return AnchorPlan(plan.sizes, plan.aspect_ratios, plan.strides, boxes=n, fallback=True)

    w, h = w[usable], h[usable]
    weights = np.ones(n)
    balanced = False
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.size != usable.size:
            raise ValueError(f"anchors_from_boxes: {y.size} labels for {usable.size} boxes")
        y = y[usable]
        classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]  # every class sums to 1
        balanced = len(classes) > 1

    side = np.sqrt(w * h)
    count = len(levels) * per_level
    probs = (np.arange(count) + 0.5) / count
    flat = np.maximum(1, np.round(_weighted_quantiles(side, weights, probs))).astype(int)
    sizes = tuple(tuple(int(v) for v in flat[i * per_level:(i + 1) * per_level]) for i in range(len(levels)))

    ratios = np.round(_weighted_quantiles(h / w, weights, np.asarray(ratio_quantiles, dtype=np.float64)), 2)
    ratios = tuple(sorted({float(max(r, 0.01)) for r in ratios}))
    lo, mid, hi = (float(v) for v in _weighted_quantiles(side, weights, np.array([0.05, 0.5, 0.95])))
    return AnchorPlan(sizes=sizes, aspect_ratios=ratios, strides=levels, boxes=n, fallback=False,
                      side_quantiles=(lo, mid, hi), balanced=balanced)


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of ``values`` where each value counts ``weight`` times (midpoint rule, linear
    interpolation; equal weights give numpy's ``method='hazen'``)."""
    order = np.argsort(values, kind="stable")
    v, wt = values[order], weights[order]
    cum = (np.cumsum(wt) - 0.5 * wt) / wt.sum()
    return np.interp(probs, cum, v)
