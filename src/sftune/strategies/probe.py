"""The logistic-regression probe on cached pooled features: one implementation for every user.

``linear_probe`` (its default solver) fits the classification head with it and trains nothing
else; ``lp_ft`` fits the head with it before fine-tuning (Kumar et al. 2022, "Fine-Tuning can
Distort Pretrained Features and Underperform Out-of-Distribution", ICLR); ``auto`` scores the
frozen features with it. The features come from whatever the classification task cached (image,
text or audio backbones alike): this module sees only ``(N, F)`` tensors and labels.

The model is a linear layer ``F -> C`` fitted to convergence with L-BFGS (strong-Wolfe line
search), starting from zeros, minimising

* single-label (labels ``(N,)`` class indices): multinomial logistic regression,
  ``sum_i w[y_i] * CE(logits_i, y_i) / N + l2 * ||W||^2``;
* multi-label (labels ``(N, C)`` multi-hot): one sigmoid per class,
  ``sum_i sum_c BCE(logits_ic, y_ic; pos_weight_c) / N + l2 * ||W||^2``.

The bias is not penalised. This is scikit-learn's ``LogisticRegression(C=1 / (2 * l2 * N))``
objective (multinomial for single-label, one-vs-rest for multi-label) divided by ``C * N``, so
the minimiser is the same (tests/test_probe.py checks it against scikit-learn). Class weights
``"balanced"`` are scikit-learn's: ``N / (C * count_c)`` per class (single-label), and for
multi-label ``pos_weight_c = negatives_c / positives_c``.

The L2 strength is chosen from a grid on the validation split (highest accuracy, ties broken by
the lower validation log loss), or by stratified k-fold cross-validation on the training set when
there is no validation split. The grid runs from strong to weak regularisation, each fit starting
from the previous solution (a warm-started regularisation path, as glmnet and scikit-learn's
``LogisticRegressionCV`` do). Fitting draws no random numbers, so it never shifts the global RNG.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Literal

import torch
from torch import nn

# L2 strengths tried (coefficient of ||W||^2 on the mean loss); half-decade steps. With N training
# examples l2 corresponds to scikit-learn's C = 1 / (2 * l2 * N): for N = 245, C ~ 0.02 .. 2000.
L2_GRID: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
ClassWeight = Literal["balanced", "none"]


@dataclass
class ProbeFit:
    """What a probe fit found: the chosen L2 and how it was chosen, for logs, metrics.json and lineage."""

    l2: float  # the L2 strength of the fitted head
    selected_by: str  # "validation split", "3-fold cross-validation" or "given"
    val_acc: float | None  # accuracy of the fitted head on the validation split (None: there is none)
    val_loss: float | None  # unweighted mean log loss on the validation split
    train_loss_before: float  # the objective at the head's starting weights (zeros)
    train_loss_after: float  # the objective at the fitted weights
    class_weight: str
    iterations: int  # L-BFGS iterations of every fit together
    seconds: float
    grid: list[dict[str, float]] = field(default_factory=list)  # per L2: its selection score(s)
    anchored: bool = False  # True: penalised towards a parent's head (L2-SP), not towards zero

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        for key in ("val_acc", "val_loss", "train_loss_before", "train_loss_after", "seconds"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 4)
        return out

    def describe(self) -> str:
        """One line for the run log: loss, val accuracy, then how the L2 was chosen."""
        scored = "" if self.val_acc is None else f", val acc {self.val_acc:.3f}"
        how = f"L2 {self.l2:g} (given)" if self.selected_by == "given" else f"L2 {self.l2:g} chosen by {self.selected_by}"
        if self.anchored:
            how += ", towards the parent's head (L2-SP)"
        return (f"loss {self.train_loss_before:.3f} -> {self.train_loss_after:.3f}{scored}; {how}, class weights "
                f"{self.class_weight}, {self.iterations} L-BFGS iterations in {self.seconds:.1f} s")


def class_weights(labels: torch.Tensor, num_classes: int, mode: ClassWeight) -> torch.Tensor | None:
    """Per-class weights ``(C,)`` float64, or None for ``mode="none"``.

    Single-label ``labels (N,)``: ``N / (C * count_c)`` (absent classes get 0: no example to weigh).
    Multi-label ``labels (N, C)``: the positive-class weight ``negatives_c / positives_c`` (1 where a
    class has no positive or no negative example). Raises ValueError for an unknown ``mode``.
    """
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be 'balanced' or 'none', not {mode!r}")
    if labels.ndim == 2:
        pos = labels.double().sum(0)
        neg = labels.shape[0] - pos
        return torch.where((pos > 0) & (neg > 0), neg / pos.clamp_min(1), torch.ones_like(pos))
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    return torch.where(counts > 0, labels.numel() / (num_classes * counts.clamp_min(1)), torch.zeros_like(counts))


def _loss_and_grads(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float,
                    weights: torch.Tensor | None, grads: bool = True,
                    anchor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The objective and its gradients for ``weight (C, F)``, ``bias (C,)``, written out by hand: one
    ``(N, F) x (F, C)`` and one ``(C, N) x (N, F)`` product per evaluation, 2-3x faster than autograd
    (whose ``X^T G`` runs as a transposed product) on a 2-core CPU."""
    n = x.shape[0]
    logits = torch.addmm(bias, x, weight.t())  # (N, C)
    if y.ndim == 2:  # per-class BCE: l = pw * y * softplus(-z) + (1 - y) * softplus(z)
        pw = 1.0 if weights is None else weights
        fit = (pw * y * nn.functional.softplus(-logits) + (1 - y) * nn.functional.softplus(logits)).sum() / n
        if grads:
            sig = torch.sigmoid(logits)
            g = (pw * y * (sig - 1) + (1 - y) * sig) / n
    else:
        log_p = torch.log_softmax(logits, dim=-1)
        picked = -log_p.gather(1, y[:, None]).squeeze(1)  # (N,)
        per = None if weights is None else weights[y]
        fit = (picked if per is None else per * picked).sum() / n
        if grads:
            g = log_p.exp()
            g[torch.arange(n), y] -= 1
            g = (g if per is None else g * per[:, None]) / n
    away = weight if anchor is None else weight - anchor  # L2-SP: the penalty pulls towards the anchor
    loss = fit + l2 * away.pow(2).sum()
    if not grads:
        return loss, None, None
    return loss, torch.mm(g.t(), x) + 2 * l2 * away, g.sum(0)


