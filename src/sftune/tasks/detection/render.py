"""Boxes as pictures: class colours, boxes with labels, and truth beside prediction for the report.

Colours: matplotlib's "tab10" (Tableau 10, matplotlib's default colour cycle) for the first ten
classes, then the light half of "tab20", then Pascal VOC's bit-interleaved colour map (as the
segmentation task uses) past twenty. The segmentation palette itself does not suit boxes: its
class 0 is black (VOC's background, while class 0 is a real class here) and its colours are
dark, which vanish on dark photos. The report's precision-recall figure draws each class in
these colours too, so a class has the same colour in the figure and on the drawn boxes.
Where a data set brings its own colours, every function takes them as ``colors``.

Ignored true boxes (VOC ``difficult``, COCO ``iscrowd``: left out of every metric) are drawn
dashed, with their label marked "(ignored)".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..segmentation.render import hex_colour, voc_colormap

PANEL_PX = 480  # the longest side of one panel: two side by side fit the report's width
MAX_ENLARGE = 3.0  # small images are enlarged up to this factor, so labels and boxes stay readable
TITLE_PX = 18  # the band above each panel that holds its title
FONT_PX = 11

# A set's classes: their names, or just how many there are.
Classes = Sequence[str] | int
# Class colours, entry i = RGB of class i: an (C, 3) array or a list of triples; None = palette().
Colors = Sequence[Sequence[int]] | np.ndarray | None

_TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
_TAB20_LIGHT = ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d",
                "#9edae5"]


def _rgb_of(hex_code: str) -> tuple[int, int, int]:
    return tuple(int(hex_code[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8: class i's colour (tab10, then tab20's light half, then VOC's map without black)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    table = [_rgb_of(h) for h in _TAB10 + _TAB20_LIGHT]
    if num_classes > len(table):
        voc = voc_colormap(256)[1:]  # skip VOC's black background
        table += [tuple(int(v) for v in c) for c in voc]
        while len(table) < num_classes:  # more than 275 classes: cycle
            table += table[: num_classes - len(table)]
    return np.asarray(table[:num_classes], dtype=np.uint8)


def _count(classes: Classes) -> int:
    return classes if isinstance(classes, int) else len(classes)


def class_colors(num_classes: int, colors: Colors = None) -> np.ndarray:
    """(num_classes, 3) uint8: ``colors`` when given (a data set's own), else :func:`palette`.
    Raises ValueError when ``colors`` has fewer entries than classes or is not RGB."""
    if colors is None:
        return palette(num_classes)
    table = np.asarray(colors, dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 3 or len(table) < num_classes:
        raise ValueError(f"class colours must be {num_classes} RGB triples, got shape {table.shape}")
    return np.clip(table[:num_classes], 0, 255).astype(np.uint8)


def _rgb(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"an image is (H, W, 3) RGB; got shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array[..., :3].astype(np.uint8)))


def _font(size: int = FONT_PX) -> Any:
    return ImageFont.load_default(size=size)


def _name(classes: Classes, label: int) -> str:
    if isinstance(classes, int):
        return str(label)
    return str(classes[label]) if 0 <= label < len(classes) else str(label)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], colour: tuple, width: int, dash: int = 6) -> None:
    x0, y0, x1, y1 = box
    for (ax, ay, bx, by) in ((x0, y0, x1, y0), (x1, y0, x1, y1), (x1, y1, x0, y1), (x0, y1, x0, y0)):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for s in range(0, steps, 2):
            f0, f1 = s / steps, min(1.0, (s + 1) / steps)
            draw.line([(ax + (bx - ax) * f0, ay + (by - ay) * f0), (ax + (bx - ax) * f1, ay + (by - ay) * f1)],
                      fill=colour, width=width)


def draw_boxes(image: Any, boxes: Any, labels: Any, scores: Any = None, classes: Classes | None = None,
               colors: Colors = None, width: int | None = None, ignored: Any = None,
               show_labels: bool = True) -> Image.Image:
    """A copy of ``image`` (PIL or (H, W, 3) array) with ``boxes`` ((N, 4) xyxy pixels) drawn in
    their class colours, each under a tag "name" or "name 0.87" (with ``scores``).

    ``classes``: the class names (or their count; default: as many as the largest label + 1).
    ``ignored`` (N,) bool: boxes drawn dashed, tagged "(ignored)" (difficult / crowd truths).
    Boxes are drawn in the given order; the line width defaults to about 1/200 of the image's
    longer side (at least 2 px). Raises ValueError on mismatched lengths.
    """
    picture = _rgb(image).copy()
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    score_array = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    skip = np.zeros(len(label_array), dtype=bool) if ignored is None else np.asarray(ignored, dtype=bool).reshape(-1)
    if not (len(box_array) == len(label_array) == len(skip)) or (score_array is not None and len(score_array) != len(label_array)):
        raise ValueError(f"{len(box_array)} boxes, {len(label_array)} labels, "
                         f"{'no' if score_array is None else len(score_array)} scores and {len(skip)} ignored flags")
    if classes is None:
        classes = int(label_array.max()) + 1 if len(label_array) else 1
    colours = class_colors(max(_count(classes), int(label_array.max(initial=-1)) + 1), colors)
    width = width or max(2, round(max(picture.size) / 200))
    draw = ImageDraw.Draw(picture)
    font = _font()
    for i, (box, label) in enumerate(zip(box_array.tolist(), label_array.tolist())):
        colour = tuple(int(v) for v in colours[label])
        x0, y0, x1, y1 = box
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        if skip[i]:
            _dashed_rectangle(draw, box, colour, max(1, width - 1))
        else:
            draw.rectangle(box, outline=colour, width=width)
        if not show_labels:
            continue
        text = _name(classes, label)
        if score_array is not None:
            text += f" {score_array[i]:.2f}"
        if skip[i]:
            text += " (ignored)"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 3
        tx = min(max(0.0, box[0]), max(0.0, picture.width - tw))
        ty = box[1] - th if box[1] - th >= 0 else box[1]  # above the box, or inside its top edge
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
        ink = (0, 0, 0) if (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) > 150 else (255, 255, 255)
        draw.text((tx + 2 - left, ty + 1 - top), text, fill=ink, font=font)
    return picture


def _scaled(image: Image.Image, panel_px: int) -> tuple[Image.Image, float]:
    scale = min(MAX_ENLARGE, panel_px / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return (image if scale == 1 else image.resize(size, Image.BILINEAR)), scale


def _field(value: dict[str, Any] | None, key: str) -> Any:
    return None if value is None else value.get(key)


def panels(image: Any, views: Sequence[tuple[str, dict[str, Any]]], classes: Classes, panel_px: int = PANEL_PX,
           colors: Colors = None, gap: int = 6) -> Image.Image:
    """Several drawings of one image side by side, each under a small title: ``views`` =
    [(title, boxes)], where boxes = {"boxes", "labels", optional "scores", optional "ignored"
    (or the truth's "difficult" / "iscrowd")}. The image is scaled so its longer side is
    ``panel_px`` (enlarged at most ``MAX_ENLARGE`` times) before drawing, so lines and tags keep
    their size whatever the image's resolution."""
    base, scale = _scaled(_rgb(image), panel_px)
    sheet = Image.new("RGB", (len(views) * base.width + (len(views) - 1) * gap, base.height + TITLE_PX), "white")
    font = _font()
    for i, (title, view) in enumerate(views):
        boxes = np.asarray(_field(view, "boxes") if view else np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4) * scale
        labels = np.asarray(_field(view, "labels") if view else [], dtype=np.int64).reshape(-1)
        flags = _field(view, "ignored")
        if flags is None and view is not None and (view.get("difficult") is not None or view.get("iscrowd") is not None):
            flags = np.zeros(len(labels), dtype=bool)
            for key in ("difficult", "iscrowd"):
                if view.get(key) is not None:
                    flags = flags | np.asarray(view[key], dtype=bool).reshape(-1)
        drawn = draw_boxes(base, boxes, labels, _field(view, "scores"), classes, colors, ignored=flags)
        x = i * (base.width + gap)
        sheet.paste(drawn, (x, TITLE_PX))
        ImageDraw.Draw(sheet).text((x + 2, 3), title, fill=(29, 35, 48), font=font)
    return sheet


def _numpy_boxes(value: dict[str, Any], score_threshold: float | None) -> dict[str, Any]:
    out = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for k, v in value.items() if v is not None}
    if score_threshold is not None and "scores" in out:
        keep = out["scores"].reshape(-1) >= score_threshold
        out = {k: v[keep] if v.ndim and len(v) == len(keep) else v for k, v in out.items()}
    return out


def truth_vs_prediction(image: Any, truth: dict[str, Any], prediction: dict[str, Any], classes: Classes,
                        score_threshold: float = 0.5, panel_px: int = PANEL_PX, colors: Colors = None,
                        titles: tuple[str, str] | None = None) -> Image.Image:
    """truth | prediction of one image, side by side, each under a title that counts its boxes.

    ``truth``: {"boxes", "labels", optional "difficult" / "iscrowd" / "ignored"} (ignored boxes
    dashed); ``prediction``: {"boxes", "labels", "scores"}, of which the boxes scoring at least
    ``score_threshold`` are drawn with their scores. Boxes are in the image's pixels.
    """
    shown_truth = _numpy_boxes(truth, None)
    shown_pred = _numpy_boxes(prediction, score_threshold)
    n_truth = len(np.asarray(shown_truth.get("labels", [])).reshape(-1))
    n_pred = len(np.asarray(shown_pred.get("labels", [])).reshape(-1))
    if titles is None:
        titles = (f"truth: {n_truth} box{'es' if n_truth != 1 else ''}",
                  f"prediction: {n_pred} box{'es' if n_pred != 1 else ''} scoring >= {score_threshold:.2f}")
    return panels(image, [(titles[0], shown_truth), (titles[1], shown_pred)], classes, panel_px, colors)


def legend_html(classes: Sequence[str], colors: Colors = None, ignored: bool = True) -> str:
    """The class colours as HTML swatches (inline styles, no script), plus a dashed "ignored" entry."""
    swatch = ("<span style=\"display:inline-flex;align-items:center;margin:2px 12px 2px 0\">"
              "<span style=\"display:inline-block;width:14px;height:14px;margin-right:5px;border:{border}\"></span>"
              "{name}</span>")
    import html

    items = [swatch.format(border=f"3px solid {hex_colour(c)}", name=html.escape(str(name)))
             for name, c in zip(classes, class_colors(len(classes), colors))]
    if ignored:
        items.append(swatch.format(border="2px dashed #5a6475", name="ignored (difficult / crowd) true box"))
    return f"<div class=\"legend\">{''.join(items)}</div>"
