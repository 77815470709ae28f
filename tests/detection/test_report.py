"""The detection report (report.json / report.html) and the box drawing it and predict use.

Synthetic data: small images with coloured rectangles over 4 classes, one of which ("wbc") is in
no truth, so it must be reported as absent, not as 0; one box is difficult. The model gets
worse image by image (image i: i mistakes), so the worst images are known in advance.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from sftune.tasks.detection import render
from sftune.tasks.detection.metrics import MAP_RULE
from sftune.tasks.detection.outputs import DetectionOutputs
from sftune.tasks.detection.report import (COMPARISON_SCHEMA, REPORT_SCHEMA, TASK, detection_comparison,
                                           detection_report, write_detection_report)

from conftest import branch_schema, shipped_schema, validate_report

CLASSES = ["rbc", "platelet", "cell", "wbc"]  # "wbc": never true
H, W = 72, 96
N = 6
GREY = (120, 120, 120)


def _truth(i: int) -> dict[str, torch.Tensor]:
    boxes = [[4, 4, 34, 34], [50, 8, 90, 40], [10, 44, 40, 68]]
    labels = [0, 1, 2]
    difficult = [False, False, i == 0]  # image 0's third box is difficult: never a miss
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "difficult": torch.tensor(difficult)}


def _prediction(i: int, mistakes: int | None = None) -> dict[str, torch.Tensor]:
    """The truth found with scores 0.9..0.7, then ``mistakes`` (default i) of: a missed platelet, a
    confident rbc false alarm, the cell called rbc, a second, more confident rbc false alarm, a missed
    rbc. Per-image AP50 then falls strictly with the number of mistakes."""
    mistakes = i if mistakes is None else mistakes
    truth = _truth(i)
    boxes = truth["boxes"].tolist()
    labels = truth["labels"].tolist()
    scores = [0.9, 0.8, 0.7]
    keep = [True, mistakes < 1, True]
    if mistakes >= 3:
        labels[2] = 0  # cell called rbc
    if mistakes >= 5:
        keep[0] = False
    boxes = [b for b, k in zip(boxes, keep) if k]
    labels = [lab for lab, k in zip(labels, keep) if k]
    scores = [s for s, k in zip(scores, keep) if k]
    if mistakes >= 2:
        boxes.append([60, 48, 88, 70])
        labels.append(0)
        scores.append(0.95)
    if mistakes >= 4:
        boxes.append([40, 30, 56, 46])
        labels.append(0)
        scores.append(0.96)
    boxes.append([0, 60, 10, 70])  # a timid false alarm, below the drawing threshold
    labels.append(2)
    scores.append(0.1)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("det")
    paths = []
    for i in range(N):
        image = Image.new("RGB", (W, H), GREY)
        for box, label in zip(_truth(i)["boxes"].tolist(), _truth(i)["labels"].tolist()):
            image.paste((200, 60 + 60 * label, 60), tuple(int(v) for v in box))
        image.save(root / f"{i}.png")
        paths.append(str(root / f"{i}.png"))
    return paths


def _outputs(paths: list[str], worse: int = 0) -> DetectionOutputs:
    return DetectionOutputs(list(CLASSES), [_prediction(i, min(i + worse, 5)) for i in range(N)],
                            [_truth(i) for i in range(N)], list(paths), skipped=[("broken.jpg", "not an image")],
                            image_sizes=[(H, W)] * N)


class _Page(HTMLParser):
    """Collects <img> sources, headings and table rows; fails on unbalanced tags."""

    VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self.rows: list[list[str]] = []
        self._text: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag not in self.VOID_TAGS:
            self.stack.append(tag)
        if tag == "h2":
            self._text = []
        if tag == "tr":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag in self.VOID_TAGS:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag == "h2":
            self.headings.append("".join(self._text or []))
            self._text = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)
        if self._row:
            self._row[-1] += data


def _parse(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert parsed.stack == [], parsed.stack
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://", page) and "<script" not in page  # offline, self-contained
    assert parsed.images and all(src.startswith("data:image/") for src in parsed.images)
    return parsed


def validate(report: dict) -> None:
    """The report against its own branch of the shipped schema, then against the whole schema."""
    validate_report(report, "detectionComparison" if report["schema"] == COMPARISON_SCHEMA else "detectionReport")


def _decode(src: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")


def test_report_sections_and_numbers(images, tmp_path):
    out = _outputs(images)
    head = out.headline()
    report = detection_report(out, tmp_path / "no_bundle", "val", bootstrap=200, worst=4)
    assert report["schema"] == REPORT_SCHEMA and report["task"] == TASK
    for key in ("title", "created", "run", "data", "metrics", "intervals", "absent", "map_rule", "per_class",
                "pr_curves", "confusion_matrix", "worst", "evaluated_on"):
        assert key in report, key
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100", "n", "n_boxes",
                "n_ignored_boxes"):
        assert report["metrics"][key] == head[key], key
    assert report["metrics"]["n_boxes"] == 3 * N - 1 and report["metrics"]["n_ignored_boxes"] == 1
    assert report["metrics"]["skipped"] == 1 and report["data"]["skipped"] == [{"path": "broken.jpg", "reason": "not an image"}]
    assert report["map_rule"] == MAP_RULE and "101" in MAP_RULE and "difficult" in MAP_RULE.lower()

    # The absent class: listed, flagged, without any AP, and out of the mean.
    assert report["absent"] == head["absent"] == ["wbc"]
    pc = report["per_class"]
    assert pc["class"] == CLASSES and pc["absent"] == [False, False, False, True]
    assert pc["ap"] == [head["per_class_ap"][c] for c in CLASSES] and pc["ap"][3] is None
    assert report["metrics"]["map"] == pytest.approx(sum(pc["ap"][:3]) / 3)
    assert pc["ignored_boxes"] == [0, 0, 1, 0] and pc["true_boxes"] == [N, N, N - 1, 0]

    cm = report["confusion_matrix"]
    assert cm["labels"] == CLASSES + ["background"] and torch.equal(torch.tensor(cm["counts"]), out.confusion())
    counts = np.array(cm["counts"])
    assert counts[:4].sum() == 3 * N - 1  # every scored true box is matched, confused or missed, once
    assert counts[2, 0] == 3 and cm["confused"] == 3  # images 3, 4, 5 call the cell an rbc
    assert counts[1, 4] == N - 1 and counts[0, 4] == 1 == cm["missed"] - (N - 1)  # platelet missed, one rbc missed
    assert counts[4, 0] == 6 == cm["false_alarms"] and counts[4, 2] == 0  # the timid 0.1 cells are not shown

    curves = report["pr_curves"]["curves"]
    assert len(report["pr_curves"]["recall"]) == 101 and curves[0]["precision"]["wbc"] is None
    assert np.mean(curves[0]["precision"]["cell"]) == pytest.approx(pc["ap50"][2])

    iv = report["intervals"]
    assert iv["resamples"] == 200 and iv["map"]["low"] <= head["map"] <= iv["map"]["high"]

    # The worst images: lowest per-image AP50 first; the model gets worse with the image index.
    worst = report["worst"]
    assert [w["index"] for w in worst] == [5, 4, 3, 2]
    assert [w["ap50"] for w in worst] == sorted(w["ap50"] for w in worst)
    assert worst[0]["ap50"] == pytest.approx(float(out.per_image_ap50()[5]))
    assert worst[0]["image"] == images[5] and worst[0]["size"] == [H, W]
    assert worst[0]["prediction"]["scores"] == [0.7, 0.95, 0.96]  # 0.1 is below the threshold: not drawn
    assert worst[0]["truth"]["labels"] == [0, 1, 2] and worst[0]["truth"]["ignored"] == [False] * 3
    assert {k: worst[0][k] for k in ("matched", "confused", "missed", "false_alarms")} == \
        {"matched": 0, "confused": 1, "missed": 2, "false_alarms": 2}

    none = detection_report(out, tmp_path / "no_bundle", "val", bootstrap=0, worst=0)
    assert none["intervals"] is None and none["worst"] == []
    json.dumps(report, allow_nan=False)  # strict JSON
    validate(report)
    validate(none)


@pytest.fixture(scope="module")
def written(images, tmp_path_factory):
    """One full report of a bundle with a training history, written once: (report, json path, html path)."""
    root = tmp_path_factory.mktemp("written")
    bundle = root / "bundle"
    bundle.mkdir()
    (bundle / "config.yaml").write_text("task: object_detection\nmodel:\n  name: efficientnet_lite0\n")
    history = [{"epoch": e, "train/loss": 1.0 / (e + 1), "val/map": 0.2 + 0.1 * e, "val/map_50": 0.4 + 0.1 * e,
                "lr-head": 1e-3} for e in range(3)]
    (bundle / "metrics.json").write_text(json.dumps({"history": history, "best_epoch": 2, "epochs_run": 3,
                                                     "strategy": "full"}))
    report = detection_report(_outputs(images), bundle, "val", bootstrap=100, worst=N)
    assert report["run"]["task"] == "object_detection" and report["run"]["history"] == history
    return (report, *write_detection_report(root / "r", report))


def test_html_is_self_contained_and_draws_the_worst_images(written):
    report, json_path, html_path = written
    assert json.loads(json_path.read_text())["metrics"]["map"] == report["metrics"]["map"]
    validate(json.loads(json_path.read_text()))  # the file as written (a bundle with a training history)
    assert sorted(p.name for p in html_path.parent.iterdir()) == ["report.html", "report.json"]  # no temp files left
    page = html_path.read_text()
    parsed = _parse(page)
    for section in ("Summary", "Metrics", "Per class", "Precision-recall curves", "Confusion matrix of matched boxes",
                    "Training curves", "Worst images", "Skipped files", "Configuration"):
        assert any(h.startswith(section) for h in parsed.headings), section
    wbc = next(row for row in parsed.rows if row and row[0] == "wbc")
    assert wbc[2:6] == ["absent"] * 4  # AP, AP50, AP75, AR@100: "absent", never 0
    cell = next(row for row in parsed.rows if row and row[0] == "cell")
    assert cell[2] == f"{report['per_class']['ap'][2]:.4f}"
    assert "The mAP rule." in page and "The matching rule." in page and "background" in page
    jpegs = [src for src in parsed.images if src.startswith("data:image/jpeg;base64,")]
    assert len(jpegs) == N  # truth | prediction for each worst image
    sheet = _decode(jpegs[0])
    scale = min(render.MAX_ENLARGE, render.PANEL_PX / W)
    assert sheet.size == (2 * round(W * scale) + 6, round(H * scale) + render.TITLE_PX)
    # The right panel draws the confident false alarm (rbc, [60, 48, 88, 70]) in the rbc's colour: its left edge.
    edge = np.asarray(sheet)[render.TITLE_PX + round(59 * scale), round(W * scale) + 6 + round(60 * scale)].astype(int)
    assert np.abs(edge - render.palette(4)[0]).max() <= 40


def test_comparing_a_detector_with_itself_and_with_a_worse_one(images, tmp_path):
    a = _outputs(images)
    same = detection_comparison(a, _outputs(images), tmp_path / "a", tmp_path / "b", "val", bootstrap=100, worst=3)
    assert same["schema"] == COMPARISON_SCHEMA and same["task"] == TASK
    diff = same["comparison"]["differences"]["map"]
    assert diff["delta"] == 0 and diff["low"] == 0 and diff["high"] == 0 and not diff["excludes_zero"]
    assert same["verdict"].startswith("No clear difference") and same["differences_per_image"] == []
    assert same["a"]["metrics"] == same["b"]["metrics"]
    validate(same)
    parsed = _parse(write_detection_report(tmp_path / "same", same)[1].read_text())
    assert "Where they differ most" in parsed.headings and "AP per class" in parsed.headings
    wbc = next(row for row in parsed.rows if row and row[0] == "wbc")
    assert wbc[1:3] == ["absent", "absent"]

    worse = detection_comparison(a, _outputs(images, worse=2), tmp_path / "a", tmp_path / "b", "val",
                                 bootstrap=100, worst=3)
    assert worse["comparison"]["differences"]["map"]["delta"] < 0
    rows = worse["differences_per_image"]
    assert len(rows) == 3 and all(r["b"] < r["a"] for r in rows) and rows[0]["index"] in (0, 1, 2)
    validate(worse)
    page = write_detection_report(tmp_path / "worse", worse)[1].read_text()
    parsed = _parse(page)
    assert "B − A" in page and "Confusion matrix of B" in parsed.headings
    triptych = _decode(next(src for src in parsed.images if src.startswith("data:image/jpeg")))
    assert triptych.width > 2.5 * triptych.height  # truth | A | B


def test_the_schema_pins_each_layout_to_its_own_branch(images, tmp_path):
    """Each of report.schema.json's six branches accepts only its own "schema" const (the code's
    constants), so a report matches exactly one branch; a detection report relabelled as any
    other layout, or with a stray key, validates against none."""
    import jsonschema

    from sftune.eval import report as classification
    from sftune.eval.report import finite
    from sftune.tasks.segmentation import report as segmentation

    schema = shipped_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    branches = [ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]]
    consts = {name: schema["$defs"][name]["properties"]["schema"]["const"] for name in branches}
    assert sorted(consts.values()) == sorted([
        classification.REPORT_SCHEMA, classification.COMPARISON_SCHEMA, segmentation.REPORT_SCHEMA,
        segmentation.COMPARISON_SCHEMA, REPORT_SCHEMA, COMPARISON_SCHEMA])
    for name in branches:
        definition = schema["$defs"][name]
        assert "schema" in definition["required"] and definition["additionalProperties"] is False, name
        validator = jsonschema.Draft202012Validator(branch_schema(name))
        for other, const in consts.items():
            wrong_schema = any(list(e.path) == ["schema"] for e in validator.iter_errors({"schema": const}))
            assert wrong_schema == (other != name), (name, const)

    report = finite(detection_report(_outputs(images), tmp_path / "no_bundle", "val", bootstrap=0, worst=1))
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(report)
    for const in consts.values():
        if const != REPORT_SCHEMA:
            assert not validator.is_valid({**report, "schema": const}), const
    assert not validator.is_valid({**report, "extra": 1})
    broken = json.loads(json.dumps(report))
    broken["worst"][0]["truth"]["boxes"][0] = [1.0, 2.0, 3.0]  # a box of 3 numbers
    assert not validator.is_valid(broken)


def test_draw_boxes_colours_labels_and_ignored():
    image = np.full((60, 160, 3), 120, np.uint8)
    drawn = np.asarray(render.draw_boxes(image, [[10, 20, 50, 50], [100, 20, 140, 55]], [0, 1], scores=[0.9, 0.3],
                                         classes=["a", "b"], width=2, ignored=[False, True]))
    assert drawn.shape == (60, 160, 3)
    colours = render.palette(2)
    assert drawn[35, 10].tolist() == colours[0].tolist()  # the left edge of box 0, solid
    assert drawn[35, 30].tolist() == [120, 120, 120]  # inside: untouched
    assert (drawn[10:20, 10:30] != 120).any()  # the tag "a 0.90" above box 0
    right_edge = drawn[22:56, 140]
    painted = (np.abs(right_edge.astype(int) - colours[1]).max(axis=1) <= 1)
    assert 0 < painted.sum() < len(right_edge)  # the ignored box is dashed
    assert np.array_equal(np.asarray(render.draw_boxes(image, [], [], classes=2)), image)
    with pytest.raises(ValueError, match="boxes"):
        render.draw_boxes(image, [[0, 0, 5, 5]], [0, 1])

    truth = {"boxes": torch.tensor([[10.0, 20, 50, 50]]), "labels": torch.tensor([0]), "difficult": torch.tensor([False])}
    prediction = {"boxes": torch.tensor([[10.0, 20, 50, 50], [60.0, 30, 70, 40]]), "scores": torch.tensor([0.9, 0.2]),
                  "labels": torch.tensor([1, 1])}
    sheet = render.truth_vs_prediction(image, truth, prediction, ["a", "b"], panel_px=160)
    assert sheet.size == (2 * 160 + 6, 60 + render.TITLE_PX)
    right = np.asarray(sheet)[render.TITLE_PX:, 166:]
    assert right[35, 10].tolist() == colours[1].tolist()  # the 0.9 box, in b's colour
    assert right[35, 60].tolist() == [120, 120, 120]  # the 0.2 box is below the threshold: not drawn


def test_palette_and_legend():
    colours = render.palette(30)
    assert colours.shape == (30, 3) and colours[0].tolist() == [31, 119, 180]  # tab10 blue, as matplotlib's plots
    assert len({tuple(c) for c in colours.tolist()}) == 30 and [0, 0, 0] not in colours.tolist()
    assert render.palette(3).tolist() == colours[:3].tolist()
    assert render.class_colors(2, [(1, 2, 3), (4, 5, 6)]).tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="RGB triples"):
        render.class_colors(3, [(1, 2, 3)])
    legend = render.legend_html(["a<b", "road"])
    assert "a&lt;b" in legend and "#1f77b4" in legend and "dashed" in legend


try:  # the classification report's headless-Chromium check, reused on a detection page
    from eval.test_report_browser import CHROMIUM, _not_blank, _render
except ImportError:  # pragma: no cover - tests/eval not importable from here
    CHROMIUM, _not_blank, _render = None, None, None


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium) and tests/eval's helper")
def test_detection_report_renders_in_chromium(written, tmp_path):
    problems, shown, headings = _render(written[2], tmp_path / "page.png")
    assert problems == []
    assert len(shown) >= 4 + N  # AP bars, PR curves, confusion matrix, training curves, a drawing per worst image
    assert all(complete and width > 0 and height > 0 for _, complete, width, height in shown)
    for section in ("Summary", "Metrics", "Per class", "Precision-recall curves", "Confusion matrix of matched boxes",
                    "Training curves", "Worst images"):
        assert section in headings, section
    _not_blank(tmp_path / "page.png")
