"""Report figures as PNG bytes (matplotlib, Agg: no display needed), ready to embed in HTML."""

from __future__ import annotations

import io
import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

DPI = 110


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Class names in scripts the default font lacks (CJK, ...) draw as boxes in the figure;
        # the tables of the report show them properly, so the warning is noise.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def confusion_matrix(matrix: list[list[int]], classes: list[str]) -> bytes:
    """Heatmap of row-normalised counts (each true class sums to 1), counts written in cells up to 25 classes."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    c = len(classes)
    side = min(14.0, 2.5 + 0.45 * c)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if c <= 40:
        names = [n if len(n) <= 18 else n[:17] + "…" for n in classes]
        ax.set_xticks(range(c), names, rotation=45 if c > 4 else 0, ha="right" if c > 4 else "center")
        ax.set_yticks(range(c), names)
    if c <= 25:
        for i in range(c):
            for j in range(c):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (counts; colour: share of each true class)")
    return _png(fig)


def reliability_diagram(calibration: dict[str, list], ece: float | None) -> bytes:
    """Accuracy vs confidence per bin against the diagonal, with the bins' example counts below."""
    edges = calibration["edges"]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    width = edges[1] - edges[0]
    accuracy = [a if a is not None else 0.0 for a in calibration["accuracy"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centers, accuracy, width=width * 0.95, color="#4c72b0", edgecolor="white", label="accuracy in bin")
    shown = [(c, v) for c, v in zip(centers, calibration["confidence"]) if v is not None]
    if shown:
        top.plot([c for c, _ in shown], [v for _, v in shown], "o", color="#dd8452", ms=4, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability diagram (ECE {ece:.3f})" if ece is not None else "Reliability diagram")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, calibration["count"], width=width * 0.95, color="#8c8c8c")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence of the prediction")
    bottom.set_ylabel("examples")
    return _png(fig)


def training_curves(history: list[dict[str, float]]) -> bytes | None:
    """Loss, val metrics and learning rate per epoch; None without at least one logged epoch."""
    if not history:
        return None
    epochs = [row["epoch"] + 1 for row in history]  # 1-based, as people count epochs

    def series(key: str) -> list[float]:
        return [row.get(key, float("nan")) for row in history]

    lr_keys = sorted({k for row in history for k in row if k.startswith("lr-")})
    panels = 3 if lr_keys else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6))
    loss_ax, metric_ax = axes[0], axes[1]
    for key, label in (("train/loss", "train"), ("val/loss", "val")):
        if any(key in row for row in history):
            loss_ax.plot(epochs, series(key), marker="o", ms=3, label=label)
    loss_ax.set_title("loss")
    # Every logged val metric but the loss (each task logs its own: acc/f1, miou/pixel_acc, ...).
    metric_keys = sorted({k for row in history for k in row if k.startswith("val/") and k != "val/loss"})
    for key in metric_keys:
        if any(key in row for row in history):
            metric_ax.plot(epochs, series(key), marker="o", ms=3, label=key.removeprefix("val/"))
    metric_ax.set_title("validation metrics")
    if lr_keys:
        lr_ax = axes[2]
        for key in lr_keys:  # a group not yet unfrozen has LR 0: left out of the log-scale plot
            values = [v if v > 0 else float("nan") for v in series(key)]
            lr_ax.plot(epochs, values, marker="o", ms=3, label=key.removeprefix("lr-"))
        lr_ax.set_yscale("log")
        lr_ax.set_title("learning rate (per parameter group)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def per_class_bars(classes: list[str], values: list[float | None], title: str, other: list[float | None] | None = None,
                   labels: tuple[str, str] = ("A", "B")) -> bytes:
    """Horizontal bars of a per-class metric (two models side by side when ``other`` is given)."""
    import numpy as np

    c = len(classes)
    values = [float("nan") if v is None else v for v in values]  # a class without examples: no bar
    other = None if other is None else [float("nan") if v is None else v for v in other]
    fig, ax = plt.subplots(figsize=(6.5, max(2.0, 0.28 * c + 1)))
    y = np.arange(c)
    if other is None:
        ax.barh(y, values, color="#4c72b0")
    else:
        ax.barh(y - 0.2, values, height=0.4, color="#4c72b0", label=labels[0])
        ax.barh(y + 0.2, other, height=0.4, color="#dd8452", label=labels[1])
        ax.legend(fontsize=8)
    ax.set_yticks(y, [n if len(n) <= 24 else n[:23] + "…" for n in classes])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
