"""Drift tests: pure functions of tensors, no model and no I/O.

Each test compares a reference sample (what the model was trained on) with a new sample and
returns a p-value under "same distribution". :func:`detect` runs the ones that apply; the
verdict comes from the tests in ``decide_on`` (default: the feature test alone) with a Bonferroni
correction over them. Why not every test by default: the label-free and accuracy tests compare
with the bundle's *fixed* validation predictions (often ~100-200 rows), and reusing one small
reference for every check inflates their false-positive rate conditional on it (measured 8-12%
instead of 5% on the digits, bench/drift_bench.py), while the feature test's 512-row reference
keeps it at 0-4%. The other tests are still run and reported as signals.

* ``features``: kernel two-sample test, MMD^2 with a Gaussian (RBF) kernel on pooled backbone
  features, bandwidth by the median heuristic, p-value by permutation (Gretton et al. 2012,
  "A Kernel Two-Sample Test", JMLR 13).
* ``predicted_classes`` (label-free): chi-square test of homogeneity of predicted-class counts.
* ``confidence`` (label-free): two-sample Kolmogorov-Smirnov test on the top-class probability.
* ``accuracy`` (only with labels): one-sided Fisher exact test that the new accuracy is lower
  than the reference's, plus the drop per class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class TestResult:
    name: str
    statistic: float
    p_value: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftResult:
    drift: bool
    alpha: float
    tests: list[TestResult]
    reference_size: int
    new_size: int
    labeled: bool
    decide_on: list[str] = field(default_factory=lambda: ["features"])

    @property
    def deciding(self) -> list[TestResult]:
        return [t for t in self.tests if t.name in self.decide_on]

    @property
    def flagged(self) -> list[str]:
        """Tests whose p-value, Bonferroni-corrected over the deciding tests, is below alpha."""
        k = max(1, len(self.deciding))
        return [t.name for t in self.deciding if t.p_value * k < self.alpha]

    @property
    def signals(self) -> list[str]:
        """Non-deciding tests with p < alpha (uncorrected): worth a look, not a verdict."""
        return [t.name for t in self.tests if t.name not in self.decide_on and t.p_value < self.alpha]

    def test(self, name: str) -> TestResult | None:
        return next((t for t in self.tests if t.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"drift": self.drift, "alpha": self.alpha, "decide_on": self.decide_on, "flagged": self.flagged,
                "signals": self.signals, "correction": "bonferroni",
                "reference_size": self.reference_size, "new_size": self.new_size, "labeled": self.labeled,
                "tests": {t.name: {k: v for k, v in t.to_dict().items() if k != "name"} for t in self.tests}}


# ------------------------------------------------------------------------------------ MMD


def median_bandwidth(z: torch.Tensor, max_rows: int = 1024) -> float:
    """Median pairwise Euclidean distance of (a sample of) the pooled rows: the usual RBF scale."""
    rows = z if len(z) <= max_rows else z[torch.randperm(len(z), generator=torch.Generator().manual_seed(0))[:max_rows]]
    d = torch.cdist(rows, rows)
    upper = d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)]
    med = float(upper.median()) if upper.numel() else 1.0
    return med if med > 0 else 1.0


def mmd_test(x: torch.Tensor, y: torch.Tensor, permutations: int = 1000, seed: int = 0,
             return_null: bool = False) -> TestResult:
    """Unbiased MMD^2 between ``x`` (n, F) and ``y`` (m, F) with a permutation p-value.

    The kernel matrix of the pooled sample is computed once, (n+m)^2 floats; each permutation
    is then two matrix-vector products, done for all permutations at once in chunks.
    p = (1 + #{null >= observed}) / (1 + permutations), which is exact (valid at any size).
    """
    x, y = x.double(), y.double()
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 rows per sample (got {n} and {m})")
    z = torch.cat([x, y])
    bandwidth = median_bandwidth(z)
    k = torch.exp(-torch.cdist(z, z).square() / (2 * bandwidth**2))  # (N, N)
    k.fill_diagonal_(0.0)  # unbiased estimator: no i == j terms

    def mmd2(a: torch.Tensor) -> torch.Tensor:
        """a: (P, N) with 1 for rows assigned to the first sample, 0 for the second."""
        b = 1.0 - a
        ka = a @ k  # (P, N)
        kb = b @ k
        xx = (ka * a).sum(1) / (n * (n - 1))
        yy = (kb * b).sum(1) / (m * (m - 1))
        xy = (ka * b).sum(1) / (n * m)
        return xx + yy - 2 * xy

    observed = float(mmd2(torch.cat([torch.ones(1, n), torch.zeros(1, m)], 1).double())[0])
    gen = torch.Generator().manual_seed(seed)
    null = []
    chunk = max(1, min(permutations, 4_000_000 // (n + m)))  # ~32 MB of float64 per chunk
    for start in range(0, permutations, chunk):
        p = min(chunk, permutations - start)
        order = torch.argsort(torch.rand(p, n + m, generator=gen), dim=1)
        a = (order < n).double()  # a random n-subset of the pooled rows per permutation
        null.append(mmd2(a))
    null_t = torch.cat(null)
    p_value = (1 + int((null_t >= observed).sum())) / (1 + permutations)
    detail: dict[str, Any] = {"bandwidth": bandwidth, "permutations": permutations}
    if return_null:
        detail["null"] = null_t.tolist()
    return TestResult("features", observed, p_value, detail)


# ------------------------------------------------------------------------ label-free signals


def predicted_class_test(ref_probs: torch.Tensor, new_probs: torch.Tensor) -> TestResult:
    """Chi-square test of homogeneity on the 2 x C table of predicted-class counts.

    Classes neither sample predicts are dropped (they add no degrees of freedom)."""
    from scipy.stats import chi2_contingency

    c = ref_probs.shape[1]
    ref = torch.bincount(ref_probs.argmax(1), minlength=c).double()
    new = torch.bincount(new_probs.argmax(1), minlength=c).double()
    keep = (ref + new) > 0
    ref_f, new_f = (ref / ref.sum()).tolist(), (new / new.sum()).tolist()
    tv = 0.5 * float((ref / ref.sum() - new / new.sum()).abs().sum())  # total variation distance, 0..1
    if int(keep.sum()) < 2:
        return TestResult("predicted_classes", 0.0, 1.0, {"reference_freq": ref_f, "new_freq": new_f, "tv_distance": tv})
    table = torch.stack([ref[keep], new[keep]]).numpy()
    stat, p, dof, _ = chi2_contingency(table, correction=False)
    return TestResult("predicted_classes", float(stat), float(p),
                      {"reference_freq": ref_f, "new_freq": new_f, "tv_distance": tv, "dof": int(dof)})


def confidence_test(ref_probs: torch.Tensor, new_probs: torch.Tensor) -> TestResult:
    """Two-sample KS test on the top-class probability (how sure the model is)."""
    from scipy.stats import ks_2samp

    ref_c, new_c = ref_probs.max(1).values.double().numpy(), new_probs.max(1).values.double().numpy()
    result = ks_2samp(ref_c, new_c)
    return TestResult("confidence", float(result.statistic), float(result.pvalue),
                      {"reference_mean": float(ref_c.mean()), "new_mean": float(new_c.mean())})


# ------------------------------------------------------------------------------ with labels


def per_class_accuracy(probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> list[float | None]:
    """Accuracy per true class (None for a class without examples)."""
    correct = probs.argmax(1) == targets
    out: list[float | None] = []
    for c in range(num_classes):
        mask = targets == c
        out.append(float(correct[mask].float().mean()) if mask.any() else None)
    return out


def accuracy_test(ref_probs: torch.Tensor, ref_targets: torch.Tensor, new_probs: torch.Tensor,
                  new_targets: torch.Tensor) -> TestResult:
    """One-sided Fisher exact test: is the new accuracy lower? Statistic: the drop in points (0..1)."""
    from scipy.stats import fisher_exact

    c = ref_probs.shape[1]
    ref_ok = int((ref_probs.argmax(1) == ref_targets).sum())
    new_ok = int((new_probs.argmax(1) == new_targets).sum())
    n_ref, n_new = len(ref_targets), len(new_targets)
    # rows: reference, new; columns: right, wrong. "greater": odds of right higher in the reference.
    _, p = fisher_exact([[ref_ok, n_ref - ref_ok], [new_ok, n_new - new_ok]], alternative="greater")
    ref_acc, new_acc = ref_ok / n_ref, new_ok / n_new
    ref_pc, new_pc = per_class_accuracy(ref_probs, ref_targets, c), per_class_accuracy(new_probs, new_targets, c)
    drop = [None if a is None or b is None else a - b for a, b in zip(ref_pc, new_pc)]
    return TestResult("accuracy", ref_acc - new_acc, float(p),
                      {"reference_acc": ref_acc, "new_acc": new_acc, "reference_per_class": ref_pc,
                       "new_per_class": new_pc, "drop_per_class": drop})


# --------------------------------------------------------------------------------- combined


def detect(ref_features: torch.Tensor, new_features: torch.Tensor, ref_probs: torch.Tensor, new_probs: torch.Tensor,
           ref_targets: torch.Tensor | None = None, new_targets: torch.Tensor | None = None, alpha: float = 0.05,
           permutations: int = 1000, seed: int = 0, multi_label: bool = False, keep_null: bool = False,
           decide_on: tuple[str, ...] | str = ("features",)) -> DriftResult:
    """Every applicable test; drift when any test in ``decide_on`` (``"all"``: every test run) has
    a p-value below ``alpha`` after a Bonferroni correction over those tests.

    ``*_targets``: class indices with -1 for unlabeled rows; the accuracy test runs when every
    new row is labeled. Multi-label models get the feature test only (no single predicted class).
    """
    tests = [mmd_test(ref_features, new_features, permutations, seed, return_null=keep_null)]
    labeled = new_targets is not None and new_targets.ndim == 1 and len(new_targets) > 0 and bool((new_targets >= 0).all())
    if not multi_label:
        tests.append(predicted_class_test(ref_probs, new_probs))
        tests.append(confidence_test(ref_probs, new_probs))
        if labeled and ref_targets is not None and len(ref_targets) and bool((ref_targets >= 0).all()):
            tests.append(accuracy_test(ref_probs, ref_targets, new_probs, new_targets))  # type: ignore[arg-type]
    names = [t.name for t in tests] if decide_on == "all" else [n for n in decide_on if any(t.name == n for t in tests)]
    deciding = [t for t in tests if t.name in names]
    drift = any(t.p_value * len(deciding) < alpha for t in deciding)
    return DriftResult(drift, alpha, tests, len(ref_features), len(new_features), labeled, names)
