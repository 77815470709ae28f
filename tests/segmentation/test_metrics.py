"""Segmentation metrics and outputs: every number against an independent numpy reference
(flattened pixel arrays, one class at a time), mIoU against torchmetrics where the two rules
agree, streaming against one-shot, and the bootstrap's intervals and paired comparison."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
import torch

from sftune.errors import SftuneError
from sftune.tasks.segmentation.metrics import (
    ConfusionStream,
    SegmentationMetric,
    confusion_per_image,
    segmentation_scores,
)
from sftune.tasks.segmentation.outputs import SegmentationOutputs, compare

IGNORE = 255
C = 8
CLASSES = [f"c{i}" for i in range(C)]


# ---------------------------------------------------------------- independent reference


def reference(preds: np.ndarray, target: np.ndarray, num_classes: int, ignore: int | None) -> dict:
    """The module's rule written from scratch on flat pixel arrays, one class at a time."""
    p, t = preds.ravel(), target.ravel()
    keep = (t >= 0) & (t < num_classes)
    if ignore is not None:
        keep &= t != ignore
    p, t = p[keep], t[keep]
    iou, dice, precision, recall, weights = [], [], [], [], []
    for k in range(num_classes):
        tp = int(np.sum((p == k) & (t == k)))
        fp = int(np.sum((p == k) & (t != k)))
        fn = int(np.sum((p != k) & (t == k)))
        absent = tp + fp + fn == 0
        iou.append(None if absent else tp / (tp + fp + fn))
        dice.append(None if absent else 2 * tp / (2 * tp + fp + fn))
        precision.append(tp / (tp + fp) if tp + fp else None)
        recall.append(tp / (tp + fn) if tp + fn else None)
        weights.append(np.sum(t == k) / len(t))
    scored = [v for v in iou if v is not None]
    return {
        "miou": float(np.mean(scored)),
        "mean_dice": float(np.mean([v for v in dice if v is not None])),
        "pixel_acc": float(np.mean(p == t)),
        "fw_iou": float(sum(w * (v or 0.0) for w, v in zip(weights, iou))),
        "iou": iou, "dice": dice, "precision": precision, "recall": recall,
        "pixels": [int(np.sum(t == k)) for k in range(num_classes)],
        "absent": [f"c{k}" for k in range(num_classes) if iou[k] is None],
    }


def random_batch(seed: int, n: int = 6, size: int = 12, absent: tuple[int, ...] = (3,),
                 only_true: int | None = 5, only_predicted: int | None = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and predictions over C classes with: ignore pixels, out-of-range labels, classes
    absent from both, a class true but never predicted, a class predicted but never true."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([k for k in range(C) if k not in absent and k != only_predicted])
    target = allowed[torch.randint(len(allowed), (n, size, size), generator=g)]
    correct = torch.rand(n, size, size, generator=g) < 0.6
    noise = torch.randint(C, (n, size, size), generator=g)
    preds = torch.where(correct, target, noise)
    for k in absent:
        preds[preds == k] = 0
    if only_true is not None:
        preds[preds == only_true] = 1
    target[torch.rand(n, size, size, generator=g) < 0.1] = IGNORE
    target[0, 0, :3] = 17  # a label outside [0, C) that is not the ignore index: unscored, counted
    return preds, target


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-12))


# ---------------------------------------------------------------- metrics.py


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_number_matches_the_numpy_reference(seed: int) -> None:
    preds, target = random_batch(seed)
    stream = ConfusionStream(C, IGNORE)
    stream.update(preds, target)
    got = stream.scores(CLASSES)
    ref = reference(preds.numpy(), target.numpy(), C, IGNORE)
    for name in ("miou", "mean_dice", "pixel_acc", "fw_iou"):
        assert math.isclose(got[name], ref[name], abs_tol=1e-12), name
    for name in ("iou", "dice", "precision", "recall"):
        assert all(close(a, b) for a, b in zip(got["per_class"][name], ref[name])), name
    assert got["per_class"]["pixels"] == ref["pixels"]
    assert got["absent"] == ref["absent"] == ["c3"]
    assert got["per_class_iou"]["c3"] is None
    assert got["per_class_iou"]["c5"] == 0.0  # true but never predicted: 0, kept in the mean
    assert got["per_class_iou"]["c6"] == 0.0  # predicted but never true: 0 (all false positives)
    assert got["per_class"]["recall"][6] is None and got["per_class"]["precision"][5] is None
    assert got["ignored_pixels"] == int((target == IGNORE).sum())
    assert got["out_of_range_pixels"] == 3
    assert got["scored_pixels"] == sum(ref["pixels"])
    matrix = np.array(got["confusion_matrix"])
    assert matrix.shape == (C, C) and matrix.sum() == got["scored_pixels"]
    json.dumps(got, allow_nan=False)


