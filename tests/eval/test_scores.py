"""Report metrics checked against scikit-learn on fixed predictions; intervals and the paired test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from sklearn import metrics as skm

from sftune.eval.bootstrap import intervals, resampled_metrics
from sftune.eval.compare import compare, mcnemar
from sftune.eval.outputs import Outputs
from sftune.eval.scores import scores

CLASSES = ["cat", "dog", "fox", "owl", "yak", "eel"]


def _single(seed: int = 0, n: int = 400, c: int = 6, skill: float = 1.5) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g) * 2
    logits[torch.arange(n), targets] += skill  # better than chance, far from perfect
    return Outputs(CLASSES[:c], logits, targets, [f"img{i}.png" for i in range(n)])


def _multi(seed: int = 0, n: int = 300, c: int = 5) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, c, generator=g) < 0.3).float()
    logits = torch.randn(n, c, generator=g) + (targets * 2 - 1) * 1.2
    return Outputs(CLASSES[:c], logits, targets, [f"text {i}" for i in range(n)], multi_label=True)


def test_single_label_metrics_equal_scikit_learn():
    out = _single()
    s = scores(out)
    y, p = out.targets.numpy(), out.probs.numpy()
    yhat = p.argmax(1)
    labels = list(range(len(out.classes)))
    assert s["acc"] == pytest.approx(skm.accuracy_score(y, yhat), abs=1e-6)
    assert s["balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(y, yhat), abs=1e-6)
    for avg in ("macro", "weighted"):
        suffix = "" if avg == "macro" else "_weighted"
        assert s[f"precision{suffix}"] == pytest.approx(skm.precision_score(y, yhat, average=avg, zero_division=0), abs=1e-6)
        assert s[f"recall{suffix}"] == pytest.approx(skm.recall_score(y, yhat, average=avg, zero_division=0), abs=1e-6)
        assert s[f"f1{suffix}"] == pytest.approx(skm.f1_score(y, yhat, average=avg, zero_division=0), abs=1e-6)
    pc = s["per_class"]
    np.testing.assert_allclose(pc["precision"], skm.precision_score(y, yhat, average=None, labels=labels, zero_division=0), atol=1e-6)
    np.testing.assert_allclose(pc["recall"], skm.recall_score(y, yhat, average=None, labels=labels), atol=1e-6)
    np.testing.assert_allclose(pc["f1"], skm.f1_score(y, yhat, average=None, labels=labels), atol=1e-6)
    assert pc["support"] == np.bincount(y, minlength=len(labels)).tolist()
    assert s["confusion_matrix"] == skm.confusion_matrix(y, yhat, labels=labels).tolist()
    assert s["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-5)
    np.testing.assert_allclose(pc["roc_auc"], [skm.roc_auc_score(y == k, p[:, k]) for k in labels], atol=1e-5)
    assert s["pr_auc"] == pytest.approx(np.mean([skm.average_precision_score(y == k, p[:, k]) for k in labels]), abs=1e-5)
    assert s["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=labels), abs=1e-5)
    assert s["top3_acc"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=3, labels=labels), abs=1e-6)
    assert s["top5_acc"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=5, labels=labels), abs=1e-6)


def _ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Textbook ECE (Guo et al. 2017): bins (k/15, (k+1)/15], |accuracy - confidence| weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return total


def test_calibration_error_and_reliability_bins_match_the_textbook_definition():
    out = _single(seed=3)
    s = scores(out)
    p, y = out.probs.numpy(), out.targets.numpy()
    expected = _ece(p.max(1), p.argmax(1) == y)
    assert s["ece"] == pytest.approx(expected, abs=1e-5)
    cal = s["calibration"]
    assert sum(cal["count"]) == len(out)
    from_bins = sum(k / len(out) * abs(a - c) for k, a, c in zip(cal["count"], cal["accuracy"], cal["confidence"]) if k)
    assert from_bins == pytest.approx(expected, abs=1e-5)


def test_multi_label_metrics_equal_scikit_learn():
    out = _multi()
    s = scores(out)
    y = out.targets.numpy().astype(int)
    p = out.probs.numpy()
    yhat = (p >= 0.5).astype(int)
    assert s["acc"] == pytest.approx(1 - skm.hamming_loss(y, yhat), abs=1e-6)
    assert s["exact_match"] == pytest.approx(skm.accuracy_score(y, yhat), abs=1e-6)
    assert s["f1"] == pytest.approx(skm.f1_score(y, yhat, average="macro", zero_division=0), abs=1e-6)
    assert s["f1_micro"] == pytest.approx(skm.f1_score(y, yhat, average="micro", zero_division=0), abs=1e-6)
    assert s["f1_weighted"] == pytest.approx(skm.f1_score(y, yhat, average="weighted", zero_division=0), abs=1e-6)
    assert s["precision"] == pytest.approx(skm.precision_score(y, yhat, average="macro", zero_division=0), abs=1e-6)
    assert s["recall"] == pytest.approx(skm.recall_score(y, yhat, average="macro", zero_division=0), abs=1e-6)
    np.testing.assert_allclose(s["per_class"]["roc_auc"], skm.roc_auc_score(y, p, average=None), atol=1e-5)
    np.testing.assert_allclose(s["per_class"]["pr_auc"], skm.average_precision_score(y, p, average=None), atol=1e-5)
    assert s["log_loss"] == pytest.approx(np.mean([skm.log_loss(y[:, k], p[:, k], labels=[0, 1]) for k in range(y.shape[1])]), abs=1e-5)
    assert "confusion_matrix" not in s  # multi-label: the per-label table instead
    flat_conf = np.where(p >= 0.5, p, 1 - p).ravel()
    assert s["ece"] == pytest.approx(_ece(flat_conf, (yhat == y).ravel()), abs=1e-5)


def test_a_class_never_seen_has_undefined_auc_not_a_crash():
    out = _single(c=4)
    keep = out.targets != 3  # class "owl" has no example left, though the model may still predict it
    out = Outputs(out.classes, out.logits[keep], out.targets[keep], [i for i, k in zip(out.items, keep) if k])
    s = scores(out)
    assert s["per_class"]["roc_auc"][3] is None and s["per_class"]["support"][3] == 0
    y, yhat = out.targets.numpy(), out.probs.numpy().argmax(1)
    with pytest.warns(UserWarning):  # sklearn: "y_pred contains classes not in y_true"
        assert s["balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(y, yhat), abs=1e-6)


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_data():
    small, large = _single(n=100), _single(n=3000)
    for out in (small, large):
        s, ci = scores(out), intervals(out, resamples=500)
        for name in ("acc", "balanced_acc", "f1"):
            assert ci[name]["low"] <= s[name] <= ci[name]["high"], name
    width = {n: intervals(o, resamples=500)["acc"]["high"] - intervals(o, resamples=500)["acc"]["low"]
             for n, o in (("small", small), ("large", large))}
    assert width["large"] < width["small"] / 3  # ~ 1/sqrt(30) of it
    # Same seed, same intervals: reports are reproducible.
    assert intervals(small, resamples=200, seed=5) == intervals(small, resamples=200, seed=5)


def test_resampled_metrics_with_unit_weights_are_the_metrics_themselves():
    """The weighted formulas behind the bootstrap agree with torchmetrics on the full set."""
    from sftune.eval.bootstrap import _multi_label, _single_label

    for out, fn, names in ((_single(), _single_label, ("acc", "balanced_acc", "f1")),
                           (_multi(), _multi_label, ("exact_match", "f1", "f1_micro"))):
        once = fn(out, torch.ones(1, len(out)))
        s = scores(out)
        for name in names:
            assert float(once[name][0]) == pytest.approx(s[name], abs=1e-5), name


def test_mcnemar_is_the_exact_binomial_test_on_disagreements():
    out = _single(n=200)
    # B: A's predictions with 10 wrong ones fixed and 2 right ones broken -> b_only 10, a_only 2.
    right = out.correct.nonzero().flatten()[:2]
    wrong = (~out.correct).nonzero().flatten()[:10]
    logits = out.logits.clone()
    logits[wrong, out.targets[wrong]] = 100.0
    logits[right, out.targets[right]] = -100.0
    b = Outputs(out.classes, logits, out.targets, out.items)
    test = mcnemar(out, b)
    assert (test["a_only_right"], test["b_only_right"]) == (2, 10)
    assert test["p_value"] == pytest.approx(binomtest(2, 12, 0.5).pvalue)
    assert test["p_value"] == pytest.approx(0.0386, abs=1e-4)  # the textbook value for (2, 10)
    result = compare(out, b, resamples=300)
    assert result["significance"]["significant"]
    assert result["differences"]["acc"]["low"] > 0  # B gained 8 of 200 for sure


def test_a_model_compared_with_itself_differs_by_nothing():
    out = _single()
    result = compare(out, out, resamples=200)
    assert result["significance"]["p_value"] == 1.0 and not result["significance"]["significant"]
    for diff in result["differences"].values():
        assert diff["low"] == diff["high"] == 0.0 and not diff["excludes_zero"]


def test_paired_resamples_are_shared_between_models():
    a, b = _single(seed=1), _single(seed=1)
    ra, rb = resampled_metrics([a, b], resamples=50)
    assert torch.equal(ra["acc"], rb["acc"])


def test_comparing_models_with_different_classes_is_refused():
    from sftune.errors import SftuneError

    a = _single(c=4)
    b = Outputs(["a", "b", "c", "d"], a.logits, a.targets, a.items)
    with pytest.raises(SftuneError, match="different classes"):
        compare(a, b)
