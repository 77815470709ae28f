"""The drift report as a self-contained HTML section (plots inlined as base64 PNG), so it can be
written alone (``drift.html``) or embedded in a larger report via :func:`drift_section`."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import torch

from .drift import DriftResult


def drift_figure(result: DriftResult, ref_features: torch.Tensor, new_features: torch.Tensor,
                 classes: list[str]) -> bytes:
    """PNG bytes: feature-space PCA, the MMD permutation null, predicted-class frequencies,
    confidence shift and (with labels) per-class accuracy."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    panels = 4 + (result.test("accuracy") is not None)
    # Three panels per row: five in one row left each too small to read on a laptop screen.
    rows = -(-panels // 3)
    fig, grid = plt.subplots(rows, 3, figsize=(14, 4.2 * rows))
    axes = list(grid.flatten())
    for unused in axes[panels:]:
        unused.set_axis_off()
    # 1. Both samples on the reference's first two principal components.
    mean = ref_features.mean(0, keepdim=True)
    _, _, v = torch.pca_lowrank(ref_features - mean, q=min(2, ref_features.shape[1]), center=False)
    for feats, label, color in ((ref_features, "reference", "tab:blue"), (new_features, "new", "tab:orange")):
        xy = ((feats - mean) @ v).numpy()
        axes[0].scatter(xy[:, 0], xy[:, 1] if xy.shape[1] > 1 else 0 * xy[:, 0], s=6, alpha=0.5, label=label, c=color)
    axes[0].set_title("features (PCA of reference)")
    axes[0].legend(fontsize=8)
    # 2. Where the observed MMD^2 falls in its permutation null distribution.
    feats = result.test("features")
    if feats is not None and "null" in feats.detail:
        axes[1].hist(feats.detail["null"], bins=40, color="tab:gray")
        axes[1].axvline(feats.statistic, color="tab:red", label=f"observed, p={feats.p_value:.3g}")
        axes[1].legend(fontsize=8)
    axes[1].set_title("MMD$^2$ vs permutation null")
    # 3. Predicted-class frequencies.
    pc = result.test("predicted_classes")
    if pc is not None:
        idx = torch.arange(len(classes)).numpy()
        axes[2].bar(idx - 0.2, pc.detail["reference_freq"], width=0.4, label="reference")
        axes[2].bar(idx + 0.2, pc.detail["new_freq"], width=0.4, label="new")
        axes[2].set_xticks(idx, [c[:10] for c in classes], rotation=45 if len(classes) > 4 else 0, fontsize=8)
        axes[2].legend(fontsize=8)
    axes[2].set_title("predicted-class frequency")
    # 4. Confidence (top-class probability) means, as bars with the KS p-value.
    conf = result.test("confidence")
    if conf is not None:
        axes[3].bar(["reference", "new"], [conf.detail["reference_mean"], conf.detail["new_mean"]],
                    color=["tab:blue", "tab:orange"])
        axes[3].set_ylim(0, 1)
        axes[3].set_title(f"mean confidence (KS p={conf.p_value:.3g})")
    else:
        axes[3].set_axis_off()
    acc = result.test("accuracy")
    if acc is not None:
        idx = torch.arange(len(classes)).numpy()
        ref_pc = [a if a is not None else 0 for a in acc.detail["reference_per_class"]]
        new_pc = [a if a is not None else 0 for a in acc.detail["new_per_class"]]
        axes[4].bar(idx - 0.2, ref_pc, width=0.4, label="reference")
        axes[4].bar(idx + 0.2, new_pc, width=0.4, label="new")
        axes[4].set_xticks(idx, [c[:10] for c in classes], rotation=45 if len(classes) > 4 else 0, fontsize=8)
        axes[4].set_ylim(0, 1.05)
        axes[4].set_title("accuracy per class")
        axes[4].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def drift_section(result: DriftResult, png: bytes, title: str) -> str:
    """An embeddable ``<section>``: verdict, one row per test, the figure."""
    k = max(1, len(result.deciding))
    rows = "".join(
        f"<tr><td>{html.escape(t.name)}</td><td>{t.statistic:.4g}</td><td>{t.p_value:.3g}</td>"
        f"<td>{min(1.0, t.p_value * k):.3g}</td><td>{_mark(result, t.name)}</td></tr>"
        for t in result.tests)
    verdict = "DRIFT" if result.drift else "no drift"
    color = "#b00020" if result.drift else "#1b5e20"
    img = base64.b64encode(png).decode()
    return (
        f'<section class="sftune-drift"><h2>{html.escape(title)}</h2>'
        f'<p style="color:{color};font-weight:bold">{verdict} at alpha={result.alpha} '
        f"(deciding: {', '.join(result.decide_on)}, Bonferroni over {k}; reference {result.reference_size} rows, new {result.new_size} rows"
        f"{', labeled' if result.labeled else ', unlabeled'})</p>"
        f"<table><tr><th>test</th><th>statistic</th>"
        f"<th>p-value</th><th>corrected p</th><th></th></tr>{rows}</table>"
        f'<div class="figure"><img alt="drift plots" src="data:image/png;base64,{img}"></div></section>'
    )


def _mark(result: DriftResult, name: str) -> str:
    """What a test's row means: it decided drift, it is a signal that fired, or a signal that did not."""
    if name in result.flagged:
        return "drift"
    if name in result.signals:
        return "signal: shifted"
    return "" if name in result.decide_on else "signal"


def write_drift_html(path: Path, section: str, title: str) -> None:
    from .. import bundle as B

    from ..eval.html import page

    B.atomic_write_text(Path(path), page(title, section))  # the style of report.html


def summary_lines(result: DriftResult) -> list[dict[str, Any]]:
    """One dict per test for terminal tables: name, statistic, p, corrected p, flagged."""
    k = max(1, len(result.deciding))
    return [{"test": t.name, "statistic": t.statistic, "p": t.p_value, "p_corrected": min(1.0, t.p_value * k),
             "flagged": t.name in result.flagged, "mark": _mark(result, t.name)} for t in result.tests]
