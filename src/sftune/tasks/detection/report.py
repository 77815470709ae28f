"""The detection report: report.json (every number) and report.html (the same, for people).

Same conventions and look as the classification and segmentation reports (eval/report.py,
eval/html.py, tasks/segmentation/report.py): the page is rendered from the JSON dictionary
alone, CSS inline, figures as data: URIs, no script, no network. The worst images' boxes (truth,
and the predictions at the operating point) are small, so the JSON carries them and the page
draws them on the image files: no predict callback, no second pass of the model.

The JSON layouts are ``"schema": "sftune.detection_report/1"`` and
``"sftune.detection_comparison/1"`` (``"task": "object_detection"`` in both).
"""

from __future__ import annotations

import base64
import io
import time
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
from .metrics import CONFUSION_RULE, MAP_RULE, MATCH_IOU, confusion_counts, per_class_at_threshold, unscored

if TYPE_CHECKING:
    from .outputs import DetectionOutputs

TASK = "object_detection"
REPORT_SCHEMA = "sftune.detection_report/1"
COMPARISON_SCHEMA = "sftune.detection_comparison/1"
CONFIDENCE = 0.95
BACKGROUND = "background"

# The headline numbers, in the order the page shows them.
LABELS = {"map": "mAP@[.5:.95] (COCO)", "map_50": "mAP50 (IoU 0.5)", "map_75": "mAP75 (IoU 0.75)",
          "map_small": "mAP, small boxes (< 32² px)", "map_medium": "mAP, medium boxes (32²–96² px)",
          "map_large": "mAP, large boxes (> 96² px)", "mar_100": "AR@100 (mean recall, 100 detections)",
          "n": "images", "n_boxes": "true boxes scored", "n_ignored_boxes": "true boxes ignored (difficult / crowd)",
          "skipped": "skipped files"}
_METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")


def detection_report(out: DetectionOutputs, bundle: str | Path, data: str | Path, title: str | None = None,
                     bootstrap: int = 1000, worst: int = 8, seed: int = 0,
                     location: str | Path | None = None) -> dict[str, Any]:
    """Every number of one bundle's ``out`` on ``data``: COCO headline metrics with bootstrap
    intervals over images (none when ``bootstrap`` is 0), the per-class table (AP, AP50, AP75,
    AR@100 and the counts at the operating point), precision-recall curves, the matched-box
    confusion matrix with its background row and column, the mAP rule, and the ``worst``
    images by per-image AP50, worst first, with their boxes (truth, and the predictions scoring
    at least ``out.score_threshold``) for the page to draw.

    Run details come from the bundle's files; ``location`` is where the bundle will live when
    that is not ``bundle`` (a run's work folder before it is renamed into place).
    """
    bundle = Path(bundle)
    classes = list(out.classes)
    scores = out.scores()
    head = out.headline()
    metrics = {k: head[k] for k in _METRICS}
    metrics.update({"n": len(out), "n_boxes": head["n_boxes"], "n_ignored_boxes": head["n_ignored_boxes"],
                    "skipped": len(out.skipped)})
    confusion = out.confusion(MATCH_IOU)
    return {
        "schema": REPORT_SCHEMA,
        "task": TASK,
        "title": title or f"{Path(location or bundle).name} on {Path(data).name or data}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": run_summary(bundle, location),
        "data": {"path": str(data), "n": len(out), "skipped": [{"path": p, "reason": r} for p, r in out.skipped],
                 "classes": classes, "n_boxes": head["n_boxes"], "n_ignored_boxes": head["n_ignored_boxes"],
                 "n_predictions": scores["n_predictions"], "score_threshold": out.score_threshold,
                 "match_iou": MATCH_IOU},
        "metrics": metrics,
        "intervals": ({"confidence": CONFIDENCE, "resamples": bootstrap, **out.intervals(bootstrap, seed)}
                      if bootstrap > 0 and len(out) else None),
        "absent": list(head["absent"]),
        "map_rule": MAP_RULE,
        "per_class": per_class_table(out, scores, confusion),
        "pr_curves": scores.get("pr_curves"),
        "confusion_matrix": confusion_matrix(confusion, classes, out.score_threshold),
        "worst": worst_images(out, worst),
        "evaluated_on": hardware(),
    }


