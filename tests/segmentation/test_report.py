"""The segmentation report (report.json / report.html) and the mask rendering that predict uses.

Synthetic data: a few small RGB images with index-PNG masks over 3 classes, one of which
("car") is in no mask and never predicted, so it must be reported as absent, not as 0.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sftune.tasks.segmentation import render
from sftune.tasks.segmentation.metrics import confusion_per_image
from sftune.tasks.segmentation.outputs import SegmentationOutputs
from sftune.tasks.segmentation.report import (COMPARISON_SCHEMA, REPORT_SCHEMA, TASK, segmentation_comparison,
                                              segmentation_report, write_segmentation_report)

from conftest import validate_report

CLASSES = ["background", "road", "car"]
VOID = 255
H, W = 24, 32
N = 6


def _truth(i: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[H // 2:, :] = 1  # road on the lower half
    mask[:, : 2 + i] = VOID  # a void band that grows image by image
    return mask


def _prediction(truth: np.ndarray, i: int, flips: int) -> np.ndarray:
    """The truth (void pixels predicted as background) with ``flips * i`` rows of road called background."""
    pred = np.where(truth == VOID, 0, truth).astype(np.int64)
    pred[H // 2: H // 2 + flips * i, :] = 0
    return pred


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> list[dict[str, str]]:
    root = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    items = []
    for i in range(N):
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"{i}.jpg")
        render.save_index_png(_truth(i), root / f"{i}.png", CLASSES)
        items.append({"image": str(root / f"{i}.jpg"), "mask": str(root / f"{i}.png")})
    return items


def _predictor(flips: int):
    def predict_mask(path: str) -> np.ndarray:
        i = int(Path(path).stem)
        return _prediction(_truth(i), i, flips)
    return predict_mask


def _outputs(items: list[dict[str, str]], flips: int = 1) -> SegmentationOutputs:
    predict = _predictor(flips)
    target = torch.stack([torch.from_numpy(render.read_index_png(it["mask"])) for it in items])
    preds = torch.stack([torch.from_numpy(predict(it["image"])) for it in items])
    per_image, ignored, out_of_range = confusion_per_image(preds, target, len(CLASSES), VOID)
    return SegmentationOutputs(list(CLASSES), per_image, items, ignore_index=VOID,
                               skipped=[("broken.jpg", "not an image")], ignored_pixels=ignored,
                               out_of_range_pixels=out_of_range)


def validate(report: dict) -> None:
    """The report against its own branch of the shipped schema, then against the whole schema."""
    validate_report(report, "segmentationComparison" if report["schema"] == COMPARISON_SCHEMA else "segmentationReport")


class _Page(HTMLParser):
    """Collects <img> sources, headings and per-class rows; fails on unbalanced tags."""

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


def test_report_has_every_section_and_the_headline_numbers(dataset, tmp_path):
    out = _outputs(dataset)
    head = out.headline()
    report = segmentation_report(out, tmp_path / "no_bundle", "val", bootstrap=200, worst=4)
    assert report["schema"] == REPORT_SCHEMA and report["task"] == TASK
    for key in ("title", "created", "run", "data", "metrics", "intervals", "absent", "miou_rule", "per_class",
                "confusion_matrix", "worst", "evaluated_on"):
        assert key in report, key
    for key in ("miou", "pixel_acc", "mean_dice", "fw_iou", "n"):
        assert report["metrics"][key] == head[key], key
    assert report["metrics"]["skipped"] == 1 and report["data"]["skipped"] == [{"path": "broken.jpg", "reason": "not an image"}]
    assert report["data"]["n"] == N and report["data"]["classes"] == CLASSES and report["data"]["ignore_index"] == VOID
    assert report["data"]["ignored_pixels"] == sum(H * (2 + i) for i in range(N))

    # The absent class: listed, flagged, without any number, and left out of the mean.
    assert report["absent"] == head["absent"] == ["car"]
    pc = report["per_class"]
    assert pc["class"] == CLASSES and pc["absent"] == [False, False, True]
    assert pc["iou"] == [head["per_class_iou"][c] for c in CLASSES] and pc["iou"][2] is None
    assert pc["dice"][2] is None and pc["precision"][2] is None and pc["recall"][2] is None
    assert report["metrics"]["miou"] == pytest.approx((pc["iou"][0] + pc["iou"][1]) / 2)
    assert sum(pc["pixel_share"]) == pytest.approx(1.0) and pc["pixel_share"][2] == 0
    assert "absent" in report["miou_rule"] and "left out of the mean" in report["miou_rule"]

    counts = torch.tensor(report["confusion_matrix"]["counts"])
    assert torch.equal(counts, out.confusion)
    normalized = report["confusion_matrix"]["normalized"]
    assert [sum(row) for row in normalized[:2]] == [pytest.approx(1.0)] * 2 and normalized[2] == [None] * 3

    iv = report["intervals"]
    assert iv["resamples"] == 200 and iv["miou"]["low"] <= head["miou"] <= iv["miou"]["high"]

    # The worst images: the lowest per-image mIoU first (image 5 has the most road called background).
    worst = report["worst"]
    assert [w["index"] for w in worst] == [5, 4, 3, 2]
    assert [w["miou"] for w in worst] == sorted(w["miou"] for w in worst)
    per_image = out.per_image_miou()
    assert worst[0]["miou"] == pytest.approx(float(per_image[5]))
    assert worst[0]["image"] == dataset[5]["image"] and worst[0]["mask"] == dataset[5]["mask"]
    assert set(worst[0]["truth"]) == {"background", "road"}

    no_bootstrap = segmentation_report(out, tmp_path / "no_bundle", "val", bootstrap=0, worst=0)
    assert no_bootstrap["intervals"] is None and no_bootstrap["worst"] == []
    json.dumps(report, allow_nan=False)  # strict JSON
    validate(report)
    validate(no_bootstrap)


def test_html_shows_absent_and_triptychs_and_is_self_contained(dataset, tmp_path):
    out = _outputs(dataset)
    report = segmentation_report(out, tmp_path / "no_bundle", "val", bootstrap=100, worst=3)
    json_path, html_path = write_segmentation_report(tmp_path / "r", report, predict_mask=_predictor(1))
    assert json.loads(json_path.read_text())["metrics"]["miou"] == report["metrics"]["miou"]
    validate(json.loads(json_path.read_text()))  # the file as written
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.html", "report.json"]  # no temp files left
    page = html_path.read_text()
    parsed = _parse(page)
    for section in ("Summary", "Metrics", "Per class", "Confusion matrix", "Worst images", "Skipped files", "Configuration"):
        assert any(h.startswith(section) for h in parsed.headings), section
    car = next(row for row in parsed.rows if row and row[0] == "car")
    assert car[2:6] == ["absent"] * 4  # IoU, Dice, precision, recall: "absent", never 0
    road = next(row for row in parsed.rows if row and row[0] == "road")
    assert road[2] == f"{report['per_class']['iou'][1]:.4f}"
    assert "The mIoU rule." in page and "left out of the mean" in page
    jpegs = [src for src in parsed.images if src.startswith("data:image/jpeg;base64,")]
    assert len(jpegs) == 3  # one triptych per worst image
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(jpegs[0].split(",", 1)[1]))) as sheet:
        assert sheet.size == (3 * W + 2 * 6, H + render.TITLE_PX)
    assert "void / ignored" in page and render.hex_colour(render.palette(3)[1]) in page  # the legend

    # Without a predictor the worst images are listed (paths and numbers), not drawn.
    listed = _parse(write_segmentation_report(tmp_path / "plain", report)[1].read_text())
    assert not any(src.startswith("data:image/jpeg") for src in listed.images)
    assert "Worst images" in listed.headings


def test_a_broken_gallery_file_does_not_break_the_page(dataset, tmp_path):
    out = _outputs(dataset)
    report = segmentation_report(out, tmp_path / "no_bundle", "val", bootstrap=0, worst=2)
    report["worst"][0]["image"] = str(tmp_path / "gone.jpg")

    def failing(path: str) -> np.ndarray:
        raise RuntimeError("model exploded")

    page = write_segmentation_report(tmp_path / "r", report, predict_mask=_predictor(1))[1].read_text()
    assert page.count("not readable") == 1 and page.count("data:image/jpeg") == 1
    page = write_segmentation_report(tmp_path / "r2", report, predict_mask=failing)[1].read_text()
    assert page.count("not readable") == 2


def test_colour_masks_are_read_and_drawn_in_the_data_sets_own_colours(tmp_path):
    """RGB colour masks (CamVid style): the page reads them through data.read_mask with the
    report's colormap, and draws overlays, legend and swatches in those colours."""
    colormap = [(10, 20, 30), (200, 100, 0), (0, 0, 255)]
    items, truths = [], []
    for i in range(2):
        truth = _truth(i)
        rgb = np.zeros((H, W, 3), np.uint8)  # void pixels: a colour not in the table -> ignore index
        for c, colour in enumerate(colormap):
            rgb[truth == c] = colour
        Image.fromarray(rgb).save(tmp_path / f"{i}_L.png")
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(tmp_path / f"{i}.png")
        items.append({"image": str(tmp_path / f"{i}.png"), "mask": str(tmp_path / f"{i}_L.png")})
        truths.append(truth)
    preds = torch.stack([torch.from_numpy(_prediction(t, i, 3)) for i, t in enumerate(truths)])
    per_image, _, _ = confusion_per_image(preds, torch.from_numpy(np.stack(truths)), 3, VOID)
    out = SegmentationOutputs(list(CLASSES), per_image, items, ignore_index=VOID)
    report = segmentation_report(out, tmp_path / "no_bundle", "val", bootstrap=0, worst=1, mask_format="rgb",
                                 colormap=colormap)
    assert report["data"]["mask_format"] == "rgb" and report["data"]["colormap"] == [list(c) for c in colormap]
    validate(report)
    page = write_segmentation_report(tmp_path / "r", report,
                                     predict_mask=lambda p: _prediction(truths[int(Path(p).stem)], int(Path(p).stem), 3))[1]
    parsed = _parse(page.read_text())
    assert "not readable" not in page.read_text() and page.read_text().count("#c86400") >= 2  # legend and swatch
    import base64
    import io

    jpeg = next(src for src in parsed.images if src.startswith("data:image/jpeg"))
    with Image.open(io.BytesIO(base64.b64decode(jpeg.split(",", 1)[1]))) as sheet:
        road = np.asarray(sheet.convert("RGB"))[render.TITLE_PX + H - 2, W + 6 + W - 2].astype(int)
    assert np.abs(road - [164, 114, 64]).max() <= 12  # the grey image half-blended with (200, 100, 0)

    image = render.index_png(truths[0], CLASSES, colors=colormap)
    assert image.getpalette()[:9] == [10, 20, 30, 200, 100, 0, 0, 0, 255]
    assert image.getpalette()[3 * VOID: 3 * VOID + 3] == list(render.VOID_COLOR)
    with pytest.raises(ValueError, match="RGB triples"):
        render.class_colors(3, colormap[:2])


