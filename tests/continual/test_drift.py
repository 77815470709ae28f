"""Drift tests as pure functions: valid false-positive rate under the null, power under a shift."""

from __future__ import annotations

import pytest
import torch

from sftune.continual.drift import accuracy_test, confidence_test, detect, mmd_test, predicted_class_test

pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: a second spinning thread only slows them


def test_mmd_false_positive_rate_and_power():
    gen = torch.Generator().manual_seed(0)
    # A bundle stores one fixed reference and every check reuses it, so the rate that matters is the
    # conditional one given that reference; it stays near alpha when the reference is much larger
    # than the new sample (its own sampling error is then small): 512 rows, as stored at train time.
    ref = torch.randn(512, 32, generator=gen)
    null_p = [mmd_test(ref, torch.randn(80, 32, generator=gen), permutations=100, seed=i).p_value for i in range(30)]
    shift_p = [mmd_test(ref, torch.randn(80, 32, generator=gen) + 0.5, permutations=100, seed=i).p_value for i in range(5)]
    assert sum(p < 0.05 for p in null_p) <= 4  # 30 draws at alpha 5%: expect 1.5, allow binomial slack (seeded)
    assert all(p <= 1 / 101 for p in shift_p)


def test_mmd_p_value_is_exact_permutation_p():
    x = torch.randn(10, 3)
    r = mmd_test(x, x + 10, permutations=99, return_null=True)
    assert r.p_value == 1 / 100  # the observed split is the most extreme one
    assert len(r.detail["null"]) == 99


def test_label_free_and_accuracy_tests():
    gen = torch.Generator().manual_seed(1)
    ref_logits = torch.randn(300, 3, generator=gen) * 3
    targets = ref_logits.argmax(1)
    same = predicted_class_test(ref_logits.softmax(1), ref_logits[torch.randperm(300, generator=gen)].softmax(1))
    assert same.p_value > 0.5
    prior_shift = ref_logits[targets == 0].softmax(1)  # new data: only class 0
    assert predicted_class_test(ref_logits.softmax(1), prior_shift).p_value < 1e-6
    unsure = (ref_logits / 10).softmax(1)
    assert confidence_test(ref_logits.softmax(1), unsure).p_value < 1e-6
    wrong = torch.roll(targets, 1)
    acc = accuracy_test(ref_logits.softmax(1), targets, ref_logits.softmax(1), wrong)
    assert acc.p_value < 1e-6 and acc.statistic > 0.5
    assert len(acc.detail["drop_per_class"]) == 3


def test_detect_bonferroni_and_unlabeled():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(100, 8, generator=gen)
    probs = torch.randn(100, 4, generator=gen).softmax(1)
    result = detect(feats, torch.randn(60, 8, generator=gen), probs, probs[:60], None,
                    torch.full((60,), -1), permutations=200)
    assert not result.labeled and {t.name for t in result.tests} == {"features", "predicted_classes", "confidence"}
    assert not result.drift
    result = detect(feats, torch.randn(60, 8, generator=gen) + 1.0, probs, probs[:60], permutations=200)
    assert result.drift and result.flagged == ["features"]
    assert result.to_dict()["tests"]["features"]["p_value"] < 0.05
