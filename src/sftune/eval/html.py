"""report.html: one self-contained page (CSS inline, figures and thumbnails as data: URIs, no
script, no network) that a person can read in any browser, offline, without the terminal.

Rendered from a report dictionary (eval/report.py) alone; only the gallery's thumbnails read
the example image files, and a file that has gone missing shows as its path.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import yaml

from . import plots

THUMBNAIL_PX = 160

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:34px 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.sub{color:#5a6475;margin-bottom:18px}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde1e7;padding:4px 10px;text-align:left;vertical-align:top}th{background:#eef1f5}
td.num{text-align:right}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px;width:176px;font-size:12px}
.card.text{width:360px}
.card img{width:160px;height:160px;object-fit:contain;background:#eee;display:block;margin-bottom:6px}
.bad{color:#b42318}.good{color:#067647}.muted{color:#5a6475}
.figure{background:#fff;border:1px solid #dde1e7;padding:8px;display:inline-block;margin:4px 8px 8px 0}
.figure img{max-width:100%;display:block}
.kv th{width:230px}
.verdict{background:#fff;border-left:4px solid #4c72b0;padding:10px 14px;margin:10px 0}
pre{background:#fff;border:1px solid #dde1e7;padding:10px;overflow:auto;font-size:12px}
.low{background:#fde8e7}
"""

_LABELS = {
    "acc": "accuracy", "balanced_acc": "balanced accuracy", "top3_acc": "top-3 accuracy", "top5_acc": "top-5 accuracy",
    "exact_match": "exact match (all labels right)", "precision": "precision (macro)", "recall": "recall (macro)",
    "f1": "F1 (macro)", "f1_micro": "F1 (micro)", "precision_weighted": "precision (weighted)",
    "recall_weighted": "recall (weighted)", "f1_weighted": "F1 (weighted)", "roc_auc": "ROC-AUC (one-vs-rest, macro)",
    "pr_auc": "PR-AUC (one-vs-rest, macro)", "ece": "expected calibration error (15 bins)", "log_loss": "log loss",
    "n": "examples", "skipped": "skipped files",
}


def render(report: dict[str, Any], thumbnails: bool = True) -> str:
    """The page of an evaluation report, or of a comparison report."""
    if report.get("schema", "").startswith("sftune.comparison"):
        return page(report["title"], _comparison_body(report, thumbnails))
    return page(report["title"], _report_body(report, thumbnails))