def per_class_table(out: DetectionOutputs, scores: dict[str, Any], confusion: torch.Tensor) -> dict[str, list]:
    """Columns (one entry per class): class, ap, ap50, ap75, ar100 (COCO's; None for an absent
    class), absent, ignored_boxes, and at the operating point (metrics.per_class_at_threshold):
    true_boxes (scored), predicted, matched, missed, false_alarms, precision, recall."""
    classes = list(out.classes)
    table: dict[str, list] = {"class": classes}
    for column, key in (("ap", "per_class_ap"), ("ap50", "per_class_ap50"), ("ap75", "per_class_ap75"),
                        ("ar100", "per_class_ar100")):
        table[column] = [scores[key][name] for name in classes]
    absent = set(scores["absent"])
    table["absent"] = [name in absent for name in classes]
    counts = torch.zeros(len(classes), dtype=torch.int64)
    for truth in out.truths:
        skip = unscored(truth)
        if skip.any():
            counts += torch.bincount(truth["labels"][skip], minlength=len(classes))
    table["ignored_boxes"] = counts.tolist()
    at = per_class_at_threshold(confusion, classes)
    for key in ("true_boxes", "predicted", "matched", "missed", "false_alarms", "precision", "recall"):
        table[key] = at[key]
    return table


def confusion_matrix(confusion: torch.Tensor, classes: list[str], score_threshold: float) -> dict[str, Any]:
    """The matched-box matrix as JSON: ``labels`` (classes, then "background"), ``counts`` (rows
    true, columns predicted), ``normalized`` (each row over its sum; None for an empty row), the
    ``iou`` and ``score_threshold`` it was matched at, the matching ``rule``, and its totals
    (matched, confused, missed, false_alarms)."""
    counts = torch.as_tensor(confusion).long()
    rows = counts.sum(dim=1)
    normalized = [[float(v) / float(total) for v in row] if total > 0 else [None] * len(row)
                  for row, total in zip(counts.tolist(), rows.tolist())]
    return {"labels": [*classes, BACKGROUND], "counts": counts.tolist(), "normalized": normalized, "iou": MATCH_IOU,
            "score_threshold": score_threshold, "rule": CONFUSION_RULE, **confusion_counts(counts)}


def _boxes(value: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 2) for v in box] for box in value.reshape(-1, 4).tolist()]


