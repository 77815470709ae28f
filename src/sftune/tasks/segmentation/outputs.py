"""What a segmentation model did on each image of a labeled set: the raw material of
metrics.json, confidence intervals, model comparisons and the worst-images gallery.

Only one (C, C) int64 pixel confusion matrix per image is kept (11 classes: 968 bytes an
image), never logits or masks, so evaluating 10k images stays in the tens of MB. Every metric
is a function of summed matrices, which makes the bootstrap cheap.

The bootstrap resamples *images*, not pixels: neighbouring pixels of one image are strongly
correlated, so the image is the unit that was sampled (one val image of 153 moves mIoU by
more than its pixel count suggests). Each of R resamples draws N images with replacement,
written as a (R, N) matrix of draw counts; (R, N) @ (N, C*C) gives R summed confusion
matrices at once, and mIoU is recomputed on each under the absent-class rule of metrics.py
(a class absent from a resample is left out of that resample's mean). The draws use the same
generator scheme as sftune.eval.bootstrap (``torch.Generator().manual_seed(seed)``, then
``randint``), and a comparison uses the same draws for both models, so differences are paired.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...eval.bootstrap import CONFIDENCE, RESAMPLES, percentile_interval
from .metrics import DEFAULT_IGNORE_INDEX, HEADLINE, ConfusionStream, confusion_scores, segmentation_scores

_CHUNK_ELEMENTS = 5_000_000  # resamples x images per chunk: 40 MB of float64 draw counts


@dataclass
class SegmentationOutputs:
    """Per-image results of one model on one labeled segmentation set, in data order.

    ``per_image``: (N, C, C) int64 pixel counts, rows true class, columns predicted class.
    ``items``: what a person looks at for each image, e.g. ``{"image": path, "mask": path}``.
    ``image_sizes``: (height, width) of each image as scored (may be empty when unknown).
    ``ignored_pixels`` / ``out_of_range_pixels``: target pixels left unscored because they were
    the ignore index / another value outside [0, C) (a label mix-up worth a warning).
    ``features``: (N, F) pooled backbone features when asked for (drift, replay), else None.
    Raises ValueError when the shapes and lengths disagree.
    """

    classes: list[str]
    per_image: torch.Tensor
    items: list[dict[str, str]]
    ignore_index: int | None = DEFAULT_IGNORE_INDEX
    skipped: list[tuple[str, str]] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    ignored_pixels: int = 0
    out_of_range_pixels: int = 0
    features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        c = len(self.classes)
        if self.per_image.ndim != 3 or self.per_image.shape[1:] != (c, c):
            raise ValueError(f"per_image must be (N, {c}, {c}) for {c} classes, got {tuple(self.per_image.shape)}")
        if len(self.items) != len(self.per_image):
            raise ValueError(f"{len(self.items)} items for {len(self.per_image)} confusion matrices")
        if self.image_sizes and len(self.image_sizes) != len(self.per_image):
            raise ValueError(f"{len(self.image_sizes)} image sizes for {len(self.per_image)} images")
        self.per_image = self.per_image.long().cpu()

    @classmethod
    def from_stream(cls, stream: ConfusionStream, classes: list[str], items: list[dict[str, str]],
                    skipped: Sequence[tuple[str, str]] = (), image_sizes: Sequence[tuple[int, int]] = (),
                    features: torch.Tensor | None = None) -> "SegmentationOutputs":
        """The outputs of a finished :class:`ConfusionStream` whose images were ``items``, in order."""
        return cls(list(classes), stream.per_image, list(items), stream.ignore_index, list(skipped),
                   [(int(h), int(w)) for h, w in image_sizes], stream.ignored_pixels,
                   stream.out_of_range_pixels, features)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def confusion(self) -> torch.Tensor:
        """(C, C) int64: the pixel confusion matrix of the whole set (sum over images)."""
        return self.per_image.sum(dim=0)

    def scores(self) -> dict[str, Any]:
        """Every number of :func:`~sftune.tasks.segmentation.metrics.segmentation_scores`, plus
        ``n`` (images) and the unscored pixel counts."""
        return {**segmentation_scores(self.confusion, self.classes), "n": len(self),
                "ignore_index": self.ignore_index, "ignored_pixels": self.ignored_pixels,
                "out_of_range_pixels": self.out_of_range_pixels}

    def headline(self) -> dict[str, Any]:
        """metrics.json's numbers: ``miou``, ``pixel_acc``, ``mean_dice``, ``fw_iou`` (fractions;
        None if no pixel was scored), ``per_class_iou`` {class: IoU or None if absent},
        ``absent`` (class names left out of the means) and ``n`` (images)."""
        full = segmentation_scores(self.confusion, self.classes)
        return {**{k: full[k] for k in HEADLINE}, "per_class_iou": full["per_class_iou"],
                "absent": full["absent"], "n": len(self)}

    def per_image_miou(self) -> torch.Tensor:
        """(N,) float32: each image's own mIoU over the classes true or predicted in it (the
        absent rule applied per image); NaN for an image with no scored pixel, which an
        ascending ``torch.sort`` puts last, so it never ranks among the worst images."""
        return confusion_scores(self.per_image)["miou"].float()

    def intervals(self, resamples: int = RESAMPLES, seed: int = 0,
                  confidence: float = CONFIDENCE) -> dict[str, dict[str, float]]:
        """Percentile bootstrap intervals over images of each headline metric (miou, pixel_acc,
        mean_dice, fw_iou): {name: {"low", "high"}}, fractions; NaN when there is no image."""
        samples = resampled_scores([self], resamples, seed)[0]
        return {name: percentile_interval(v, confidence) for name, v in samples.items()}

    def to_dict(self, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> dict[str, Any]:
        """JSON-ready: :meth:`scores`, their bootstrap ``intervals`` (None where undefined), the
        skipped files and each image's item, size and mIoU (None for an unscored image)."""
        intervals = {name: {k: _none_if_nan(v) for k, v in iv.items()}
                     for name, iv in self.intervals(resamples, seed, confidence).items()}
        return {
            **self.scores(),
            "intervals": intervals,
            "confidence": confidence,
            "resamples": resamples,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "per_image": {
                "items": list(self.items),
                "size": [list(s) for s in self.image_sizes],
                "miou": [_none_if_nan(v) for v in self.per_image_miou().tolist()],
            },
        }