def page(title: str, body: str) -> str:
    """A complete self-contained HTML page in the report style around ``body``."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n")


def _report_body(r: dict[str, Any], thumbnails: bool) -> str:
    parts = [f"<h1>{_e(r['title'])}</h1>",
             f"<div class=\"sub\">sftune evaluation report · {_e(r['created'])} · {r['data']['n']} examples, "
             f"{len(r['data']['classes'])} classes{' (multi-label)' if r['data']['multi_label'] else ''}</div>"]
    parts.append("<h2>Summary</h2>" + _summary(r))
    notes = r["data"].get("notes") or []  # classes without examples, truncated texts
    if notes:
        parts.append("".join(f"<p class=\"bad\">warning: {_e(n)}</p>" for n in notes))
    parts.append("<h2>Metrics</h2>" + _metrics_table(r))
    if r.get("confusion_matrix"):
        parts.append("<h2>Confusion matrix</h2>" + _figure(plots.confusion_matrix(r["confusion_matrix"], r["data"]["classes"]),
                                                           "confusion matrix"))
    if r.get("per_class"):
        parts.append("<h2>Per class</h2>" + _per_class_table(r["per_class"]))
    curves = plots.training_curves(r["run"].get("history") or [])
    if curves:
        parts.append("<h2>Training curves</h2>" + _figure(curves, "training curves: loss, metrics and learning rate per epoch"))
    if r.get("calibration"):
        ece = r["metrics"].get("ece")
        parts.append("<h2>Calibration</h2><p class=\"muted\">Does a confidence of 0.8 mean right 8 times in 10? "
                     "Bars under the diagonal: over-confident.</p>"
                     + _figure(plots.reliability_diagram(r["calibration"], ece), "reliability diagram"))
    parts.append(f"<h2>Most confident mistakes</h2>{_gallery(r['mistakes'], r['data']['kind'], thumbnails)}")
    if r["data"]["skipped"]:
        rows = "".join(f"<tr><td>{_e(s['path'])}</td><td>{_e(s['reason'])}</td></tr>" for s in r["data"]["skipped"][:200])
        parts.append(f"<h2>Skipped files ({len(r['data']['skipped'])})</h2><table><tr><th>file</th><th>why</th></tr>{rows}</table>")
    parts.append("<h2>Configuration</h2><details><summary>config.yaml of the run</summary><pre>"
                 + _e(yaml.safe_dump(r["run"].get("config") or {}, sort_keys=False)) + "</pre></details>")
    return "\n".join(parts)


def _summary(r: dict[str, Any]) -> str:
    run, data = r["run"], r["data"]
    choice = run.get("strategy_choice") or {}
    strategy = _e(run.get("strategy") or "?")
    if choice.get("why"):
        strategy += f" <span class=\"muted\">(auto: {_e(choice['why'])})</span>"
    train = run.get("train_data") or {}
    sizes = ", ".join(f"{k} {v.get('n', v) if isinstance(v, dict) else v}" for k in ("train", "val")
                      if (v := train.get(k)) is not None)
    params = ""
    if run.get("trainable_parameters") is not None:
        params = f"{run['trainable_parameters']:,} of {run.get('total_parameters') or 0:,}"
    seconds = run.get("seconds")
    trained_on = run.get("trained_on") or {}
    evaluated = r.get("evaluated_on") or {}
    rows = [
        ("bundle", _e(run.get("bundle"))),
        ("evaluated on", f"{_e(data['path'])} ({data['n']} examples, {len(data['skipped'])} skipped)"),
        ("task", _e(run.get("task"))),
        ("model", f"{_e(run.get('model'))} <span class=\"muted\">({_e(run.get('arch'))})</span>"),
        ("strategy", strategy),
        ("training data", f"{_e(train.get('path'))}" + (f" <span class=\"muted\">({_e(sizes)})</span>" if sizes else "")),
        ("trainable parameters", params or "—"),
        # 1-based, as the training-curve axis (metrics.json keeps Lightning's 0-based best_epoch)
        ("epochs", f"best {run['best_epoch'] + 1} of {run.get('epochs_run')} run" if run.get("best_epoch") is not None else "—"),
        ("training time", f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "—"),
        ("trained", f"{_e(run.get('created'))} on {_e(trained_on.get('platform'))}"
                    f"{' with CUDA' if trained_on.get('cuda') else ''}"),
        ("evaluation hardware", f"{_e(evaluated.get('cpu'))}, {evaluated.get('cores')} cores"
                                f"{', GPU ' + _e(evaluated['gpu']) if evaluated.get('gpu') else ', no GPU'}; "
                                f"torch {_e(evaluated.get('torch'))}"),
        ("versions", _e(", ".join(f"{k} {v}" for k, v in (run.get("versions") or {}).items()))),
    ]
    return "<table class=\"kv\">" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _metrics_table(r: dict[str, Any]) -> str:
    intervals = r.get("intervals") or {}
    head = "<tr><th>metric</th><th>value</th><th>95% interval (bootstrap)</th></tr>"
    rows = []
    for key, label in _LABELS.items():
        if key not in r["metrics"] or r["metrics"][key] is None:
            continue
        value = r["metrics"][key]
        ci = intervals.get(key)
        shown_ci = f"{ci['low']:.4f} – {ci['high']:.4f}" if ci and ci.get("low") is not None else ""
        rows.append(f"<tr><td>{label}</td><td class=\"num\">{_num(value)}</td><td class=\"num\">{shown_ci}</td></tr>")
    note = (f"<p class=\"muted\">Intervals: {intervals['resamples']} bootstrap resamples of the examples.</p>"
            if intervals else "")
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _per_class_table(pc: dict[str, list]) -> str:
    keys = [k for k in ("support", "precision", "recall", "f1", "roc_auc", "pr_auc") if k in pc]
    head = "<tr><th>class</th>" + "".join(f"<th>{k.replace('_', '-')}</th>" for k in keys) + "</tr>"
    rows = []
    for i, name in enumerate(pc["class"]):
        cells = []
        for k in keys:
            v = pc[k][i]
            low = k == "f1" and isinstance(v, float) and v < 0.5  # None (no example): "—", never shaded
            cells.append(f"<td class=\"num{' low' if low else ''}\">{_num(v)}</td>")
        rows.append(f"<tr><td>{_e(name)}</td>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _gallery(rows: list[dict[str, Any]], kind: str, thumbnails: bool, columns: tuple[str, ...] = ("true", "predicted")) -> str:
    if not rows:
        return "<p class=\"good\">None: every example is right.</p>" if columns == ("true", "predicted") else "<p>None.</p>"
    from ..modalities import modality_of

    modality = modality_of(kind)
    files = modality.items_are_files  # thumbnails of example files, or text snippets
    cards = []
    for row in rows:
        own = modality.gallery_media(row["item"], thumbnails)  # e.g. audio: spectrogram + player
        if own is not None:
            media = own
        elif files:
            image = _thumbnail(row["item"]) if thumbnails else None
            media = (f"<img src=\"data:image/jpeg;base64,{image}\" alt=\"{_e(row['item'])}\">" if image
                     else "<div class=\"muted\">(image not readable)</div>")
            media += f"<div class=\"muted\" style=\"word-break:break-all\">{_e(_short(row['item'], 60, keep_end=True))}</div>"
        else:
            media = f"<div>{_e(_short(row['item'], 300))}</div>"
        lines = [f"<div><b>{c}</b>: {_e(_label(row[c]))}</div>" for c in columns]
        if "confidence" in row:
            lines.append(f"<div class=\"muted\">confidence {row['confidence']:.3f}</div>")
        if "right" in row:
            lines.append(f"<div class=\"muted\">right: model {row['right'].upper()}</div>")
        cards.append(f"<div class=\"card{'' if files else ' text'}\">{media}{''.join(lines)}</div>")
    return f"<div class=\"cards\">{''.join(cards)}</div>"


def _comparison_body(r: dict[str, Any], thumbnails: bool) -> str:
    a, b, cmp = r["a"], r["b"], r["comparison"]
    sig = cmp["significance"]
    parts = [f"<h1>{_e(r['title'])}</h1>",
             f"<div class=\"sub\">sftune comparison · {_e(r['created'])} · {a['data']['n']} examples · "
             f"A = {_e(a['run']['bundle'])}, B = {_e(b['run']['bundle'])}</div>"]
    better = "B" if sig["b_only_right"] > sig["a_only_right"] else "A"
    verdict = (f"<b>{better} is better</b> (p = {sig['p_value']:.3g} &lt; {sig['alpha']})" if sig["significant"]
               else f"<b>No significant difference</b> (p = {sig['p_value']:.3g} ≥ {sig['alpha']})")
    parts.append(f"<div class=\"verdict\">{verdict}. McNemar's exact test on the {sig['a_only_right'] + sig['b_only_right']} "
                 f"examples where they disagree: only A right {sig['a_only_right']}, only B right {sig['b_only_right']} "
                 f"(both right {sig['both_right']}, both wrong {sig['both_wrong']}).</div>")
    rows = []
    for key, label in _LABELS.items():
        va, vb = a["metrics"].get(key), b["metrics"].get(key)
        if va is None or vb is None or key in ("n", "skipped"):
            continue
        diff = cmp["differences"].get(key)
        ci = (f"{diff['low']:+.4f} – {diff['high']:+.4f}" + (" <b>*</b>" if diff["excludes_zero"] else "")) if diff else ""
        rows.append(f"<tr><td>{label}</td><td class=\"num\">{_num(va)}</td><td class=\"num\">{_num(vb)}</td>"
                    f"<td class=\"num\">{vb - va:+.4f}</td><td class=\"num\">{ci}</td></tr>")
    parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>A</th><th>B</th><th>B − A</th>"
                 f"<th>{cmp['confidence']:.0%} interval of B − A (paired bootstrap)</th></tr>{''.join(rows)}</table>"
                 + ("<p class=\"muted\">* the interval excludes 0: a real difference.</p>"
                    if any(d["excludes_zero"] for d in cmp["differences"].values()) else
                    "<p class=\"muted\">Every interval includes 0.</p>"))
    models = [("A", a), ("B", b)]
    parts.append("<h2>Models</h2><table><tr><th></th><th>model</th><th>strategy</th><th>training data</th><th>bundle</th></tr>"
                 + "".join(f"<tr><th>{n}</th><td>{_e(m['run'].get('model'))}</td><td>{_e(m['run'].get('strategy'))}</td>"
                           f"<td>{_e((m['run'].get('train_data') or {}).get('path'))}</td><td>{_e(m['run']['bundle'])}</td></tr>"
                           for n, m in models) + "</table>")
    if a.get("per_class") and b.get("per_class"):
        parts.append("<h2>F1 per class</h2>" + _figure(
            plots.per_class_bars(a["per_class"]["class"], a["per_class"]["f1"], "F1 per class",
                                 other=b["per_class"]["f1"], labels=("A", "B")), "F1 per class, A and B"))
    for name, m in models:
        if m.get("confusion_matrix"):
            parts.append(f"<h2>Confusion matrix of {name}</h2>"
                         + _figure(plots.confusion_matrix(m["confusion_matrix"], m["data"]["classes"]), f"confusion matrix {name}"))
    parts.append("<h2>Where they disagree</h2>"
                 + _gallery(r["disagreements"], a["data"]["kind"], thumbnails, columns=("true", "a", "b")))
    return "\n".join(parts)


def _figure(png: bytes, alt: str) -> str:
    return f"<div class=\"figure\"><img src=\"data:image/png;base64,{base64.b64encode(png).decode()}\" alt=\"{_e(alt)}\"></div>"


def _thumbnail(path: str) -> str | None:
    """A base64 JPEG of at most THUMBNAIL_PX on its longer side, upright (EXIF orientation applied)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=82)
    except Exception:  # a gallery entry must never break the report: shown as "not readable"
        return None
    return base64.b64encode(buffer.getvalue()).decode()


def _label(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def _short(text: str, limit: int, keep_end: bool = False) -> str:
    """At most ``limit`` characters; paths keep their end (the file name), texts their start."""
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1):] if keep_end else text[: limit - 1] + "…"


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else _e(json.dumps(value))


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))
