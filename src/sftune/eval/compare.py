"""Two models on the same examples: which differences are real.

McNemar's exact test looks only at the examples where the two disagree (A right and B wrong:
``a_only``; B right and A wrong: ``b_only``); under "equally good" each of those n = a_only +
b_only discordant examples is a fair coin, so the two-sided p-value is a binomial tail
(exact, no chi-square approximation, valid for small n). The paired bootstrap gives an
interval for the difference of each headline metric, resampling the same examples for both.
"""

from __future__ import annotations

from typing import Any

from scipy.stats import binomtest

from .bootstrap import CONFIDENCE, RESAMPLES, headline_names, percentile_interval, resampled_metrics
from .outputs import Outputs

SIGNIFICANCE = 0.05


def mcnemar(a: Outputs, b: Outputs) -> dict[str, Any]:
    """Exact McNemar test on per-example correctness of ``a`` and ``b`` (same examples, same order)."""
    a_right, b_right = a.correct, b.correct
    a_only = int((a_right & ~b_right).sum())
    b_only = int((~a_right & b_right).sum())
    discordant = a_only + b_only
    p_value = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5).pvalue)
    return {"test": "mcnemar_exact", "a_only_right": a_only, "b_only_right": b_only,
            "both_right": int((a_right & b_right).sum()), "both_wrong": int((~a_right & ~b_right).sum()),
            "p_value": p_value}


def compare(a: Outputs, b: Outputs, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Per-metric differences (B - A) with paired bootstrap intervals, and McNemar's test."""
    check_comparable(a, b)
    samples_a, samples_b = resampled_metrics([a, b], resamples, seed)
    differences = {}
    for name in headline_names(a.multi_label):
        interval = percentile_interval(samples_b[name] - samples_a[name], CONFIDENCE)
        differences[name] = {**interval, "excludes_zero": interval["low"] > 0 or interval["high"] < 0}
    test = mcnemar(a, b)
    return {
        "differences": differences,
        "significance": {**test, "alpha": SIGNIFICANCE, "significant": test["p_value"] < SIGNIFICANCE},
        "confidence": CONFIDENCE,
        "resamples": resamples,
    }


def check_comparable(a: Outputs, b: Outputs) -> None:
    from ..errors import SftuneError

    if a.classes != b.classes:
        raise SftuneError(f"the two models have different classes ({', '.join(a.classes[:5])}... vs "
                          f"{', '.join(b.classes[:5])}...); compare models trained on the same labels")
    if a.items != b.items:
        raise SftuneError("the two models were evaluated on different examples (e.g. one skipped unreadable files); "
                          "fix or remove those files and compare again")