def resampled_scores(outs: Sequence[SegmentationOutputs], resamples: int = RESAMPLES,
                     seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """For each of ``outs`` (same images, same order), each headline metric over the same
    ``resamples`` bootstrap draws of images: a (resamples,) float64 tensor per name (NaN for a
    draw with no scored pixel). Raises ValueError when the outputs hold different image counts."""
    n = len(outs[0])
    if any(len(o) != n for o in outs):
        raise ValueError("a paired bootstrap needs outputs over the same images")
    if n == 0:
        nan = torch.full((resamples,), float("nan"), dtype=torch.float64)
        return [{name: nan.clone() for name in HEADLINE} for _ in outs]
    c = outs[0].per_image.shape[1]
    flat = [o.per_image.reshape(n, c * c).double() for o in outs]  # (N, C*C); float64 counts are exact below 2**53
    per_model: list[dict[str, list[torch.Tensor]]] = [{} for _ in outs]
    for weights in _draw_counts(n, resamples, seed):
        for matrices, acc in zip(flat, per_model):
            summed = (weights @ matrices).view(-1, c, c)  # (b, C, C): one confusion matrix per resample
            for name, v in confusion_scores(summed).items():
                acc.setdefault(name, []).append(v)
    return [{k: torch.cat(v) for k, v in m.items()} for m in per_model]


def compare(a: SegmentationOutputs, b: SegmentationOutputs, resamples: int = RESAMPLES,
            seed: int = 0) -> dict[str, Any]:
    """B - A for each headline metric, with a paired bootstrap over the same images.

    Per metric: the point values ``a`` and ``b``, ``delta`` = b - a, the percentile interval
    ``low``/``high`` of the resampled differences, ``excludes_zero``, and ``p_value``: twice the
    smaller share of resampled differences on either side of 0 (at most 1), a two-sided
    bootstrap p-value in the sense of Efron & Tibshirani 1993 (ch. 16); with R resamples it
    cannot resolve below 1/R. ``verdict`` says in one sentence what the mIoU difference means.
    Raises SftuneError when the two outputs are not over the same images, masks and classes.
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
    return {"differences": differences, "verdict": _verdict(differences["miou"], len(a), resamples),
            "confidence": CONFIDENCE, "resamples": resamples, "n": len(a)}


def check_comparable(a: SegmentationOutputs, b: SegmentationOutputs) -> None:
    """Raise SftuneError (one line) unless ``a`` and ``b`` cover the same classes, images and masks."""
    from ...errors import SftuneError

    if a.classes != b.classes:
        raise SftuneError(f"the two models have different classes ({', '.join(a.classes[:5])}... vs "
                          f"{', '.join(b.classes[:5])}...); compare models trained on the same labels")
    if a.items != b.items:
        raise SftuneError(f"the two models were evaluated on different images ({len(a)} vs {len(b)}, e.g. one "
                          "skipped unreadable files); evaluate both on the same data and compare again")
    if a.ignore_index != b.ignore_index:
        raise SftuneError(f"the two evaluations ignore different mask values ({a.ignore_index} vs "
                          f"{b.ignore_index}); evaluate both with the same ignore index")
    # Same images must give the same true-pixel counts per class; otherwise the masks were read
    # or resized differently and the pixels being compared are not the same pixels.
    if a.image_sizes and b.image_sizes and a.image_sizes != b.image_sizes:
        raise SftuneError("the two evaluations scored the images at different sizes; evaluate both at the same size")
    if not torch.equal(a.per_image.sum(dim=2), b.per_image.sum(dim=2)):
        raise SftuneError("the two evaluations read different masks for the same images (their true pixel counts "
                          "differ); evaluate both on the same data with the same mask settings")


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


def _verdict(miou: dict[str, Any], n: int, resamples: int) -> str:
    if miou["delta"] is None or miou["low"] is None:
        return "no mIoU to compare: no pixel was scored"
    points = 100 * miou["delta"]
    span = f"{CONFIDENCE:.0%} interval {100 * miou['low']:+.2f} to {100 * miou['high']:+.2f} points"
    p = miou["p_value"]
    p_text = f"p < {1 / resamples:.2g}" if p == 0 else f"p = {p:.3g}"
    basis = f"{span}; bootstrap {p_text} over {resamples} resamples of {n} images"
    if miou["low"] > 0:
        return f"B is better: mIoU {points:+.2f} points ({basis})"
    if miou["high"] < 0:
        return f"B is worse: mIoU {points:+.2f} points ({basis})"
    return f"no clear difference: mIoU {points:+.2f} points, the interval includes 0 ({basis})"


def _none_if_nan(value: float) -> float | None:
    return None if value != value else value