def fit_logistic(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float,
                 weights: torch.Tensor | None = None, max_iter: int = 500, tolerance: float = 1e-5,
                 anchor: torch.Tensor | None = None) -> tuple[float, float, int]:
    """Fit ``weight (C, F)`` and ``bias (C,)`` (leaf tensors of ``x``'s dtype, updated in place, their
    current values the starting point) to ``x (N, F)`` and ``y``: class indices ``(N,)`` int64 or
    multi-hot ``(N, C)`` of ``x``'s dtype, minimising the module docstring's objective with L-BFGS.

    Returns (objective before, objective after, L-BFGS iterations). Stops at ``max_iter``
    iterations or when the largest gradient entry falls below ``tolerance`` (scikit-learn's lbfgs
    stops on the same criterion, its ``tol``, default 1e-4). ``anchor`` ``(C, F)``: penalise
    ``||weight - anchor||^2`` instead of ``||weight||^2`` (L2-SP).
    """
    params = [weight, bias]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, max_eval=max_iter * 2, history_size=20,
                                  tolerance_grad=tolerance, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        loss, gw, gb = _loss_and_grads(weight, bias, x, y, l2, weights, anchor=anchor)
        weight.grad, bias.grad = gw, gb
        return loss

    with torch.no_grad():
        before = float(_loss_and_grads(weight, bias, x, y, l2, weights, grads=False, anchor=anchor)[0])
        optimizer.step(closure)
        after = float(_loss_and_grads(weight, bias, x, y, l2, weights, grads=False, anchor=anchor)[0])
    state = optimizer.state[optimizer._params[0]]
    weight.grad = bias.grad = None
    return before, after, int(state.get("n_iter", 0))