def test_training_curves_and_run_details_come_from_the_bundle(dataset, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.yaml").write_text("task: semantic_segmentation\nmodel:\n  name: timm:test_efficientnet\n")
    history = [{"epoch": e, "train/loss": 1.0 / (e + 1), "val/loss": 1.2 / (e + 1), "val/miou": 0.3 + 0.1 * e,
                "lr-head": 1e-3} for e in range(3)]
    (bundle / "metrics.json").write_text(json.dumps({"history": history, "best_epoch": 2, "epochs_run": 3,
                                                     "strategy": "full"}))
    report = segmentation_report(_outputs(dataset), bundle, "val", bootstrap=0, worst=0)
    assert report["run"]["task"] == "semantic_segmentation" and report["run"]["history"] == history
    parsed = _parse(write_segmentation_report(tmp_path / "r", report)[1].read_text())
    assert "Training curves" in parsed.headings and "Worst images" in parsed.headings


def test_comparing_a_model_with_itself_and_with_a_worse_one(dataset, tmp_path):
    a = _outputs(dataset)
    same = segmentation_comparison(a, _outputs(dataset), tmp_path / "a", tmp_path / "b", "val", bootstrap=100, worst=3)
    assert same["schema"] == COMPARISON_SCHEMA and same["task"] == TASK
    diff = same["comparison"]["differences"]["miou"]
    assert diff["delta"] == 0 and diff["low"] == 0 and diff["high"] == 0 and not diff["excludes_zero"]
    assert same["verdict"].startswith("No clear difference") and same["differences_per_image"] == []
    assert same["a"]["metrics"] == same["b"]["metrics"]
    validate(same)
    parsed = _parse(write_segmentation_report(tmp_path / "same", same)[1].read_text())
    assert "Where they differ most" in parsed.headings and "IoU per class" in parsed.headings
    car = next(row for row in parsed.rows if row and row[0] == "car")
    assert car[1:3] == ["absent", "absent"]

    worse = segmentation_comparison(a, _outputs(dataset, flips=2), tmp_path / "a", tmp_path / "b", "val",
                                    bootstrap=100, worst=3)
    assert worse["comparison"]["differences"]["miou"]["delta"] < 0
    assert [d["index"] for d in worse["differences_per_image"]] == [5, 4, 3]
    validate(worse)
    page = write_segmentation_report(tmp_path / "worse", worse)[1].read_text()
    _parse(page)
    assert "B − A" in page and "Confusion matrix of B" in page


def test_palette_is_voc_and_distinct():
    colours = render.palette(256)
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    assert colours[:6].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
    assert colours[15].tolist() == [192, 128, 128] and render.VOID_COLOR == (224, 224, 192)
    assert len({tuple(c) for c in colours.tolist()}) == 256
    assert render.palette(3).tolist() == colours[:3].tolist()


def test_index_png_round_trips_the_indices(tmp_path):
    mask = np.arange(H * W).reshape(H, W) % 21
    mask[0, :5] = VOID
    image = render.index_png(mask, 21)
    assert image.mode == "P" and image.getpalette()[3:6] == [128, 0, 0]
    path = render.save_index_png(mask, tmp_path / "sub" / "m.png", CLASSES)
    assert [p.name for p in path.parent.iterdir()] == ["m.png"]  # the temp file was renamed, not left
    with Image.open(path) as reread:
        assert reread.mode == "P"
        assert np.array_equal(np.asarray(reread), mask)
    assert np.array_equal(render.read_index_png(path), mask)

    many = (np.arange(H * W).reshape(H, W) * 7) % 300  # more classes than a palette holds: 16-bit
    assert render.index_png(many, 300).mode == "I;16"
    assert np.array_equal(render.read_index_png(render.save_index_png(many, tmp_path / "many.png")), many)
    with pytest.raises(ValueError, match="8-bit"):
        render.index_png(many, CLASSES)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        render.index_png(np.zeros((2, 2, 3), np.uint8), CLASSES)


def test_overlay_and_triptych():
    image = np.full((H, W, 3), 100, np.uint8)
    mask = np.zeros((H, W), np.int64)
    mask[:, W // 2:] = 1
    mask[0, 0] = VOID
    drawn = np.asarray(render.overlay(image, mask, alpha=1.0))
    assert drawn.shape == (H, W, 3)
    assert drawn[5, -1].tolist() == [128, 0, 0] and drawn[5, 0].tolist() == [0, 0, 0]
    assert drawn[0, 0].tolist() == [100, 100, 100]  # void: uncoloured
    half = np.asarray(render.overlay(Image.fromarray(image), mask, alpha=0.5))
    assert half[5, -1].tolist() == [114, 50, 50]
    small = np.asarray(render.overlay(image, mask[::2, ::2], alpha=1.0))  # a mask at half size is resized
    assert small.shape == (H, W, 3) and small[5, -1].tolist() == [128, 0, 0]

    sheet = render.triptych(image, mask, np.ones((H, W), np.int64), CLASSES, VOID)
    assert sheet.size == (3 * W + 12, H + render.TITLE_PX)
    big = render.triptych(np.zeros((900, 1200, 3), np.uint8), np.zeros((900, 1200), np.int64),
                          np.zeros((900, 1200), np.int64), CLASSES, VOID)
    assert big.size == (3 * render.PANEL_PX + 12, 270 + render.TITLE_PX)  # each panel fits PANEL_PX
    assert render.PANEL_PX <= 480

    legend = render.legend_html(["a<b", "road"])
    assert "a&lt;b" in legend and "#800000" in legend and "void" in legend


def test_class_fractions():
    mask = np.array([[0, 0, 1, 255], [1, 1, 1, 255]])
    shares = render.class_fractions(mask, CLASSES, ignore_index=VOID)
    assert shares == {"background": pytest.approx(2 / 6), "road": pytest.approx(4 / 6), "car": 0.0}
    assert list(shares) == CLASSES
    assert sum(render.class_fractions(mask, CLASSES).values()) == pytest.approx(1.0)  # 255 is outside 0..C-1 anyway


try:  # the classification report's headless-Chromium check, reused on a segmentation page
    from eval.test_report_browser import CHROMIUM, _not_blank, _render
except ImportError:  # pragma: no cover - tests/eval not importable from here
    CHROMIUM, _not_blank, _render = None, None, None


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium) and tests/eval's helper")
def test_segmentation_report_renders_in_chromium(dataset, tmp_path):
    report = segmentation_report(_outputs(dataset), tmp_path / "no_bundle", "val", bootstrap=100, worst=N)
    _, html_path = write_segmentation_report(tmp_path / "r", report, predict_mask=_predictor(1))
    problems, images, headings = _render(html_path, tmp_path / "page.png")
    assert problems == []
    assert len(images) >= 2 + N  # bars, confusion matrix, one triptych per worst image
    assert all(complete and width > 0 and height > 0 for _, complete, width, height in images)
    for section in ("Summary", "Metrics", "Per class", "Confusion matrix", "Worst images"):
        assert section in headings, section
    _not_blank(tmp_path / "page.png")
