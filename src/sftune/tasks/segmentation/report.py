"""The segmentation report: report.json (every number) and report.html (the same, for people).

Same conventions and look as the classification report (eval/report.py, eval/html.py): the
page is rendered from the JSON dictionary alone, CSS inline, figures as data: URIs, no script,
no network. The one exception is the worst-images gallery: the JSON keeps only paths and
numbers, and the page draws image | truth | prediction for each, reading the image and mask
files and calling a ``predict_mask`` function (image path -> (H, W) class indices) for the few
images shown.

The JSON layouts are ``"schema": "sftune.segmentation_report/1"`` and
``"sftune.segmentation_comparison/1"`` (``"task": "semantic_segmentation"`` in both): the
classification schema (sftune.report/1) requires accuracy, log loss, calibration and a
mistakes gallery, none of which a segmentation model has.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from ... import bundle as B
from ...eval import plots
from ...eval.html import _e, _figure, _num, _short, _summary, page
from ...eval.report import REPORT_HTML, REPORT_JSON, finite, hardware, run_summary
from . import render
from .metrics import segmentation_scores

if TYPE_CHECKING:  # outputs.py is read by duck typing: classes, ignore_index, per_image, items, headline() ...
    from .outputs import SegmentationOutputs

TASK = "semantic_segmentation"
REPORT_SCHEMA = "sftune.segmentation_report/1"
COMPARISON_SCHEMA = "sftune.segmentation_comparison/1"
CONFIDENCE = 0.95

# The headline numbers, in the order the page shows them.
LABELS = {"miou": "mIoU (mean intersection over union)", "mean_dice": "mean Dice",
          "pixel_acc": "pixel accuracy", "fw_iou": "frequency-weighted IoU", "n": "images", "skipped": "skipped files"}
MIOU_RULE = (
    "Each class's IoU = TP / (TP + FP + FN) is computed once over all scored pixels of the evaluated images (not "
    "averaged per image); pixels labelled with the ignore index, or with any value that is not a class, are not scored. A class with no true pixel and no "
    "predicted pixel in the evaluated set is absent: it has no IoU, is listed as absent and is left out of the mean "
    "(scored neither 0 nor 1). A class present in the truth but never predicted, or predicted but never true, scores 0. "
    "mIoU is the mean IoU of the classes that are not absent; mean Dice follows the same rule with "
    "Dice = 2TP / (2TP + FP + FN). Pixel accuracy = correct pixels / scored pixels; frequency-weighted IoU weighs each "
    "class's IoU by its share of the true pixels (Long et al. 2015). The bootstrap resamples whole images.")

MaskFn = Callable[[str], Any]  # a path -> (H, W) class indices


def segmentation_report(out: SegmentationOutputs, bundle: str | Path, data: str | Path, title: str | None = None,
                        bootstrap: int = 1000, worst: int = 8, seed: int = 0, location: str | Path | None = None,
                        mask_format: str = "index", colormap: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """Every number of one bundle's ``out`` on ``data``: headline metrics with bootstrap
    intervals over images (none when ``bootstrap`` is 0), the per-class table, the confusion
    matrix (pixel counts and row shares), the mIoU rule, and the ``worst`` images by per-image
    mIoU (paths and numbers only: the page draws them, see :func:`render_segmentation_html`).

    Run details come from the bundle's files; ``location`` is where the bundle will live when
    that is not ``bundle`` (a run's work folder before it is renamed into place).
    ``mask_format`` and ``colormap`` are the data's (``LabeledMasks.mask_format`` / ``.colormap``):
    how the page reads the masks of the worst images, and the class colours it draws them in
    (VOC's colour map when ``colormap`` is None).
    """
    bundle = Path(bundle)
    classes = list(out.classes)
    head = out.headline()
    metrics = {k: v for k, v in head.items() if k not in ("per_class_iou", "absent") and not isinstance(v, (dict, list))}
    metrics.setdefault("n", len(out.items))
    metrics["skipped"] = len(out.skipped)
    confusion = torch.as_tensor(out.confusion).long()
    return {
        "schema": REPORT_SCHEMA,
        "task": TASK,
        "title": title or f"{Path(location or bundle).name} on {Path(data).name or data}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": run_summary(bundle, location),
        "data": {"path": str(data), "n": len(out.items), "skipped": [{"path": str(p), "reason": str(r)} for p, r in out.skipped],
                 "classes": classes, "ignore_index": out.ignore_index, "mask_format": mask_format,
                 "colormap": [[int(v) for v in c] for c in colormap] if colormap is not None else None,
                 "ignored_pixels": int(getattr(out, "ignored_pixels", 0)),
                 "out_of_range_pixels": int(getattr(out, "out_of_range_pixels", 0))},
        "metrics": metrics,
        "intervals": ({"confidence": CONFIDENCE, "resamples": bootstrap, **out.intervals(bootstrap, seed)}
                      if bootstrap > 0 and len(out.items) else None),
        "absent": list(head.get("absent") or []),
        "miou_rule": MIOU_RULE,
        "per_class": per_class_table(confusion, classes, head),
        "confusion_matrix": confusion_matrices(confusion),
        "worst": worst_images(out, worst),
        "evaluated_on": hardware(),
    }


def per_class_table(confusion: torch.Tensor, classes: list[str], head: dict[str, Any]) -> dict[str, list]:
    """Columns (one entry per class): class, iou, dice, precision, recall, pixels (true),
    predicted_pixels (metrics.segmentation_scores), pixel_share (share of the true pixels) and
    absent. IoU is the headline's own per-class value; every value of an absent class,
    precision of a never-predicted class and recall of a class without true pixels are None."""
    table = dict(segmentation_scores(confusion, classes)["per_class"])
    headline_iou = head.get("per_class_iou") or {}
    table["iou"] = [headline_iou.get(name, value) for name, value in zip(classes, table["iou"])]
    total = sum(table["pixels"])
    table["pixel_share"] = [v / total if total else 0.0 for v in table["pixels"]]
    absent = set(head.get("absent") or [])
    table["absent"] = [name in absent for name in classes]
    return table


def confusion_matrices(confusion: torch.Tensor) -> dict[str, list]:
    """``counts``: pixels (rows true class, columns predicted); ``normalized``: each row divided by
    its class's true pixels (a row of None for a class without true pixels)."""
    counts = confusion.long()
    rows = counts.sum(dim=1)
    normalized = [[float(v) / float(total) for v in row] if total > 0 else [None] * len(row)
                  for row, total in zip(counts.tolist(), rows.tolist())]
    return {"counts": counts.tolist(), "normalized": normalized}


def _per_image_shares(per_image: torch.Tensor, classes: list[str], axis: int) -> dict[str, float]:
    pixels = per_image.sum(dim=axis).double()
    total = float(pixels.sum())
    return {name: round(float(v) / total, 4) for name, v in zip(classes, pixels.tolist()) if v > 0 and total}


def worst_images(out: SegmentationOutputs, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` images with the lowest per-image mIoU (same rule, within one image), worst
    first: index, image, mask, miou, pixel_acc and the truth's and prediction's class shares of
    the image's scored pixels. Images without a scored pixel are left out."""
    if limit <= 0 or len(out.items) == 0:
        return []
    per_image = torch.as_tensor(out.per_image).long()
    miou = torch.as_tensor(out.per_image_miou()).double()
    scored = (~miou.isnan()).nonzero().flatten()
    order = scored[miou[scored].argsort(stable=True)][:limit]
    classes = list(out.classes)
    rows = []
    for i in order.tolist():
        m = per_image[i]
        item = out.items[i]
        rows.append({"index": i, "image": str(item["image"]), "mask": str(item["mask"]), "miou": round(float(miou[i]), 6),
                     "pixel_acc": round(float(m.diagonal().sum()) / max(1, int(m.sum())), 6),
                     "truth": _per_image_shares(m, classes, 1), "predicted": _per_image_shares(m, classes, 0)})
    return rows


def segmentation_comparison(a: SegmentationOutputs, b: SegmentationOutputs, bundle_a: str | Path, bundle_b: str | Path,
                            data: str | Path, title: str | None = None, bootstrap: int = 1000, worst: int = 8,
                            seed: int = 0, mask_format: str = "index",
                            colormap: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """Both models' reports on the same images, the paired bootstrap difference of the headline
    metrics (B - A, the same image resamples for both) with a verdict on mIoU, and the images
    whose per-image mIoU differs most between the two."""
    from .outputs import compare

    reports = [segmentation_report(o, p, data, bootstrap=bootstrap, worst=worst, seed=seed, mask_format=mask_format,
                                   colormap=colormap)
               for o, p in ((a, bundle_a), (b, bundle_b))]
    comparison = compare(a, b, resamples=max(bootstrap, 100), seed=seed)
    return {
        "schema": COMPARISON_SCHEMA,
        "task": TASK,
        "title": title or f"{Path(bundle_a).absolute().name} vs {Path(bundle_b).absolute().name} on {Path(data).name or data}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "a": reports[0],
        "b": reports[1],
        "comparison": comparison,
        "verdict": _sentence(comparison.get("verdict") or "no verdict: the comparison gave none"),
        "differences_per_image": image_differences(a, b, worst),
    }


def difference(comparison: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The interval of B - A for ``name`` in a compare() result ({"differences": {name: ...}} or {name: ...})."""
    found = (comparison.get("differences") or {}).get(name, comparison.get(name))
    return found if isinstance(found, dict) and "low" in found else None


def image_differences(a: SegmentationOutputs, b: SegmentationOutputs, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` images where the per-image mIoU of A and B differ most (largest |B - A| first)."""
    if limit <= 0 or len(a.items) == 0:
        return []
    ma, mb = torch.as_tensor(a.per_image_miou()).double(), torch.as_tensor(b.per_image_miou()).double()
    gap = (mb - ma).abs()
    both = (~gap.isnan() & (gap > 0)).nonzero().flatten()
    rows = []
    for i in both[gap[both].argsort(descending=True, stable=True)][:limit].tolist():
        rows.append({"index": i, "image": str(a.items[i]["image"]), "mask": str(a.items[i]["mask"]),
                     "a": round(float(ma[i]), 6), "b": round(float(mb[i]), 6)})
    return rows


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# --- HTML ------------------------------------------------------------------------------------------------------------

def render_segmentation_html(report: dict[str, Any], predict_mask: MaskFn | None = None,
                             read_mask: MaskFn | None = None) -> str:
    """The page of a segmentation report, or of a segmentation comparison.

    ``predict_mask`` (image path -> (H, W) class indices) draws the worst images as
    image | truth | prediction; without it they are listed. ``read_mask`` reads a truth mask
    (path -> (H, W) class indices); by default data.read_mask with the report's mask_format,
    colormap and ignore_index.
    """
    if report.get("schema") == COMPARISON_SCHEMA:
        return page(report["title"], _comparison_body(report))
    return page(report["title"], _report_body(report, predict_mask, read_mask or _mask_reader(report["data"])))


def _mask_reader(data: dict[str, Any]) -> MaskFn:
    from .data import MaskReader

    fmt = data.get("mask_format") or "index"
    colormap = tuple(tuple(c) for c in data["colormap"]) if fmt == "rgb" and data.get("colormap") else None
    ignore = data.get("ignore_index")
    return MaskReader(fmt, colormap, 255 if ignore is None else ignore)


def write_segmentation_report(folder: str | Path, report: dict[str, Any], predict_mask: MaskFn | None = None,
                              read_mask: MaskFn | None = None) -> tuple[Path, Path]:
    """report.json and report.html into ``folder``, each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = finite(report)
    B.atomic_write_json(folder / REPORT_JSON, report)
    B.atomic_write_text(folder / REPORT_HTML, render_segmentation_html(report, predict_mask, read_mask))
    return folder / REPORT_JSON, folder / REPORT_HTML


def _report_body(r: dict[str, Any], predict_mask: MaskFn | None, read_mask: MaskFn) -> str:
    data = r["data"]
    parts = [f"<h1>{_e(r['title'])}</h1>",
             f"<div class=\"sub\">sftune segmentation report · {_e(r['created'])} · {data['n']} images, "
             f"{len(data['classes'])} classes (ignore index {_e(data.get('ignore_index'))})</div>"]
    # The classification report's summary table; its counted things are images here.
    parts.append("<h2>Summary</h2>" + _summary(r).replace(f"({data['n']} examples, ", f"({data['n']} images, ", 1))
    parts.append("<h2>Metrics</h2>" + _metrics_table(r))
    if data.get("out_of_range_pixels"):
        parts.append(f"<p class=\"bad\"><b>{data['out_of_range_pixels']:,} mask pixels</b> hold a value that is neither a class "
                     f"index (0 to {len(data['classes']) - 1}) nor the ignore index {_e(data.get('ignore_index'))}: they were "
                     "not scored. The masks and the class list may not match.</p>")
    parts.append("<h2>Per class</h2>" + _per_class(r))
    if r.get("confusion_matrix"):
        parts.append("<h2>Confusion matrix</h2><p class=\"muted\">Pixels; colour: the share of each true class's pixels "
                     "(rows sum to 1).</p>"
                     + _figure(plots.confusion_matrix(r["confusion_matrix"]["counts"], data["classes"]), "confusion matrix"))
    curves = plots.training_curves(r["run"].get("history") or [])
    if curves:
        parts.append("<h2>Training curves</h2>" + _figure(curves, "training curves: loss, metrics and learning rate per epoch"))
    parts.append("<h2>Worst images</h2>" + _worst(r, predict_mask, read_mask))
    if data["skipped"]:
        rows = "".join(f"<tr><td>{_e(s['path'])}</td><td>{_e(s['reason'])}</td></tr>" for s in data["skipped"][:200])
        parts.append(f"<h2>Skipped files ({len(data['skipped'])})</h2><table><tr><th>file</th><th>why</th></tr>{rows}</table>")
    parts.append("<h2>Configuration</h2><details><summary>config.yaml of the run</summary><pre>"
                 + _e(yaml.safe_dump(r["run"].get("config") or {}, sort_keys=False)) + "</pre></details>")
    return "\n".join(parts)


def _interval(ci: dict[str, Any] | None) -> str:
    return f"{ci['low']:.4f} – {ci['high']:.4f}" if ci and ci.get("low") is not None and ci.get("high") is not None else ""


def _metrics_table(r: dict[str, Any]) -> str:
    intervals = r.get("intervals") or {}
    rows = []
    for key, label in LABELS.items():
        if key not in r["metrics"]:
            continue
        rows.append(f"<tr><td>{label}</td><td class=\"num\">{_num(r['metrics'][key])}</td>"
                    f"<td class=\"num\">{_interval(intervals.get(key))}</td></tr>")
    note = (f"<p class=\"muted\">Intervals: {intervals['resamples']} bootstrap resamples of the images.</p>"
            if intervals else "")
    absent = r.get("absent") or []
    absent_line = (f"<p><b>Absent</b> (no true and no predicted pixel; left out of the means): "
                   f"{_e(', '.join(absent))}</p>" if absent else "<p class=\"muted\">No class is absent.</p>")
    return ("<table><tr><th>metric</th><th>value</th><th>95% interval (bootstrap)</th></tr>" + "".join(rows) + "</table>"
            + note + absent_line + f"<div class=\"verdict\"><b>The mIoU rule.</b> {_e(r.get('miou_rule') or MIOU_RULE)}</div>")


def _cell(value: Any, absent: bool, low_below: float | None = None) -> str:
    if absent:
        return "<td class=\"num muted\">absent</td>"
    low = low_below is not None and isinstance(value, float) and value < low_below
    return f"<td class=\"num{' low' if low else ''}\">{_num(value)}</td>"


def _per_class(r: dict[str, Any]) -> str:
    pc = r["per_class"]
    head = ("<tr><th>class</th><th>colour</th><th>IoU</th><th>Dice</th><th>precision</th><th>recall</th>"
            "<th>true pixels</th><th>share of true pixels</th></tr>")
    colours = render.class_colors(len(pc["class"]), r["data"].get("colormap"))
    rows = []
    for i, name in enumerate(pc["class"]):
        absent = bool(pc["absent"][i])
        swatch = (f"<td><span style=\"display:inline-block;width:14px;height:14px;border:1px solid #8c8c8c;"
                  f"background:{render.hex_colour(colours[i])}\"></span></td>")
        share = f"{pc['pixel_share'][i]:.2%}" if pc["pixel_share"][i] is not None else "—"
        rows.append(f"<tr><td>{_e(name)}</td>{swatch}{_cell(pc['iou'][i], absent, 0.5)}{_cell(pc['dice'][i], absent)}"
                    f"{_cell(pc['precision'][i], absent)}{_cell(pc['recall'][i], absent)}"
                    f"<td class=\"num\">{pc['pixels'][i]:,}</td><td class=\"num\">{share}</td></tr>")
    table = f"<table>{head}{''.join(rows)}</table>"
    shown = [(name, v) for name, v, gone in zip(pc["class"], pc["iou"], pc["absent"]) if not gone and v is not None]
    if not shown:
        return table
    return table + _figure(plots.per_class_bars([n for n, _ in shown], [v for _, v in shown],
                                                "IoU per class (absent classes left out)"), "IoU per class")


def _jpeg(image: Any) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def _draw(row: dict[str, Any], classes: list[str], ignore_index: int | None, predict_mask: MaskFn,
          read_mask: MaskFn, colors: Any = None) -> str | None:
    """A base64 JPEG triptych of one image, or None when a file cannot be read or predicted."""
    from PIL import Image, ImageOps

    try:
        with Image.open(row["image"]) as image:
            picture = ImageOps.exif_transpose(image).convert("RGB")
        truth = np.asarray(read_mask(row["mask"]))
        prediction = np.asarray(predict_mask(row["image"]))
        return _jpeg(render.triptych(picture, truth, prediction, classes, ignore_index, colors=colors))
    except Exception:  # a gallery entry must never break the report: shown as "not readable"
        return None


def _worst(r: dict[str, Any], predict_mask: MaskFn | None, read_mask: MaskFn) -> str:
    rows = r.get("worst") or []
    if not rows:
        return "<p class=\"muted\">None: no image has a scored pixel.</p>"
    data = r["data"]
    intro = ("<p class=\"muted\">The images with the lowest mIoU of their own pixels, worst first: "
             "where to look for label noise, a missed class or a systematic confusion.</p>")

    def shares(values: dict[str, float]) -> str:
        return _e(", ".join(f"{k} {v:.0%}" for k, v in sorted(values.items(), key=lambda kv: -kv[1])[:4]))

    captions = [f"<div><b>{_e(_short(row['image'], 90, keep_end=True))}</b> · mIoU {row['miou']:.3f}"
                f" · pixel accuracy {row['pixel_acc']:.3f}</div><div class=\"muted\">truth: {shares(row['truth'])}"
                f" · predicted: {shares(row['predicted'])}</div>" for row in rows]
    if predict_mask is None:
        table = "".join(f"<tr><td>{c}</td></tr>" for c in captions)
        return intro + f"<table>{table}</table>"
    figures = []
    for row, caption in zip(rows, captions):
        drawn = _draw(row, data["classes"], data.get("ignore_index"), predict_mask, read_mask, data.get("colormap"))
        media = (f"<img src=\"data:image/jpeg;base64,{drawn}\" alt=\"{_e(row['image'])}\">" if drawn
                 else "<div class=\"muted\">(image, mask or prediction not readable)</div>")
        figures.append(f"<div class=\"figure\">{media}{caption}</div>")
    return intro + render.legend_html(data["classes"], colors=data.get("colormap")) + "<div>" + "".join(figures) + "</div>"


def _comparison_body(r: dict[str, Any]) -> str:
    a, b, cmp = r["a"], r["b"], r["comparison"]
    parts = [f"<h1>{_e(r['title'])}</h1>",
             f"<div class=\"sub\">sftune segmentation comparison · {_e(r['created'])} · {a['data']['n']} images · "
             f"A = {_e(a['run']['bundle'])}, B = {_e(b['run']['bundle'])}</div>",
             f"<div class=\"verdict\">{_e(r['verdict'])}</div>"]
    rows = []
    any_real = False
    for key, label in LABELS.items():
        va, vb = a["metrics"].get(key), b["metrics"].get(key)
        if va is None or vb is None or key in ("n", "skipped"):
            continue
        diff = difference(cmp, key)
        real = bool(diff and diff.get("excludes_zero"))
        any_real |= real
        ci = (f"{diff['low']:+.4f} – {diff['high']:+.4f}" + (" <b>*</b>" if real else "")
              if diff and diff.get("low") is not None and diff.get("high") is not None else "")
        rows.append(f"<tr><td>{label}</td><td class=\"num\">{_num(va)}</td>"
                    f"<td class=\"num\">{_interval((a.get('intervals') or {}).get(key))}</td><td class=\"num\">{_num(vb)}</td>"
                    f"<td class=\"num\">{_interval((b.get('intervals') or {}).get(key))}</td>"
                    f"<td class=\"num\">{vb - va:+.4f}</td><td class=\"num\">{ci}</td></tr>")
    confidence = cmp.get("confidence", CONFIDENCE)
    parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>A</th><th>A interval</th><th>B</th><th>B interval</th>"
                 f"<th>B − A</th><th>{confidence:.0%} interval of B − A (paired bootstrap)</th></tr>{''.join(rows)}</table>"
                 + ("<p class=\"muted\">* the interval excludes 0: a real difference.</p>" if any_real
                    else "<p class=\"muted\">Every interval includes 0.</p>")
                 + f"<div class=\"verdict\"><b>The mIoU rule.</b> {_e(a.get('miou_rule') or MIOU_RULE)}</div>")
    models = [("A", a), ("B", b)]
    parts.append("<h2>Models</h2><table><tr><th></th><th>model</th><th>strategy</th><th>training data</th><th>bundle</th></tr>"
                 + "".join(f"<tr><th>{n}</th><td>{_e(m['run'].get('model'))}</td><td>{_e(m['run'].get('strategy'))}</td>"
                           f"<td>{_e((m['run'].get('train_data') or {}).get('path'))}</td><td>{_e(m['run']['bundle'])}</td></tr>"
                           for n, m in models) + "</table>")
    pa, pb = a["per_class"], b["per_class"]
    cells = []
    for i, name in enumerate(pa["class"]):
        ia, ib = pa["iou"][i], pb["iou"][i]
        delta = f"{ib - ia:+.4f}" if ia is not None and ib is not None else "—"
        cells.append(f"<tr><td>{_e(name)}</td>{_cell(ia, pa['absent'][i])}{_cell(ib, pb['absent'][i])}"
                     f"<td class=\"num\">{delta}</td></tr>")
    parts.append("<h2>IoU per class</h2><table><tr><th>class</th><th>A</th><th>B</th><th>B − A</th></tr>"
                 + "".join(cells) + "</table>")
    shown = [i for i in range(len(pa["class"])) if pa["iou"][i] is not None and pb["iou"][i] is not None]
    if shown:
        parts.append(_figure(plots.per_class_bars([pa["class"][i] for i in shown], [pa["iou"][i] for i in shown],
                                                  "IoU per class (absent classes left out)",
                                                  other=[pb["iou"][i] for i in shown], labels=("A", "B")),
                             "IoU per class, A and B"))
    for name, m in models:
        if m.get("confusion_matrix"):
            parts.append(f"<h2>Confusion matrix of {name}</h2>"
                         + _figure(plots.confusion_matrix(m["confusion_matrix"]["counts"], m["data"]["classes"]),
                                   f"confusion matrix {name}"))
    diffs = r.get("differences_per_image") or []
    if diffs:
        table = "".join(f"<tr><td>{_e(_short(d['image'], 90, keep_end=True))}</td><td class=\"num\">{d['a']:.4f}</td>"
                        f"<td class=\"num\">{d['b']:.4f}</td><td class=\"num\">{d['b'] - d['a']:+.4f}</td></tr>" for d in diffs)
        parts.append("<h2>Where they differ most</h2><table><tr><th>image</th><th>mIoU A</th><th>mIoU B</th>"
                     f"<th>B − A</th></tr>{table}</table>")
    else:
        parts.append("<h2>Where they differ most</h2><p class=\"muted\">Nowhere: every image has the same mIoU.</p>")
    return "\n".join(parts)
