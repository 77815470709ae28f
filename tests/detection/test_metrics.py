"""Detection metrics and outputs: every COCO number against pycocotools' COCOeval run directly on
COCO-format dicts built here (random cases with a class that is never true, empty images,
difficult and crowd boxes, tied scores), the fast bootstrap re-accumulation against COCOeval on
repeated images, the matched-box confusion matrix on hand-built cases, and the bootstrap's
intervals and paired comparison."""

from __future__ import annotations

import contextlib
import io
import pickle
import time

import numpy as np
import pytest
import torch

from sftune.errors import SftuneError
from sftune.tasks.detection.metrics import (
    RECALL_THRESHOLDS,
    confusion_counts,
    detection_metric,
    detection_scores,
    match_boxes,
    match_detections,
    per_class_at_threshold,
)
from sftune.tasks.detection.outputs import DetectionOutputs, compare

CLASSES = ["cell", "platelet", "rbc", "never"]  # "never" is predicted but never true
C = len(CLASSES)


# ---------------------------------------------------------------- cases and the independent reference


def random_case(seed: int, n_images: int = 12, ties: bool = False, extra: int = 0):
    """Predictions and truths over C classes. Image kinds by i % 6: 0 = no truth and no
    prediction, 5 = no truth but predictions, else 1-6 true boxes of all sizes (small, medium,
    large), some difficult or crowd, found 0-2 times with jitter (sometimes with the wrong class),
    plus random false alarms; the last class is never true; about 1 box in 25 has one side
    inverted (x2 < x1 or y2 < y1: a negative COCO area). ``ties``: scores rounded to 0.1.
    ``extra``: that many more low-scoring random boxes per image (a detector's long tail)."""
    rng = np.random.default_rng(seed)
    preds, truths = [], []
    for i in range(n_images):
        kind = i % 6
        g = 0 if kind in (0, 5) else int(rng.integers(1, 7))
        boxes, labels = [], []
        for _ in range(g):
            w = rng.choice([rng.uniform(4, 30), rng.uniform(33, 95), rng.uniform(97, 160)])
            h = rng.uniform(5, 120)
            x, y = rng.uniform(0, 300), rng.uniform(0, 200)
            boxes.append([x, y, x + w, y + h])
            labels.append(int(rng.integers(0, C - 1)))
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        flip = (rng.random(g) < 0.04) | ((np.arange(g) == 0) & (i == 2))
        boxes[flip] = boxes[flip][:, [2, 1, 0, 3]]  # x2 < x1
        truths.append({"boxes": torch.tensor(boxes), "labels": torch.tensor(labels, dtype=torch.int64),
                       "difficult": torch.tensor(rng.random(g) < 0.15), "iscrowd": torch.tensor(rng.random(g) < 0.1)})
        pb, pl, ps = [], [], []
        if kind != 0:
            for b, label in zip(boxes, labels):
                for _ in range(int(rng.integers(0, 3))):
                    jitter = rng.normal(0, 0.12, 4) * np.array([b[2] - b[0], b[3] - b[1]] * 2)
                    pb.append(b + jitter)
                    pl.append(label if rng.random() < 0.8 else int(rng.integers(0, C)))
                    ps.append(rng.random())
            for _ in range(int(rng.integers(0, 4)) + extra):
                x, y = rng.uniform(0, 300), rng.uniform(0, 200)
                pb.append([x, y, x + rng.uniform(3, 120), y + rng.uniform(3, 120)])
                pl.append(int(rng.integers(0, C)))
                ps.append(rng.random() * (0.5 if extra else 1.0))
        pb = np.array(pb, np.float32).reshape(-1, 4)
        flip = (rng.random(len(pb)) < 0.04) | ((np.arange(len(pb)) == 0) & (i == 1))
        pb[flip] = pb[flip][:, [0, 3, 2, 1]]  # y2 < y1
        scores = np.array(ps, np.float32)
        if ties:
            scores = np.round(scores, 1).astype(np.float32)
        preds.append({"boxes": torch.tensor(pb), "scores": torch.tensor(scores),
                      "labels": torch.tensor(pl, dtype=torch.int64)})
    return preds, truths


