"""The logistic-regression probe (strategies/probe.py) shared by linear_probe, lp_ft and auto:
it solves scikit-learn's problem, chooses L2 on the val split (or by CV), weights classes, fits
multi-label heads, and linear_probe's runs use it (chosen L2 in the log, metrics.json, lineage)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sftune import bundle as B
from sftune.strategies.probe import L2_GRID, _loss_and_grads, class_weights, fit_logistic, fit_probe, sklearn_c

from tests.conftest import tiny_run

sklearn = pytest.importorskip("sklearn.linear_model")


def blobs(n: int = 90, f: int = 6, c: int = 3, seed: int = 0, shift: float = 1.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, f) features, (n,) labels: overlapping Gaussian blobs (not separable, so the optimum is finite)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, f, generator=g, dtype=torch.float64)
    x[:, :c] += shift * torch.nn.functional.one_hot(y, c).double()
    return x, y


@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_the_fit_is_scikit_learns_multinomial_logistic_regression(class_weight):
    x, y = blobs()
    x, y = x[:-10], y[:-10]  # drop some of class 0..: unequal counts, so balanced weights matter
    l2 = 0.01
    w, b = torch.zeros(3, x.shape[1], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    fit_logistic(w, b, x, y, l2, class_weights(y, 3, class_weight), max_iter=2000, tolerance=1e-10)
    ref = sklearn.LogisticRegression(C=sklearn_c(l2, len(x)), tol=1e-12, max_iter=10_000,
                                     class_weight=None if class_weight == "none" else "balanced").fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(w.numpy(), ref.coef_, atol=1e-5)
    np.testing.assert_allclose(b.numpy(), ref.intercept_, atol=1e-5)


def test_multi_label_is_one_vs_rest_logistic_regression_per_class():
    x, y = blobs(c=3)
    multi = torch.nn.functional.one_hot(y, 3).double()
    multi[::4, (y[::4] + 1) % 3] = 1.0  # every fourth example has a second label
    l2 = 0.005
    w, b = torch.zeros(3, x.shape[1], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    fit_logistic(w, b, x, multi, l2, max_iter=2000, tolerance=1e-10)
    for c in range(3):
        ref = sklearn.LogisticRegression(C=sklearn_c(l2, len(x)), tol=1e-12, max_iter=10_000).fit(x.numpy(), multi[:, c].numpy())
        np.testing.assert_allclose(w[c].numpy(), ref.coef_[0], atol=1e-5)
        np.testing.assert_allclose(b[c].item(), ref.intercept_[0], atol=1e-5)


def test_the_float32_default_lands_near_the_exact_solution():
    x, y = blobs()
    fc = torch.nn.Linear(x.shape[1], 3)
    fit_probe(fc, x.float(), y, l2=0.01, class_weight="none")
    ref = sklearn.LogisticRegression(C=sklearn_c(0.01, len(x)), tol=1e-12, max_iter=10_000).fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(fc.weight.detach().numpy(), ref.coef_, atol=2e-3)


def test_l2_is_chosen_on_the_val_split_and_the_head_is_that_fit():
    x, y = blobs(n=240, f=40, shift=0.8, seed=1)  # many noise dimensions: too weak an L2 overfits
    vx, vy = blobs(n=300, f=40, shift=0.8, seed=2)
    fc = torch.nn.Linear(40, 3)
    fit = fit_probe(fc, x.float(), y, vx.float(), vy, patience=len(L2_GRID))
    assert fit.selected_by == "validation split" and fit.l2 in L2_GRID
    assert [row["l2"] for row in fit.grid] == sorted(L2_GRID, reverse=True)  # the whole path (patience covers it)
    best = max(fit.grid, key=lambda r: (r["val_acc"], -r["val_loss"]))
    assert fit.l2 == best["l2"] and fit.val_acc == pytest.approx(best["val_acc"], abs=1e-4)
    with torch.no_grad():
        assert (fc(vx.float()).argmax(-1) == vy).double().mean().item() == pytest.approx(fit.val_acc)
    assert fit.train_loss_after < fit.train_loss_before


def test_without_a_val_split_l2_is_chosen_by_cross_validation():
    x, y = blobs(n=60)
    fit = fit_probe(torch.nn.Linear(6, 3), x.float(), y, torch.empty(0, 6), torch.empty(0, dtype=torch.long))
    assert fit.selected_by.startswith("3-fold cross-validation") and fit.val_acc is None
    assert fit.l2 in L2_GRID and all("cv_acc" in row for row in fit.grid)


def test_a_given_l2_is_used_as_is():
    x, y = blobs()
    fit = fit_probe(torch.nn.Linear(6, 3), x.float(), y, x.float(), y, l2=0.02)
    assert fit.l2 == 0.02 and fit.selected_by == "given" and fit.grid == []


def test_balanced_class_weights():
    y = torch.tensor([0] * 6 + [1] * 2)
    assert class_weights(y, 3, "balanced").tolist() == pytest.approx([8 / (3 * 6), 8 / (3 * 2), 0.0])
    multi = torch.tensor([[1, 0], [1, 0], [1, 1], [0, 0]])
    assert class_weights(multi, 2, "balanced").tolist() == pytest.approx([1 / 3, 3.0])
    assert class_weights(y, 3, "none") is None


def test_balanced_weights_raise_recall_of_a_rare_class():
    g = torch.Generator().manual_seed(3)
    y = torch.tensor([0] * 180 + [1] * 20)
    x = torch.randn(200, 4, generator=g)
    x[:, 0] += 1.0 * y  # a weak signal: unweighted, the rare class is mostly predicted as the common one
    recall = {}
    for mode in ("none", "balanced"):
        fc = torch.nn.Linear(4, 2)
        fit_probe(fc, x, y, l2=1e-3, class_weight=mode)
        with torch.no_grad():
            recall[mode] = (fc(x[y == 1]).argmax(-1) == 1).float().mean().item()
    assert recall["balanced"] > recall["none"]


def test_fitting_draws_no_random_numbers():
    x, y = blobs()
    fc = torch.nn.Linear(6, 3)  # its initialisation draws; the fit must not
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit_probe(fc, x.float(), y, x.float(), y)
    assert torch.equal(torch.rand(3), expected)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="width 5"):
        fit_probe(torch.nn.Linear(6, 2), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        fit_probe(torch.nn.Linear(6, 2), torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))


def test_linear_probe_run_fits_the_head_and_reports_the_l2(digits_dir, tmp_path, capsys):
    run = tiny_run(digits_dir, tmp_path / "lp", strategy="linear_probe")
    logs = capsys.readouterr().out.splitlines()
    metrics = json.loads((run.path / B.METRICS).read_text())
    probe = metrics["probe"]
    assert probe["l2"] in L2_GRID and probe["selected_by"] == "validation split"
    assert metrics["epochs_run"] == 0 and metrics["history"] == []  # no epochs ran
    assert probe["val_acc"] == pytest.approx(metrics["acc"], abs=1e-3)  # the bundle's head is the probe
    assert json.loads((run.path / B.LINEAGE).read_text())["strategy"]["probe"]["l2"] == probe["l2"]
    assert any("head fitted to convergence" in line and f"L2 {probe['l2']:g}" in line for line in logs), logs
    assert not (run.path / B.CHECKPOINTS / "last.ckpt").exists()  # no training loop ran


def test_linear_probe_sgd_solver_trains_epochs(digits_dir, tmp_path):
    run = tiny_run(digits_dir, tmp_path / "sgd", strategy="linear_probe", strategy__solver="sgd", train__epochs=2)
    assert run.metrics["epochs_run"] == 2 and "probe" not in run.metrics


def test_anchored_fit_starts_from_and_is_pulled_towards_the_parent_head():
    """L2-SP (sftune update's re-fit): strong L2 keeps the parent's head, weak L2 fits the data,
    and the penalty's gradient is that of ||W - W0||^2 (checked against autograd)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 8, generator=g), torch.randint(0, 3, (120,), generator=g)
    parent = torch.nn.Linear(8, 3)
    with torch.no_grad():
        parent.weight.copy_(torch.randn(3, 8, generator=g) * 2)
    anchor = parent.weight.detach().clone()

    strong = copy.deepcopy(parent)
    fit = fit_probe(strong, x, y, l2=10.0, anchored=True)
    assert fit.anchored and "L2-SP" in fit.describe()
    assert (strong.weight - anchor).abs().max() < 0.05  # stays at the parent's head
    plain = copy.deepcopy(parent)
    fit_probe(plain, x, y, l2=10.0)
    assert plain.weight.abs().max() < 0.05  # the usual penalty pulls to zero instead

    w = anchor.clone().add_(0.3).requires_grad_(True)
    b = torch.zeros(3, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(torch.addmm(b, x, w.t()), y) + 0.1 * (w - anchor).pow(2).sum()
    loss.backward()
    mine, gw, gb = _loss_and_grads(w.detach(), b.detach(), x, y, 0.1, None, anchor=anchor)
    assert float(mine) == pytest.approx(float(loss), rel=1e-5)
    assert torch.allclose(gw, w.grad, atol=1e-5) and torch.allclose(gb, b.grad, atol=1e-5)
