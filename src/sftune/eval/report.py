"""report.json: every number of an evaluation (or a comparison of two models), for machines.

The HTML page (eval/html.py) is rendered from this dictionary alone plus the example files
of its mistakes gallery, so both always agree. The JSON layout is fixed by
eval/report.schema.json (``"schema": "sftune.report/1"`` / ``"sftune.comparison/1"``).
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .. import bundle as B
from .bootstrap import intervals
from .compare import compare
from .outputs import Outputs
from .scores import classes_without_examples, no_example_note, scores

REPORT_SCHEMA = "sftune.report/1"
COMPARISON_SCHEMA = "sftune.comparison/1"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
# Per-example or bulky entries of scores() that get their own top-level key in the report.
_DETAIL_KEYS = ("per_class", "confusion_matrix", "calibration")


def evaluation_report(out: Outputs, bundle: str | Path, data: str, kind: str, title: str | None = None,
                      bootstrap: int = 1000, mistakes: int = 24, seed: int = 0,
                      location: str | Path | None = None) -> dict[str, Any]:
    """The report of one bundle's ``out`` on ``data``; ``kind`` is "images" or "text" (how the
    gallery shows an example). Run details (config, strategy, training history) come from the
    bundle's own files; ``location`` is where the bundle will live when that is not ``bundle``
    (a run's work folder before it is renamed into place)."""
    bundle = Path(bundle)
    values = scores(out)
    metrics = {k: v for k, v in values.items() if k not in _DETAIL_KEYS}
    metrics["skipped"] = len(out.skipped)
    absent = classes_without_examples(out) if len(out) else []
    notes = [*out.notes, *([no_example_note(absent)] if absent else [])]
    extra = {**({"notes": notes} if notes else {}), **({"truncated": out.truncated} if out.truncated is not None else {})}
    return {
        "schema": REPORT_SCHEMA,
        "title": title or f"{Path(location or bundle).name} on {Path(data).name or data}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": run_summary(bundle, location),
        "data": {"path": str(data), "kind": kind, "n": len(out), "skipped": [{"path": p, "reason": r} for p, r in out.skipped],
                 "classes": list(out.classes), "multi_label": out.multi_label, **extra},
        "metrics": metrics,
        "intervals": ({"confidence": 0.95, "resamples": bootstrap, **intervals(out, bootstrap, seed)}
                      if bootstrap > 0 else None),
        "per_class": values.get("per_class"),
        "confusion_matrix": values.get("confusion_matrix"),
        "calibration": values.get("calibration"),
        "mistakes": worst_mistakes(out, mistakes),
        "evaluated_on": hardware(),
    }


def comparison_report(a: Outputs, b: Outputs, bundle_a: str | Path, bundle_b: str | Path, data: str, kind: str,
                      bootstrap: int = 1000, mistakes: int = 24, seed: int = 0, title: str | None = None) -> dict[str, Any]:
    """Both models' reports on the same examples plus the paired comparison (B - A)."""
    reports = [evaluation_report(o, p, data, kind, bootstrap=bootstrap, mistakes=mistakes, seed=seed)
               for o, p in ((a, bundle_a), (b, bundle_b))]
    return {
        "schema": COMPARISON_SCHEMA,
        "title": title or f"{Path(bundle_a).absolute().name} vs {Path(bundle_b).absolute().name} on {Path(data).name or data}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "a": reports[0],
        "b": reports[1],
        "comparison": compare(a, b, resamples=max(bootstrap, 100), seed=seed),
        "disagreements": disagreements(a, b, mistakes),
    }


def run_summary(bundle: Path, location: str | Path | None = None) -> dict[str, Any]:
    """What was trained and how, read from the bundle (config.yaml, lineage.json, metrics.json)."""
    from ..config import load_yaml

    config = load_yaml(bundle / B.CONFIG) if (bundle / B.CONFIG).is_file() else {}
    lineage = B.read_json(bundle / B.LINEAGE) if (bundle / B.LINEAGE).is_file() else {}
    trained = B.read_json(bundle / B.METRICS) if (bundle / B.METRICS).is_file() else {}
    data = lineage.get("data", {})
    return {
        "bundle": str(Path(location or bundle).absolute()),
        "task": config.get("task"),
        "model": config.get("model", {}).get("name"),
        "arch": config.get("model", {}).get("arch"),
        "strategy": trained.get("strategy") or config.get("strategy", {}).get("name"),
        "strategy_choice": trained.get("strategy_choice"),
        "train_data": {"path": config.get("data", {}).get("path"), "train": data.get("train"), "val": data.get("val")},
        "trainable_parameters": trained.get("trainable_parameters"),
        "total_parameters": trained.get("total_parameters"),
        "best_epoch": trained.get("best_epoch"),
        "epochs_run": trained.get("epochs_run"),
        "seconds": trained.get("seconds"),
        "created": lineage.get("created"),
        "trained_on": lineage.get("host"),
        "versions": lineage.get("versions"),
        "config": config,
        "history": trained.get("history", []),
    }


def worst_mistakes(out: Outputs, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` most confident wrong predictions, most confident first (what to look at first:
    label noise, ambiguous examples, or a systematic confusion)."""
    if limit <= 0 or len(out) == 0:
        return []
    probs = out.probs
    wrong = (~out.correct).nonzero().flatten()
    if out.multi_label:
        # How far the worst label of the example is from its truth: 1 = certain and wrong.
        error = (probs - out.targets.float()).abs()
        severity = error.max(dim=1).values
    else:
        severity = probs.max(dim=1).values
    order = wrong[severity[wrong].argsort(descending=True)][:limit]
    rows = []
    for i in order.tolist():
        if out.multi_label:
            rows.append({"index": i, "item": out.items[i], "true": out.names(out.targets[i]),
                         "predicted": out.names(out.predicted[i]), "confidence": round(float(severity[i]), 6)})
        else:
            t, p = int(out.targets[i]), int(out.predicted[i])
            rows.append({"index": i, "item": out.items[i], "true": out.classes[t], "predicted": out.classes[p],
                         "confidence": round(float(probs[i, p]), 6), "true_class_probability": round(float(probs[i, t]), 6)})
    return rows


def disagreements(a: Outputs, b: Outputs, limit: int) -> list[dict[str, Any]]:
    """Examples exactly one model gets right, the confidently decided ones first."""
    only = (a.correct ^ b.correct).nonzero().flatten()
    if limit <= 0 or only.numel() == 0:
        return []
    margin = (a.probs.max(dim=1).values - b.probs.max(dim=1).values).abs()
    rows = []
    for i in only[margin[only].argsort(descending=True)][:limit].tolist():
        rows.append({"index": i, "item": a.items[i], "true": a.names(a.targets[i]), "a": a.names(a.predicted[i]),
                     "b": b.names(b.predicted[i]), "right": "a" if bool(a.correct[i]) else "b"})
    return rows


def hardware() -> dict[str, Any]:
    """Where the evaluation ran: enough to tell a laptop from a GPU server in a year's time."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__}


def write_report(folder: str | Path, report: dict[str, Any], items_are_files: bool = True) -> tuple[Path, Path]:
    """report.json and report.html into ``folder``, each written atomically."""
    from .html import render

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = finite(report)
    B.atomic_write_json(folder / REPORT_JSON, report)
    B.atomic_write_text(folder / REPORT_HTML, render(report, thumbnails=items_are_files))
    return folder / REPORT_JSON, folder / REPORT_HTML


def finite(value: Any) -> Any:
    """NaN and infinities become None: JSON has no NaN, and strict parsers reject Python's."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