def _scores(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, unweighted mean log loss); multi-label: per-label accuracy at probability 0.5."""
    with torch.no_grad():
        logits = torch.addmm(bias, x, weight.t())
        if y.ndim == 2:
            acc = ((logits > 0) == (y > 0.5)).double().mean()
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        else:
            acc = (logits.argmax(-1) == y).double().mean()
            loss = nn.functional.cross_entropy(logits, y)
    return float(acc), float(loss)


def _folds(y: torch.Tensor, k: int) -> list[torch.Tensor]:
    """k stratified folds of indices (by class; multi-label by the first positive class), deterministic."""
    key = y.argmax(-1) if y.ndim == 2 else y
    assignment = torch.empty(len(key), dtype=torch.long)
    for c in key.unique():
        members = (key == c).nonzero().flatten()
        assignment[members] = torch.arange(len(members)) % k
    return [(assignment == f).nonzero().flatten() for f in range(k)]


# Below this many multiply-adds per evaluation (N * F * C) the fit runs on one thread: a second
# OpenMP thread gains at most 2x on an idle 2-core machine and loses badly on a busy one, where
# its threads wait on each other (measured at load average 11-15 on 2 cores: 245 x 1280 x 2, 37 ms
# per evaluation on two threads vs 0.8 ms on one; 5000 x 1280 x 10, 560 ms vs 126 ms). Larger
# problems keep torch's thread count.
ONE_THREAD_BELOW = 200_000_000


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` (None: unchanged) for the block, then restored."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def fit_probe(fc: nn.Linear, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor | None = None,
              val_y: torch.Tensor | None = None, l2: float | None = None, grid: tuple[float, ...] = L2_GRID,
              class_weight: ClassWeight = "balanced", max_iter: int = 500, folds: int = 3,
              dtype: torch.dtype = torch.float32, patience: int = 3, anchored: bool = False) -> ProbeFit:
    """Fit ``fc`` (a ``nn.Linear(F, C)``, overwritten) to features ``train_x (N, F)`` and labels
    ``train_y`` (``(N,)`` class indices or ``(N, C)`` multi-hot), choosing the L2 strength.

    ``anchored`` (a re-fine-tune whose head starts as its parent's, e.g. ``sftune update``): the
    fit starts from ``fc``'s current weights and the penalty pulls towards them, L2-SP (Li et al.
    2018, "Explicit Inductive Bias for Transfer Learning with Convolutional Networks", ICML): the
    strong end of the grid keeps the parent's head, the weak end refits freely, and the
    validation split picks how far to move. Without it the fit starts from zeros.

    ``l2`` given: that strength, no search. Else each value of ``grid`` is fitted (warm-started,
    strong to weak) and scored on ``val_x``/``val_y`` when the validation split has examples, or by
    ``folds``-fold stratified cross-validation on the training set when it has none (then the head
    is refitted on the whole training set at the chosen strength). Best = highest accuracy, ties
    broken by the lower log loss. The path stops early once ``patience`` weaker strengths in a row
    scored below the best (the weak end of the path is where L-BFGS needs the most iterations).
    ``dtype``: what the fit computes in (float32 by default; float64 for a tighter solution).

    Raises ValueError when the training set is empty or its width differs from ``fc``'s.
    """
    small = train_x.shape[0] * train_x.shape[1] * fc.out_features < ONE_THREAD_BELOW
    with _threads(1 if small else None):
        return _fit_probe(fc, train_x, train_y, val_x, val_y, l2, grid, class_weight, max_iter, folds, dtype, patience,
                          anchored)


def _fit_probe(fc: nn.Linear, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor | None,
               val_y: torch.Tensor | None, l2: float | None, grid: tuple[float, ...], class_weight: ClassWeight,
               max_iter: int, folds: int, dtype: torch.dtype, patience: int, anchored: bool = False) -> ProbeFit:
    started = time.perf_counter()
    if train_x.ndim != 2 or train_x.shape[0] == 0:
        raise ValueError(f"probe: training features must be a non-empty (N, F) matrix, got shape {tuple(train_x.shape)}")
    if train_x.shape[1] != fc.in_features:
        raise ValueError(f"probe: features have width {train_x.shape[1]}, the head takes {fc.in_features}")
    num_classes = fc.out_features
    x = train_x.to(dtype).contiguous()
    y = train_y.to(dtype) if train_y.ndim == 2 else train_y.long()
    weights = _as(class_weights(train_y, num_classes, class_weight), dtype)
    has_val = val_x is not None and val_y is not None and val_x.shape[0] > 0
    vx = val_x.to(dtype) if has_val else None
    vy = (val_y.to(dtype) if val_y.ndim == 2 else val_y.long()) if has_val else None
    if anchored:  # the parent's head: starting point and centre of the penalty
        zeros = (fc.weight.detach().to(dtype).clone(), fc.bias.detach().to(dtype).clone())
        anchor = zeros[0]
    else:
        zeros = (torch.zeros(num_classes, x.shape[1], dtype=dtype), torch.zeros(num_classes, dtype=dtype))
        anchor = None
    iterations = 0
    rows: list[dict[str, float]] = []

    if l2 is not None:
        w, b = zeros[0].clone(), zeros[1].clone()
        before, after, n = fit_logistic(w, b, x, y, l2, weights, max_iter, anchor=anchor)
        iterations, chosen, how = n, l2, "given"
    elif has_val:
        w, b = zeros[0].clone(), zeros[1].clone()
        best: tuple[float, float] | None = None
        worse = 0
        for value in sorted(grid, reverse=True):
            if worse >= patience:
                break
            before_i, after_i, n = fit_logistic(w, b, x, y, value, weights, max_iter, anchor=anchor)
            iterations += n
            acc, loss = _scores(w, b, vx, vy)
            rows.append({"l2": value, "val_acc": round(acc, 4), "val_loss": round(loss, 4)})
            if best is None or (acc, -loss) > best:
                best, chosen, chosen_w, chosen_b, after = (acc, -loss), value, w.clone(), b.clone(), after_i
                worse = 0
            else:
                worse += 1
        how = "validation split"
        w, b = chosen_w, chosen_b
        before = float(_loss_and_grads(*zeros, x, y, chosen, weights, grads=False, anchor=anchor)[0])
    else:
        k = max(2, min(folds, _smallest_class(train_y)))
        splits = []
        for held in _folds(train_y, k):
            keep = torch.ones(len(x), dtype=torch.bool)
            keep[held] = False
            splits.append((x[keep].contiguous(), y[keep], x[held], y[held], zeros[0].clone(), zeros[1].clone(),
                           _as(class_weights(train_y[keep], num_classes, class_weight), dtype)))
        scores: dict[float, tuple[float, float]] = {}
        best_cv: tuple[float, float] | None = None
        worse = 0
        for value in sorted(grid, reverse=True):
            if worse >= patience:
                break
            acc = loss = 0.0
            for fit_x, fit_y, held_x, held_y, fw, fb, fold_weights in splits:  # warm start: the fold's previous strength
                iterations += fit_logistic(fw, fb, fit_x, fit_y, value, fold_weights, max_iter, anchor=anchor)[2]
                fold_acc, fold_loss = _scores(fw, fb, held_x, held_y)
                acc, loss = acc + fold_acc / k, loss + fold_loss / k
            scores[value] = (acc, loss)
            rows.append({"l2": value, "cv_acc": round(acc, 4), "cv_loss": round(loss, 4)})
            if best_cv is None or (acc, -loss) > best_cv:
                best_cv, worse = (acc, -loss), 0
            else:
                worse += 1
        chosen = max(scores, key=lambda v: (scores[v][0], -scores[v][1]))
        w, b = zeros[0].clone(), zeros[1].clone()
        before, after, n = fit_logistic(w, b, x, y, chosen, weights, max_iter, anchor=anchor)
        iterations += n
        how = f"{k}-fold cross-validation (no validation split)"

    with torch.no_grad():
        fc.weight.copy_(w.to(fc.weight.dtype))
        fc.bias.copy_(b.to(fc.bias.dtype))
    val_acc, val_loss = _scores(w, b, vx, vy) if has_val else (None, None)
    return ProbeFit(l2=chosen, selected_by=how, val_acc=val_acc, val_loss=val_loss, train_loss_before=before,
                    train_loss_after=after, class_weight=class_weight, iterations=iterations,
                    seconds=time.perf_counter() - started, grid=rows, anchored=anchored)


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def _smallest_class(y: torch.Tensor) -> int:
    counts = y.sum(0) if y.ndim == 2 else torch.bincount(y.long())
    counts = counts[counts > 0]
    return int(counts.min()) if len(counts) else 0


def sklearn_c(l2: float, n: int) -> float:
    """scikit-learn's ``C`` for this module's ``l2`` on ``n`` training examples: ``1 / (2 * l2 * n)``."""
    return 1.0 / (2.0 * l2 * n) if l2 > 0 else math.inf