def coco_eval(preds, truths, num_classes: int = C):
    """pycocotools' COCOeval on COCO dicts built here: xywh boxes, area = w * h, difficult or crowd
    -> iscrowd 1, every class a category; run with its default parameters."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, results = [], []
    for i, (p, t) in enumerate(zip(preds, truths)):
        crowd = (t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool))
                 | t.get("iscrowd", torch.zeros(len(t["labels"]), dtype=torch.bool))).tolist()
        for box, label, flag in zip(t["boxes"].double().tolist(), t["labels"].tolist(), crowd):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": label,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": int(flag)})
        for box, label, score in zip(p["boxes"].double().tolist(), p["labels"].tolist(), p["scores"].double().tolist()):
            results.append({"image_id": i, "category_id": label, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(truths))], "annotations": annotations,
                      "categories": [{"id": k, "name": str(k)} for k in range(num_classes)]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def _coco_class(evaluation, k: int, t: int | slice = slice(None)) -> float | None:
    values = evaluation.eval["precision"][t, :, k, 0, 2]
    values = values[values > -1]
    return float(values.mean()) if values.size else None


STATS = {"map": 0, "map_50": 1, "map_75": 2, "map_small": 3, "map_medium": 4, "map_large": 5,
         "mar_1": 6, "mar_10": 7, "mar_100": 8}


# ---------------------------------------------------------------- COCO numbers


@pytest.mark.parametrize("seed", range(4))
def test_scores_equal_pycocotools(seed):
    preds, truths = random_case(seed, ties=seed % 2 == 1)
    # The case holds what it claims: empty images, predictions without truth, ignored boxes, a never-true class.
    assert any(len(p["labels"]) == 0 and len(t["labels"]) == 0 for p, t in zip(preds, truths))
    assert any(len(p["labels"]) > 0 and len(t["labels"]) == 0 for p, t in zip(preds, truths))
    assert any(bool((t["difficult"] | t["iscrowd"]).any()) for t in truths)
    assert any(int((p["labels"] == C - 1).sum()) for p in preds) and not any(int((t["labels"] == C - 1).sum()) for t in truths)
    assert any(bool((p["boxes"][:, 3] < p["boxes"][:, 1]).any()) for p in preds)
    assert any(bool((t["boxes"][:, 2] < t["boxes"][:, 0]).any()) for t in truths)

    ours = detection_scores(preds, truths, CLASSES)
    reference = coco_eval(preds, truths)
    for key, index in STATS.items():
        expected = reference.stats[index]
        if expected == -1:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(expected, abs=1e-6), key
    for k, name in enumerate(CLASSES):
        for key, t in (("per_class_ap", slice(None)), ("per_class_ap50", 0), ("per_class_ap75", 5)):
            expected = _coco_class(reference, k, t)
            assert (ours[key][name] is None) if expected is None else ours[key][name] == pytest.approx(expected, abs=1e-6)
    assert ours["per_class_ap"]["never"] is None and ours["absent"] == ["never"]
    n_ignored = sum(int((t["difficult"] | t["iscrowd"] | (t["boxes"][:, 2] < t["boxes"][:, 0])).sum()) for t in truths)
    assert ours["n_ignored_boxes"] == n_ignored and ours["n_boxes"] == sum(len(t["labels"]) for t in truths) - n_ignored
    curves = ours["pr_curves"]
    assert curves["recall"] == RECALL_THRESHOLDS.tolist() and [c["iou"] for c in curves["curves"]] == [0.5, 0.75]
    for k, name in enumerate(CLASSES[:-1]):
        np.testing.assert_allclose(curves["curves"][0]["precision"][name], reference.eval["precision"][0, :, k, 0, 2],
                                   atol=1e-12)
    assert curves["curves"][0]["precision"]["never"] is None

    # The bootstrap's own re-accumulation, at unit weights, is COCOeval too.
    matches = match_detections(preds, truths, C)
    summary = matches.summary()
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert float(summary[key][0]) == pytest.approx(reference.stats[STATS[key]], abs=1e-9), key
    ap = matches.average_precision()["ap"][0]  # (T, K), NaN for the never-true class
    per_class_ap = np.where(np.isnan(ap).all(axis=0), np.nan, np.nan_to_num(ap).mean(axis=0))
    for k in range(C):
        expected = _coco_class(reference, k)
        assert np.isnan(per_class_ap[k]) if expected is None else per_class_ap[k] == pytest.approx(expected, abs=1e-9)


def test_weights_equal_coco_on_repeated_images():
    """A resample counts image i w_i times: COCOeval on the images repeated so gives the same numbers."""
    preds, truths = random_case(7, n_images=10)
    weights = np.array([[2, 0, 1, 3, 0, 1, 1, 2, 0, 1], [0, 0, 0, 0, 4, 1, 0, 0, 0, 1]], dtype=np.float64)
    summary = match_detections(preds, truths, C).summary(weights)
    for row, w in enumerate(weights):
        repeated = [i for i in range(10) for _ in range(int(w[i]))]
        reference = coco_eval([preds[i] for i in repeated], [truths[i] for i in repeated])
        for key in ("map", "map_50", "map_75", "mar_100"):
            expected = reference.stats[STATS[key]]
            assert (np.isnan(summary[key][row]) if expected == -1
                    else summary[key][row] == pytest.approx(expected, abs=1e-9)), (row, key)


def _five_boxes():
    boxes = torch.tensor([[10.0 + 40 * i, 10.0, 40.0 + 40 * i, 40.0] for i in range(5)])
    truth = {"boxes": boxes, "labels": torch.zeros(5, dtype=torch.int64)}
    ranked = torch.cat([boxes[:3], torch.tensor([[300.0, 300.0, 330.0, 330.0]]), boxes[3:4]])  # hit hit hit miss hit
    pred = {"boxes": ranked, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), "labels": torch.zeros(5, dtype=torch.int64)}
    return pred, truth


def test_torchmetrics_defaults_differ_from_pycocotools_ours_do_not():
    """3 of 5 boxes is a recall of exactly 0.6: torchmetrics' float32 recall point 0.6000000238 misses it."""
    from torchmetrics.detection import MeanAveragePrecision

    pred, truth = _five_boxes()
    reference = coco_eval([pred], [truth], 1).stats[1]
    default = MeanAveragePrecision()
    default.update([pred], [truth])
    assert abs(float(default.compute()["map_50"]) - reference) > 5e-3  # 0.7525 vs 0.7624
    assert detection_scores([pred], [truth], ["a"])["map_50"] == pytest.approx(reference, abs=1e-12)