def test_absent_rule_on_a_hand_example() -> None:
    # 3 classes; class 2 appears nowhere. Truth [0, 0, 1, 1], prediction [0, 1, 1, 1].
    confusion = torch.tensor([[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    got = segmentation_scores(confusion, ["a", "b", "c"])
    assert got["per_class_iou"] == {"a": 0.5, "b": 2 / 3, "c": None}
    assert got["absent"] == ["c"]
    assert math.isclose(got["miou"], (0.5 + 2 / 3) / 2)  # neither (.. + 0) / 3 nor (.. + 1) / 3
    assert math.isclose(got["pixel_acc"], 3 / 4)
    assert math.isclose(got["fw_iou"], 0.5 * 0.5 + 0.5 * 2 / 3)
    assert math.isclose(got["mean_dice"], (2 / 3 + 4 / 5) / 2)
    nothing = segmentation_scores(torch.zeros(3, 3, dtype=torch.long), ["a", "b", "c"])
    assert nothing["miou"] is None and nothing["absent"] == ["a", "b", "c"] and "note" in nothing


@pytest.mark.parametrize("seed", [0, 1])
def test_miou_against_torchmetrics(seed: int) -> None:
    """Where torchmetrics and we agree, and where not. With no absent class, macro Jaccard and
    our mIoU are the same number. With absent classes: torchmetrics' per-class Jaccard
    (``average="none"``) reports 0 for a class with no true and no predicted pixel, where ours
    says None and leaves it out of the mean; our mIoU is the mean of torchmetrics' per-class
    values over the other classes. torchmetrics 1.9's macro average leaves absent classes out as
    we do; older releases kept their 0 in the mean (torchmetrics #1693), so that equality is
    only checked on 1.9 and later."""
    import torchmetrics
    from torchmetrics.classification import MulticlassJaccardIndex

    for absent in ((), (3, 4)):
        preds, target = random_batch(seed, absent=absent)
        target[target == 17] = IGNORE  # torchmetrics refuses labels outside [0, C) other than the ignore index
        macro = float(MulticlassJaccardIndex(C, ignore_index=IGNORE, average="macro")(preds, target))
        per_class = MulticlassJaccardIndex(C, ignore_index=IGNORE, average="none")(preds, target).tolist()
        stream = ConfusionStream(C, IGNORE)
        stream.update(preds, target)
        got = stream.scores(CLASSES)
        assert got["absent"] == [f"c{k}" for k in absent]
        for k, (ours, theirs) in enumerate(zip(got["per_class"]["iou"], per_class)):
            assert theirs == 0.0 if k in absent else math.isclose(ours, theirs, rel_tol=1e-5)
            assert (ours is None) == (k in absent)
        present = [v for k, v in enumerate(per_class) if k not in absent]
        assert math.isclose(got["miou"], sum(present) / len(present), rel_tol=1e-5)
        if not absent or tuple(int(x) for x in torchmetrics.__version__.split(".")[:2]) >= (1, 9):
            assert math.isclose(got["miou"], macro, rel_tol=1e-5)


def test_streaming_equals_one_shot_for_any_batch_split() -> None:
    preds, target = random_batch(7, n=9)
    one_shot = ConfusionStream(C, IGNORE)
    one_shot.update(preds, target)
    metric_one = SegmentationMetric(C, IGNORE)
    metric_one.update(preds, target)
    for split in ([9], [1] * 9, [4, 5], [2, 3, 4]):
        stream, metric = ConfusionStream(C, IGNORE), SegmentationMetric(C, IGNORE)
        for p, t in zip(preds.split(split), target.split(split)):
            stream.update(p, t)
            metric.update(p, t)
        assert torch.equal(stream.total, one_shot.total)
        assert torch.equal(stream.per_image, one_shot.per_image) and len(stream) == 9
        assert (stream.ignored_pixels, stream.out_of_range_pixels) == (one_shot.ignored_pixels, 3)
        assert torch.equal(metric.confusion, one_shot.total)
        assert all(torch.equal(a, b) for a, b in zip(metric.compute().values(), metric_one.compute().values()))
    # The per-image matrices are each image alone.
    alone = ConfusionStream(C, IGNORE)
    alone.update(preds[4:5], target[4:5])
    assert torch.equal(one_shot.per_image[4], alone.total)
    assert torch.equal(one_shot.per_image.sum(0), one_shot.total)


def test_metric_takes_logits_and_never_returns_nan() -> None:
    preds, target = random_batch(3)
    noise = 0.01 * torch.randn(*preds.shape, C, generator=torch.Generator().manual_seed(0))
    logits = (torch.nn.functional.one_hot(preds, C).float() + noise).permute(0, 3, 1, 2)  # (B, C, H, W)
    from_logits, from_labels = SegmentationMetric(C, IGNORE), SegmentationMetric(C, IGNORE)
    from_logits.update(logits, target)
    from_labels.update(preds, target)
    values = from_logits.compute()
    assert set(values) == {"miou", "pixel_acc", "mean_dice", "fw_iou"}
    ref = reference(preds.numpy(), target.numpy(), C, IGNORE)
    assert math.isclose(float(values["miou"]), ref["miou"], rel_tol=1e-6)
    assert torch.equal(from_logits.confusion, from_labels.confusion)
    empty = SegmentationMetric(C, IGNORE)
    empty.update(preds, torch.full_like(target, IGNORE))
    with pytest.warns(UserWarning, match="no pixel was scored"):
        values = empty.compute()
    assert all(float(v) == 0.0 for v in values.values())


def test_ignore_index_inside_the_classes_and_bad_inputs() -> None:
    target = torch.tensor([[[0, 1], [2, 0]]])
    preds = torch.tensor([[[1, 1], [2, 2]]])
    confusion, ignored, out_of_range = confusion_per_image(preds, target, 3, ignore_index=0)
    assert (ignored, out_of_range) == (2, 0)
    assert confusion[0].tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    stream = ConfusionStream(3, 0)
    with pytest.raises(ValueError, match="do not match"):
        stream.update(preds[:, :1], target)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        stream.update(preds + 5, target)
    with pytest.raises(ValueError, match="class indices"):
        stream.update(preds.float(), target)
    with pytest.raises(ValueError, match="expected 3"):
        stream.update(torch.zeros(1, 4, 2, 2), target)


# ---------------------------------------------------------------- outputs.py


def model_outputs(n: int, error_rates: torch.Tensor | float, seed: int = 0, size: int = 16,
                  truth_seed: int = 100) -> SegmentationOutputs:
    """``n`` images of blocky truth masks over C classes; the model gets a share of pixels wrong
    (a per-image share when ``error_rates`` is a tensor: images differ in difficulty)."""
    gt = torch.Generator().manual_seed(truth_seed)
    blocks = torch.randint(C - 1, (n, size // 4, size // 4), generator=gt)  # class C-1 never true
    target = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)
    target[:, :2, :2] = IGNORE
    g = torch.Generator().manual_seed(seed)
    rates = torch.as_tensor(error_rates, dtype=torch.float32).expand(n).view(n, 1, 1)
    wrong = torch.rand(n, size, size, generator=g) < rates
    preds = torch.where(wrong, torch.randint(C, (n, size, size), generator=g), target.clamp_max(C - 1))
    stream = ConfusionStream(C, IGNORE)
    for p, t in zip(preds.split(7), target.split(7)):
        stream.update(p, t)
    items = [{"image": f"img/{i}.png", "mask": f"mask/{i}.png"} for i in range(n)]
    return SegmentationOutputs.from_stream(stream, CLASSES, items, image_sizes=[(size, size)] * n)


def difficulty(n: int) -> torch.Tensor:
    return torch.linspace(0.1, 0.7, n)


def test_headline_and_per_image_miou() -> None:
    out = model_outputs(10, difficulty(10))
    head = out.headline()
    assert set(head) == {"miou", "pixel_acc", "mean_dice", "fw_iou", "per_class_iou", "absent", "n"}
    assert head["n"] == 10 and len(head["per_class_iou"]) == C
    assert math.isclose(head["miou"], segmentation_scores(out.confusion, CLASSES)["miou"])
    per_image = out.per_image_miou()
    assert per_image.shape == (10,) and per_image.dtype == torch.float32
    for i in (0, 9):
        alone = segmentation_scores(out.per_image[i], CLASSES)
        assert math.isclose(float(per_image[i]), alone["miou"], rel_tol=1e-6)
    assert per_image[0] > per_image[9]  # the easiest image beats the hardest
    json.dumps(out.to_dict(resamples=50), allow_nan=False)


def test_intervals_contain_the_estimate_and_shrink_like_one_over_sqrt_n() -> None:
    out = model_outputs(20, difficulty(20))
    head = out.headline()
    iv = out.intervals(resamples=2000, seed=0)
    for name in ("miou", "pixel_acc", "mean_dice", "fw_iou"):
        assert iv[name]["low"] < head[name] < iv[name]["high"], name
    tiled = SegmentationOutputs(CLASSES, out.per_image.repeat(4, 1, 1), out.items * 4)
    assert math.isclose(tiled.headline()["miou"], head["miou"], rel_tol=1e-12)
    iv4 = tiled.intervals(resamples=2000, seed=0)
    ratio = (iv4["miou"]["high"] - iv4["miou"]["low"]) / (iv["miou"]["high"] - iv["miou"]["low"])
    assert 0.35 < ratio < 0.65  # 1/sqrt(4) = 0.5


def test_comparing_a_model_with_itself_gives_a_zero_width_interval() -> None:
    out = model_outputs(12, difficulty(12))
    result = compare(out, out, resamples=200)
    for d in result["differences"].values():
        assert d["low"] == d["high"] == d["delta"] == 0.0 and d["p_value"] == 1.0 and not d["excludes_zero"]
    assert result["verdict"].startswith("no clear difference")


def test_paired_comparison_detects_a_clearly_better_model() -> None:
    rates = difficulty(30)
    a = model_outputs(30, rates, seed=1)
    b = model_outputs(30, rates * 0.5, seed=2)  # half the errors on every image
    result = compare(a, b, resamples=1000, seed=0)
    miou = result["differences"]["miou"]
    assert miou["delta"] > 0 and miou["low"] > 0 and miou["excludes_zero"] and miou["p_value"] < 0.01
    assert result["verdict"].startswith("B is better")
    assert compare(b, a, resamples=1000)["verdict"].startswith("B is worse")
    # Pairing pays: both models find the same images hard, so the difference's interval is narrower
    # than it would be for independent samples (the root of the sum of squared widths).
    width_a, width_b = (iv["miou"]["high"] - iv["miou"]["low"] for iv in (a.intervals(), b.intervals()))
    assert miou["high"] - miou["low"] < 0.7 * math.hypot(width_a, width_b)
    json.dumps(result, allow_nan=False)


def test_two_images_and_no_image() -> None:
    a, b = model_outputs(2, 0.5, seed=1), model_outputs(2, 0.1, seed=2)
    iv = a.intervals(resamples=300)
    assert iv["miou"]["low"] <= a.headline()["miou"] <= iv["miou"]["high"]
    result = compare(a, b, resamples=300)
    assert result["n"] == 2 and result["differences"]["miou"]["delta"] > 0
    empty = SegmentationOutputs(CLASSES, torch.zeros(0, C, C, dtype=torch.long), [])
    assert empty.headline()["miou"] is None and empty.per_image_miou().shape == (0,)
    assert math.isnan(empty.intervals(resamples=10)["miou"]["low"])
    json.dumps(empty.to_dict(resamples=10), allow_nan=False)


def test_compare_refuses_different_images_classes_or_masks() -> None:
    a = model_outputs(6, 0.3)
    fewer = SegmentationOutputs(CLASSES, a.per_image[:5], a.items[:5])
    with pytest.raises(SftuneError, match="different images"):
        compare(a, fewer, resamples=10)
    renamed = SegmentationOutputs([c.upper() for c in CLASSES], a.per_image, a.items)
    with pytest.raises(SftuneError, match="different classes"):
        compare(a, renamed, resamples=10)
    other_masks = model_outputs(6, 0.3, truth_seed=5)
    with pytest.raises(SftuneError, match="different masks") as error:
        compare(a, other_masks, resamples=10)
    assert "\n" not in str(error.value)


def test_bootstrap_is_fast_for_500_images_of_12_classes() -> None:
    g = torch.Generator().manual_seed(0)
    classes = [f"k{i}" for i in range(12)]
    per_image = torch.randint(0, 5000, (500, 12, 12), generator=g)
    out = SegmentationOutputs(classes, per_image, [{"image": str(i)} for i in range(500)])
    out.intervals(resamples=10)  # warm-up: first-call overheads are not the bootstrap's
    start = time.perf_counter()
    out.intervals(resamples=1000, seed=0)
    assert time.perf_counter() - start < 1.0


def test_segmentation_outputs_validates_its_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, 8, 8\)"):
        SegmentationOutputs(CLASSES, torch.zeros(2, 3, 3, dtype=torch.long), [{}, {}])
    with pytest.raises(ValueError, match="items"):
        SegmentationOutputs(CLASSES, torch.zeros(2, C, C, dtype=torch.long), [{}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SegmentationOutputs(CLASSES, torch.zeros(1, C, C, dtype=torch.int32), [{}])  # any integer dtype