def _shown(out: DetectionOutputs, i: int, prediction: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Image ``i``'s truth, and a prediction's boxes at the operating point, as JSON lists."""
    pred = out.predictions[i] if prediction is None else prediction
    keep = pred["scores"] >= out.score_threshold
    return {"boxes": _boxes(pred["boxes"][keep]), "labels": pred["labels"][keep].tolist(),
            "scores": [round(float(s), 4) for s in pred["scores"][keep].tolist()]}


def _truth(out: DetectionOutputs, i: int) -> dict[str, Any]:
    truth = out.truths[i]
    return {"boxes": _boxes(truth["boxes"]), "labels": truth["labels"].tolist(), "ignored": unscored(truth).tolist()}


def worst_images(out: DetectionOutputs, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` images with the lowest per-image AP50 (DetectionOutputs.per_image_ap50),
    worst first: index, image, size, ap50, the matched-box counts at the operating point
    (true_boxes, ignored_boxes, predicted, matched, confused, missed, false_alarms), and the
    boxes to draw: ``truth`` {boxes, labels, ignored} and ``prediction`` {boxes, labels, scores}
    (the predictions scoring at least the threshold). Images with nothing to score are left out."""
    if limit <= 0 or len(out) == 0:
        return []
    ap50 = out.per_image_ap50().double()
    scored = (~ap50.isnan()).nonzero().flatten()
    order = scored[ap50[scored].argsort(stable=True)][:limit]
    per_image = out.per_image_confusion(MATCH_IOU)
    rows = []
    for i in order.tolist():
        counts = confusion_counts(per_image[i])
        truth = _truth(out, i)
        shown = _shown(out, i)
        rows.append({"index": i, "image": out.items[i], "size": list(out.image_sizes[i]) if out.image_sizes else None,
                     "ap50": round(float(ap50[i]), 6), "true_boxes": sum(not f for f in truth["ignored"]),
                     "ignored_boxes": sum(truth["ignored"]), "predicted": len(shown["labels"]), **counts,
                     "truth": truth, "prediction": shown})
    return rows


def detection_comparison(a: DetectionOutputs, b: DetectionOutputs, bundle_a: str | Path, bundle_b: str | Path,
                         data: str | Path, title: str | None = None, bootstrap: int = 1000, worst: int = 8,
                         seed: int = 0) -> dict[str, Any]:
    """Both detectors' reports on the same images, the paired bootstrap difference of map,
    map_50, map_75 and mar_100 (B - A, the same image resamples for both) with a verdict on mAP,
    and the images whose per-image AP50 differs most between the two (with both predictions)."""
    from .outputs import compare

    reports = [detection_report(o, p, data, bootstrap=bootstrap, worst=worst, seed=seed)
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


def image_differences(a: DetectionOutputs, b: DetectionOutputs, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` images where the per-image AP50 of A and B differ most (largest |B - A| first),
    with the truth and both models' predictions at their operating points."""
    if limit <= 0 or len(a) == 0:
        return []
    pa, pb = a.per_image_ap50().double(), b.per_image_ap50().double()
    gap = (pb - pa).abs()
    both = (~gap.isnan() & (gap > 0)).nonzero().flatten()
    rows = []
    for i in both[gap[both].argsort(descending=True, stable=True)][:limit].tolist():
        rows.append({"index": i, "image": a.items[i], "size": list(a.image_sizes[i]) if a.image_sizes else None,
                     "a": round(float(pa[i]), 6), "b": round(float(pb[i]), 6), "truth": _truth(a, i),
                     "prediction_a": _shown(a, i), "prediction_b": _shown(b, i)})
    return rows


def difference(comparison: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The interval of B - A for ``name`` in a compare() result ({"differences": {name: ...}} or {name: ...})."""
    found = (comparison.get("differences") or {}).get(name, comparison.get(name))
    return found if isinstance(found, dict) and "low" in found else None


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# --- figures ---------------------------------------------------------------------------------------------------------

def pr_figure(pr_curves: dict[str, Any] | None, classes: list[str]) -> bytes | None:
    """Per-class precision-recall curves (COCO's interpolated precision at the 101 recall points):
    solid at IoU 0.5, dashed at IoU 0.75, in the classes' box colours; None without any curve."""
    if not pr_curves or not pr_curves.get("curves"):
        return None
    recall = pr_curves["recall"]
    colours = render.class_colors(len(classes)) / 255.0
    fig, ax = plots.plt.subplots(figsize=(7.0, 4.6))
    drawn = False
    for curve, style in zip(pr_curves["curves"], ("-", "--")):
        for k, name in enumerate(classes):
            precision = (curve.get("precision") or {}).get(name)
            if precision is None:
                continue
            ap = float(np.mean(precision))
            label = f"{name if len(name) <= 20 else name[:19] + '…'} (AP{round(curve['iou'] * 100)} {ap:.3f})"
            ax.plot(recall, precision, style, color=colours[k], lw=1.6, label=label)
            drawn = True
    if not drawn:
        plots.plt.close(fig)
        return None
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated)")
    ax.set_title("Precision-recall per class (solid: IoU 0.5, dashed: IoU 0.75)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return plots._png(fig)


# --- HTML ------------------------------------------------------------------------------------------------------------

def render_detection_html(report: dict[str, Any], draw: bool = True) -> str:
    """The page of a detection report, or of a detection comparison. ``draw``: draw the worst
    (or most different) images from their files and the boxes in the report; without it they
    are listed."""
    if report.get("schema") == COMPARISON_SCHEMA:
        return page(report["title"], _comparison_body(report, draw))
    return page(report["title"], _report_body(report, draw))


def write_detection_report(folder: str | Path, report: dict[str, Any], draw: bool = True) -> tuple[Path, Path]:
    """report.json and report.html into ``folder``, each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = finite(report)
    B.atomic_write_json(folder / REPORT_JSON, report)
    B.atomic_write_text(folder / REPORT_HTML, render_detection_html(report, draw))
    return folder / REPORT_JSON, folder / REPORT_HTML


def _report_body(r: dict[str, Any], draw: bool) -> str:
    data = r["data"]
    parts = [f"<h1>{_e(r['title'])}</h1>",
             f"<div class=\"sub\">sftune detection report · {_e(r['created'])} · {data['n']} images, "
             f"{len(data['classes'])} classes, {data['n_boxes']:,} true boxes scored"
             f" ({data['n_ignored_boxes']:,} ignored)</div>"]
    parts.append("<h2>Summary</h2>" + _summary(r).replace(f"({data['n']} examples, ", f"({data['n']} images, ", 1))
    parts.append("<h2>Metrics</h2>" + _metrics_table(r))
    parts.append("<h2>Per class</h2>" + _per_class(r))
    curves = pr_figure(r.get("pr_curves"), data["classes"])
    if curves:
        parts.append("<h2>Precision-recall curves</h2><p class=\"muted\">COCO's interpolated precision (the best "
                     "precision at any higher recall) at the 101 recall points; the area under each curve is the "
                     "class's AP at that IoU. Absent classes have no curve.</p>" + _figure(curves, "precision-recall curves"))
    if r.get("confusion_matrix"):
        parts.append("<h2>Confusion matrix of matched boxes</h2>" + _confusion(r["confusion_matrix"]))
    history_curves = plots.training_curves(r["run"].get("history") or [])
    if history_curves:
        parts.append("<h2>Training curves</h2>" + _figure(history_curves, "training curves: loss, metrics and learning rate per epoch"))
    parts.append("<h2>Worst images</h2>" + _worst(r, draw))
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
    note = (f"<p class=\"muted\">Intervals: {intervals['resamples']} bootstrap resamples of the images. — : nothing "
            "to score (e.g. no true box of that size).</p>" if intervals else
            "<p class=\"muted\">— : nothing to score (e.g. no true box of that size).</p>")
    absent = r.get("absent") or []
    absent_line = (f"<p><b>Absent</b> (no scored true box in these images; no AP, left out of mAP): "
                   f"{_e(', '.join(absent))}</p>" if absent else "<p class=\"muted\">No class is absent.</p>")
    return ("<table><tr><th>metric</th><th>value</th><th>95% interval (bootstrap)</th></tr>" + "".join(rows) + "</table>"
            + note + absent_line + f"<div class=\"verdict\"><b>The mAP rule.</b> {_e(r.get('map_rule') or MAP_RULE)}</div>")


def _cell(value: Any, absent: bool, low_below: float | None = None) -> str:
    if absent:
        return "<td class=\"num muted\">absent</td>"
    low = low_below is not None and isinstance(value, float) and value < low_below
    return f"<td class=\"num{' low' if low else ''}\">{_num(value)}</td>"


def _swatch(colour: Any) -> str:
    return (f"<td><span style=\"display:inline-block;width:14px;height:14px;border:3px solid "
            f"{render.hex_colour(colour)}\"></span></td>")


def _per_class(r: dict[str, Any]) -> str:
    pc = r["per_class"]
    threshold = r["data"].get("score_threshold")
    head = ("<tr><th>class</th><th>colour</th><th>AP</th><th>AP50</th><th>AP75</th><th>AR@100</th><th>true boxes</th>"
            f"<th>ignored</th><th>predicted (score ≥ {threshold:.2f})</th><th>matched</th><th>missed</th>"
            "<th>false alarms</th><th>precision</th><th>recall</th></tr>")
    colours = render.class_colors(len(pc["class"]))
    rows = []
    for i, name in enumerate(pc["class"]):
        absent = bool(pc["absent"][i])
        rows.append(f"<tr><td>{_e(name)}</td>{_swatch(colours[i])}{_cell(pc['ap'][i], absent, 0.5)}"
                    f"{_cell(pc['ap50'][i], absent)}{_cell(pc['ap75'][i], absent)}{_cell(pc['ar100'][i], absent)}"
                    f"<td class=\"num\">{pc['true_boxes'][i]:,}</td><td class=\"num\">{pc['ignored_boxes'][i]:,}</td>"
                    f"<td class=\"num\">{pc['predicted'][i]:,}</td><td class=\"num\">{pc['matched'][i]:,}</td>"
                    f"<td class=\"num\">{pc['missed'][i]:,}</td><td class=\"num\">{pc['false_alarms'][i]:,}</td>"
                    f"<td class=\"num\">{_num(pc['precision'][i])}</td><td class=\"num\">{_num(pc['recall'][i])}</td></tr>")
    note = (f"<p class=\"muted\">AP columns: COCO's, over every prediction. The counts and precision / recall are at the "
            f"operating point: predictions scoring at least {threshold:.2f}, matched at IoU ≥ "
            f"{r['data'].get('match_iou', MATCH_IOU):.2f} (the confusion matrix below).</p>")
    table = f"<table>{head}{''.join(rows)}</table>{note}"
    shown = [i for i in range(len(pc["class"])) if not pc["absent"][i] and pc["ap"][i] is not None]
    if not shown:
        return table
    return table + _figure(plots.per_class_bars([pc["class"][i] for i in shown], [pc["ap"][i] for i in shown],
                                                "AP per class (absent classes left out)",
                                                other=[pc["ap50"][i] for i in shown], labels=("AP@[.5:.95]", "AP50")),
                           "AP per class")


def _confusion(cm: dict[str, Any]) -> str:
    text = (f"<p class=\"muted\">Boxes, not images: rows are the true class, columns the predicted class, at IoU ≥ "
            f"{cm['iou']:.2f} and score ≥ {cm['score_threshold']:.2f}. The last row (background) counts false alarms, "
            f"the last column (background) misses. Colour: each row's share. {cm['matched']:,} matched, "
            f"{cm['confused']:,} with the wrong class, {cm['missed']:,} missed, {cm['false_alarms']:,} false alarms.</p>")
    return (text + _figure(plots.confusion_matrix(cm["counts"], cm["labels"]), "confusion matrix of matched boxes")
            + f"<div class=\"verdict\"><b>The matching rule.</b> {_e(cm.get('rule') or CONFUSION_RULE)}</div>")


def _jpeg(image: Any) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def _open(path: str, size: list[int] | None) -> Any:
    """The image in the pixels its boxes refer to: stored pixels, or EXIF-rotated ones when only
    those match the recorded (height, width); EXIF-rotated when no size was recorded (what a
    viewer shows)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        stored = image.convert("RGB")
        upright = ImageOps.exif_transpose(image).convert("RGB")
    if size:
        wanted = (int(size[1]), int(size[0]))
        if stored.size == wanted:
            return stored
        if upright.size == wanted:
            return upright
    return upright


def _draw(row: dict[str, Any], views: list[tuple[str, dict[str, Any]]], classes: list[str]) -> str | None:
    """A base64 JPEG of the row's image drawn once per view, or None when the file cannot be read.
    Two views take render.PANEL_PX each; three take 3/4 of it, so they fit the page's width."""
    panel_px = render.PANEL_PX if len(views) <= 2 else render.PANEL_PX * 3 // 4
    try:
        return _jpeg(render.panels(_open(row["image"], row.get("size")), views, classes, panel_px=panel_px))
    except Exception:  # a gallery entry must never break the report: shown as "not readable"
        return None


def _worst(r: dict[str, Any], draw: bool) -> str:
    rows = r.get("worst") or []
    if not rows:
        return "<p class=\"muted\">None: no image has anything to score.</p>"
    data = r["data"]
    threshold = data.get("score_threshold", 0.5)
    intro = ("<p class=\"muted\">The images with the lowest AP50 of their own boxes, worst first: where to look for "
             "missing or wrong labels, a class the model confuses, or objects it cannot see. Left: the truth "
             f"(ignored boxes dashed); right: the predictions scoring at least {threshold:.2f}, with their scores.</p>")
    captions = [f"<div><b>{_e(_short(row['image'], 90, keep_end=True))}</b> · AP50 {row['ap50']:.3f}</div>"
                f"<div class=\"muted\">{row['true_boxes']} true boxes ({row['ignored_boxes']} ignored) · "
                f"{row['predicted']} predicted · {row['matched']} matched · {row['confused']} wrong class · "
                f"{row['missed']} missed · {row['false_alarms']} false alarms</div>" for row in rows]
    if not draw:
        return intro + "<table>" + "".join(f"<tr><td>{c}</td></tr>" for c in captions) + "</table>"
    figures = []
    for row, caption in zip(rows, captions):
        views = [(f"truth: {row['true_boxes']} boxes", row["truth"]),
                 (f"prediction: {row['predicted']} boxes, score >= {threshold:.2f}", row["prediction"])]
        drawn = _draw(row, views, data["classes"])
        media = (f"<img src=\"data:image/jpeg;base64,{drawn}\" alt=\"{_e(row['image'])}\">" if drawn
                 else "<div class=\"muted\">(image not readable)</div>")
        figures.append(f"<div class=\"figure\">{media}{caption}</div>")
    return intro + render.legend_html(data["classes"]) + "<div>" + "".join(figures) + "</div>"


def _comparison_body(r: dict[str, Any], draw: bool) -> str:
    a, b, cmp = r["a"], r["b"], r["comparison"]
    parts = [f"<h1>{_e(r['title'])}</h1>",
             f"<div class=\"sub\">sftune detection comparison · {_e(r['created'])} · {a['data']['n']} images · "
             f"A = {_e(a['run']['bundle'])}, B = {_e(b['run']['bundle'])}</div>",
             f"<div class=\"verdict\">{_e(r['verdict'])}</div>"]
    rows = []
    any_real = False
    for key in _METRICS:
        va, vb = a["metrics"].get(key), b["metrics"].get(key)
        if va is None or vb is None:
            continue
        diff = difference(cmp, key)
        real = bool(diff and diff.get("excludes_zero"))
        any_real |= real
        ci = (f"{diff['low']:+.4f} – {diff['high']:+.4f}" + (" <b>*</b>" if real else "")
              if diff and diff.get("low") is not None and diff.get("high") is not None else "")
        rows.append(f"<tr><td>{LABELS[key]}</td><td class=\"num\">{_num(va)}</td>"
                    f"<td class=\"num\">{_interval((a.get('intervals') or {}).get(key))}</td><td class=\"num\">{_num(vb)}</td>"
                    f"<td class=\"num\">{_interval((b.get('intervals') or {}).get(key))}</td>"
                    f"<td class=\"num\">{vb - va:+.4f}</td><td class=\"num\">{ci}</td></tr>")
    confidence = cmp.get("confidence", CONFIDENCE)
    parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>A</th><th>A interval</th><th>B</th><th>B interval</th>"
                 f"<th>B − A</th><th>{confidence:.0%} interval of B − A (paired bootstrap)</th></tr>{''.join(rows)}</table>"
                 + ("<p class=\"muted\">* the interval excludes 0: a real difference.</p>" if any_real
                    else "<p class=\"muted\">Every interval includes 0 (size-band mAPs have no interval).</p>")
                 + f"<div class=\"verdict\"><b>The mAP rule.</b> {_e(a.get('map_rule') or MAP_RULE)}</div>")
    models = [("A", a), ("B", b)]
    parts.append("<h2>Models</h2><table><tr><th></th><th>model</th><th>strategy</th><th>training data</th><th>bundle</th></tr>"
                 + "".join(f"<tr><th>{n}</th><td>{_e(m['run'].get('model'))}</td><td>{_e(m['run'].get('strategy'))}</td>"
                           f"<td>{_e((m['run'].get('train_data') or {}).get('path'))}</td><td>{_e(m['run']['bundle'])}</td></tr>"
                           for n, m in models) + "</table>")
    pa, pb = a["per_class"], b["per_class"]
    cells = []
    for i, name in enumerate(pa["class"]):
        ia, ib = pa["ap"][i], pb["ap"][i]
        delta = f"{ib - ia:+.4f}" if ia is not None and ib is not None else "—"
        ia50, ib50 = pa["ap50"][i], pb["ap50"][i]
        delta50 = f"{ib50 - ia50:+.4f}" if ia50 is not None and ib50 is not None else "—"
        cells.append(f"<tr><td>{_e(name)}</td>{_cell(ia, pa['absent'][i])}{_cell(ib, pb['absent'][i])}"
                     f"<td class=\"num\">{delta}</td>{_cell(ia50, pa['absent'][i])}{_cell(ib50, pb['absent'][i])}"
                     f"<td class=\"num\">{delta50}</td></tr>")
    parts.append("<h2>AP per class</h2><table><tr><th>class</th><th>AP A</th><th>AP B</th><th>B − A</th>"
                 "<th>AP50 A</th><th>AP50 B</th><th>B − A</th></tr>" + "".join(cells) + "</table>")
    shown = [i for i in range(len(pa["class"])) if pa["ap"][i] is not None and pb["ap"][i] is not None]
    if shown:
        parts.append(_figure(plots.per_class_bars([pa["class"][i] for i in shown], [pa["ap"][i] for i in shown],
                                                  "AP per class (absent classes left out)",
                                                  other=[pb["ap"][i] for i in shown], labels=("A", "B")),
                             "AP per class, A and B"))
    for name, m in models:
        if m.get("confusion_matrix"):
            parts.append(f"<h2>Confusion matrix of {name}</h2>"
                         + _figure(plots.confusion_matrix(m["confusion_matrix"]["counts"], m["confusion_matrix"]["labels"]),
                                   f"confusion matrix of matched boxes {name}"))
    parts.append("<h2>Where they differ most</h2>" + _differences(r, draw))
    return "\n".join(parts)


def _differences(r: dict[str, Any], draw: bool) -> str:
    diffs = r.get("differences_per_image") or []
    if not diffs:
        return "<p class=\"muted\">Nowhere: every image has the same AP50.</p>"
    classes = r["a"]["data"]["classes"]
    threshold_a = r["a"]["data"].get("score_threshold", 0.5)
    threshold_b = r["b"]["data"].get("score_threshold", 0.5)
    table = "".join(f"<tr><td>{_e(_short(d['image'], 90, keep_end=True))}</td><td class=\"num\">{d['a']:.4f}</td>"
                    f"<td class=\"num\">{d['b']:.4f}</td><td class=\"num\">{d['b'] - d['a']:+.4f}</td></tr>" for d in diffs)
    html = ("<table><tr><th>image</th><th>AP50 A</th><th>AP50 B</th><th>B − A</th></tr>" + table + "</table>")
    if not draw:
        return html
    figures = []
    for d in diffs:
        views = [("truth", d["truth"]), (f"A: AP50 {d['a']:.3f} (score >= {threshold_a:.2f})", d["prediction_a"]),
                 (f"B: AP50 {d['b']:.3f} (score >= {threshold_b:.2f})", d["prediction_b"])]
        drawn = _draw(d, views, classes)
        media = (f"<img src=\"data:image/jpeg;base64,{drawn}\" alt=\"{_e(d['image'])}\">" if drawn
                 else "<div class=\"muted\">(image not readable)</div>")
        figures.append(f"<div class=\"figure\">{media}<div>{_e(_short(d['image'], 90, keep_end=True))}</div></div>")
    return html + render.legend_html(classes) + "<div>" + "".join(figures) + "</div>"