def test_difficult_and_crowd_boxes_are_ignored():
    regular = [10.0, 10.0, 50.0, 50.0]
    hard = [100.0, 100.0, 200.0, 200.0]
    for flag in ("difficult", "iscrowd"):
        truth = {"boxes": torch.tensor([regular, hard]), "labels": torch.tensor([0, 0]), flag: torch.tensor([False, True])}
        found = {"boxes": torch.tensor([regular]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
        # The ignored box is not a miss.
        assert detection_scores([found], [truth], ["a"])["map_50"] == pytest.approx(1.0)
        # A detection on it, even above the right one, is not a false positive; nor is a small one inside it
        # (COCO's crowd overlap: intersection over the detection's area).
        noisy = {"boxes": torch.tensor([hard, [120.0, 120.0, 150.0, 150.0], regular]),
                 "scores": torch.tensor([0.99, 0.98, 0.9]), "labels": torch.tensor([0, 0, 0])}
        scores = detection_scores([noisy], [truth], ["a"])
        assert scores["map_50"] == pytest.approx(1.0) and scores["n_boxes"] == 1 and scores["n_ignored_boxes"] == 1
        assert float(match_detections([noisy], [truth], 1).summary()["map_50"][0]) == pytest.approx(1.0)
        assert match_boxes(noisy, truth, 1).tolist() == [[1, 0], [0, 0]]  # no false alarm, no miss
    # Not ignored, the same box is a miss: recall 1/2 reads precision 1 at 51 of the 101 points.
    plain = {"boxes": torch.tensor([regular, hard]), "labels": torch.tensor([0, 0])}
    found = {"boxes": torch.tensor([regular]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    assert detection_scores([found], [plain], ["a"])["map_50"] == pytest.approx(51 / 101)


def test_empty_sets_and_images_without_boxes():
    empty = detection_scores([], [], CLASSES)
    assert empty["map"] is None and empty["n"] == 0 and empty["per_class_ap"] == dict.fromkeys(CLASSES)
    nothing = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    no_truth = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    scores = detection_scores([nothing, nothing], [no_truth, no_truth], CLASSES)
    assert scores["map"] is None and scores["map_50"] is None and scores["n"] == 2 and scores["absent"] == CLASSES
    only_false = {"boxes": torch.tensor([[1.0, 1, 9, 9]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    assert detection_scores([only_false], [no_truth], CLASSES)["map"] is None  # nothing true: no mAP, not NaN


def test_labels_outside_the_classes_are_refused():
    pred, truth = _five_boxes()
    with pytest.raises(ValueError, match="subtract 1"):  # torchvision's 1-based labels passed through unshifted
        detection_scores([pred], [{**truth, "labels": torch.full((5,), 1)}], ["a"])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        match_boxes({**pred, "labels": torch.full((5,), -1)}, truth, 1)


def test_detection_metric_streams_batches_like_detection_scores():
    preds, truths = random_case(3, n_images=12)
    metric = detection_metric(C)
    metric.update(preds[:5], truths[:5])  # difficult / crowd flags go in as they are
    metric.update(preds[5:], truths[5:])
    result = metric.compute()
    expected = detection_scores(preds, truths, CLASSES)
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert float(result[key]) == pytest.approx(expected[key], abs=1e-6), key
    assert len(result["map_per_class"]) == C  # class_metrics=True: one per class seen
    assert pickle.loads(pickle.dumps(metric)).num_classes == C  # a module-level class: DDP spawn can pickle it
    with pytest.raises(ValueError, match="subtract 1"):
        metric.update(preds[:1], [{**truths[1], "labels": torch.full_like(truths[1]["labels"], C)}])


# ---------------------------------------------------------------- the matched-box confusion matrix


def _box(x: float, y: float, size: float = 20.0) -> list[float]:
    return [x, y, x + size, y + size]


def test_confusion_matrix_hand_built():
    # a = class 0, b = class 1, c = class 2; index 3 is background.
    truth = {"boxes": torch.tensor([_box(0, 0), _box(50, 0), _box(100, 0), _box(150, 0)]),
             "labels": torch.tensor([0, 1, 2, 0]), "difficult": torch.tensor([False, False, False, True])}
    pred = {"boxes": torch.tensor([_box(1, 1), _box(50, 1), _box(200, 200), _box(150, 1), _box(100, 0)]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.95, 0.3]),
            "labels": torch.tensor([0, 2, 1, 0, 2])}
    matrix = match_boxes(pred, truth, 3)
    assert matrix.tolist() == [
        [1, 0, 0, 0],  # a found
        [0, 0, 1, 0],  # b called c: a confusion
        [0, 0, 0, 1],  # c's only prediction scores 0.3 < 0.5: a miss
        [0, 1, 0, 0],  # a b where nothing is: a false alarm; the prediction on the difficult box counts nowhere
    ]
    assert confusion_counts(matrix) == {"matched": 1, "confused": 1, "missed": 1, "false_alarms": 1}
    lower = match_boxes(pred, truth, 3, score_threshold=0.25)
    assert lower[2].tolist() == [0, 0, 1, 0]  # with a lower threshold c is found
    table = per_class_at_threshold(matrix, ["a", "b", "c"])
    assert table["precision"] == [1.0, 0.0, 0.0] and table["recall"] == [1.0, 0.0, 0.0]
    assert table["true_boxes"] == [1, 1, 1] and table["false_alarms"] == [0, 1, 0]


def test_confusion_matrix_matches_own_class_first_and_counts_duplicates():
    # The class-0 prediction overlaps the class-1 box more (IoU 0.81) than the class-0 box (IoU 0.53):
    # it is still a true positive of class 0 (what mAP counts), and the class-1 box is missed.
    truth = {"boxes": torch.tensor([[0.0, 0, 100, 100], [10.0, 0, 110, 100]]), "labels": torch.tensor([0, 1])}
    pred = {"boxes": torch.tensor([[14.0, 0, 114, 100], [14.0, 0, 114, 100]]), "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 0])}
    # The second, duplicate prediction finds no free box of its class but the class-1 box: a confusion.
    assert match_boxes(pred, truth, 2).tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    one = {k: v[:1] for k, v in pred.items()}
    assert match_boxes(one, truth, 2).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    same = {"boxes": truth["boxes"][:1], "labels": truth["labels"][:1]}
    assert match_boxes(pred, same, 2).tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]  # a duplicate is a false alarm


@pytest.mark.parametrize("seed", [0, 5])
def test_confusion_diagonal_is_cocos_true_positives_at_the_threshold(seed):
    preds, truths = random_case(seed, n_images=18)
    matches = match_detections(preds, truths, C)
    for threshold in (0.3, 0.5, 0.8):
        total = sum(match_boxes(p, t, C, score_threshold=threshold) for p, t in zip(preds, truths))
        expected = [int((cm.tp[0] & (cm.score >= threshold)).sum()) for cm in matches.per_class]
        assert total.diagonal()[:C].tolist() == expected


# ---------------------------------------------------------------- outputs, bootstrap, comparison


def _outputs(preds, truths, **kwargs) -> DetectionOutputs:
    return DetectionOutputs(list(CLASSES), preds, truths, [f"img{i}.jpg" for i in range(len(preds))], **kwargs)


def test_headline_and_per_image_ap50():
    a, b = [0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 60.0, 60.0]

    def p(boxes, scores, labels):
        return {"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores), "labels": torch.tensor(labels)}

    def t(boxes, labels):
        return {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64)}

    preds = [p([a, b], [0.9, 0.8], [0, 1]),  # perfect
             p([a], [0.9], [0]),  # one of two boxes of class 0 found
             p([a], [0.9], [2]),  # a confident false alarm where nothing is true
             p([a], [0.2], [2]),  # only a timid one
             p([], [], [])]  # nothing at all
    truths = [t([a, b], [0, 1]), t([a, b], [0, 0]), t([], []), t([], []), t([], [])]
    out = _outputs(preds, truths)
    ap50 = out.per_image_ap50()
    assert ap50[0] == pytest.approx(1.0) and ap50[1] == pytest.approx(51 / 101) and ap50[2] == 0.0
    assert ap50[3].isnan() and ap50[4].isnan()
    head = out.headline()
    assert set(head) == {"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100", "per_class_ap",
                         "absent", "n", "n_boxes", "n_ignored_boxes"}
    assert head["n"] == 5 and head["n_boxes"] == 4 and head["absent"] == ["rbc", "never"]
    assert head["per_class_ap"]["rbc"] is None and head["map_large"] is None  # no true box above 96² px
    assert out.confusion().tolist()[C] == [0, 0, 1, 0, 0]  # the confident rbc false alarm; the timid one is below 0.5
    d = out.to_dict(resamples=50)
    assert d["per_image"]["ap50"][3] is None and d["intervals"]["map"]["low"] is not None


def test_intervals_contain_the_estimate_and_a_model_equals_itself():
    preds, truths = random_case(11, n_images=48)
    a = _outputs(preds, truths)
    head = a.headline()
    intervals = a.intervals(resamples=300, seed=1)
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert intervals[key]["low"] <= head[key] <= intervals[key]["high"], key
        assert intervals[key]["high"] - intervals[key]["low"] > 0
    assert a.intervals(resamples=300, seed=1) == intervals  # seeded
    same = compare(a, _outputs(preds, truths), resamples=200)
    for key, diff in same["differences"].items():
        assert diff["delta"] == 0 and diff["low"] == 0 and diff["high"] == 0 and not diff["excludes_zero"], key
    assert same["verdict"].startswith("no clear difference")


def test_compare_finds_a_worse_model_and_refuses_other_images():
    preds, truths = random_case(11, n_images=48)
    a = _outputs(preds, truths)
    rng = np.random.default_rng(0)
    worse = [{**p, "boxes": p["boxes"] + torch.tensor(rng.uniform(0, 12, (len(p["boxes"]), 1)), dtype=torch.float32)}
             for p in preds]  # every box shifted down-right by up to 12 px: lower IoUs
    result = compare(a, _outputs(worse, truths), resamples=300)
    diff = result["differences"]["map_50"]
    assert diff["delta"] < 0 and diff["high"] < 0 and diff["excludes_zero"]
    assert result["verdict"].startswith("B is worse: mAP") and "over 300 resamples of 48 images" in result["verdict"]
    moved = [{**t, "boxes": t["boxes"] + 1} for t in truths]
    with pytest.raises(SftuneError, match="different true boxes"):
        compare(a, _outputs(preds, moved))
    with pytest.raises(SftuneError, match="different images"):
        compare(a, DetectionOutputs(list(CLASSES), preds, truths, [f"other{i}.jpg" for i in range(48)]))


def test_bootstrap_of_100_images_is_fast():
    """1000 resamples of 100 images with ~60 predictions each (a detector's long low-score tail)."""
    preds, truths = random_case(2, n_images=100, extra=55)
    out = _outputs(preds, truths)
    start = time.perf_counter()
    intervals = out.intervals(resamples=1000)
    seconds = time.perf_counter() - start
    assert sum(len(p["labels"]) for p in preds) > 4500
    assert intervals["map"]["low"] <= out.headline()["map"] <= intervals["map"]["high"]
    assert seconds < 15, f"{seconds:.1f} s"  # about 1 s on one core


def test_outputs_validate_their_inputs():
    preds, truths = random_case(0, n_images=3)
    with pytest.raises(ValueError, match="items"):
        DetectionOutputs(list(CLASSES), preds, truths, ["a.jpg"])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        DetectionOutputs(["a", "b"], preds, truths, ["a", "b", "c"])
    out = DetectionOutputs(list(CLASSES), preds, truths, [{"image": f"{i}.jpg"} for i in range(3)],
                           image_sizes=[(200, 300)] * 3)
    assert out.items == ["0.jpg", "1.jpg", "2.jpg"] and out.truths[0]["difficult"].dtype == torch.bool
    empty = DetectionOutputs(list(CLASSES), [], [], [])
    assert empty.headline()["map"] is None and np.isnan(empty.intervals(resamples=10)["map"]["low"])
