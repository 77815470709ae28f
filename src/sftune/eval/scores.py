"""Every number of an evaluation report, from one model's :class:`Outputs` (torchmetrics).

Single-label: accuracy, balanced accuracy, top-k, precision/recall/F1 (macro, weighted, per
class), confusion matrix, one-vs-rest ROC-AUC and PR-AUC, expected calibration error (with the
reliability-diagram bins), log loss. Multi-label: per-label and micro/macro precision/recall/F1,
exact match, Hamming accuracy, per-label ROC-AUC / PR-AUC, ECE over all (example, label) pairs.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torchmetrics.functional.classification as F

from .outputs import Outputs

CALIBRATION_BINS = 15  # as in Guo et al. 2017 (On Calibration of Modern Neural Networks)


def scores(out: Outputs) -> dict[str, Any]:
    """All report metrics of ``out``; per-class lists follow ``out.classes``; undefined values are None."""
    if len(out) == 0:
        return {"n": 0}
    return _multi_label(out) if out.multi_label else _single_label(out)


def _single_label(out: Outputs) -> dict[str, Any]:
    c = len(out.classes)
    probs, target = out.probs, out.targets.long()
    common = {"num_classes": c}
    pcls = {k: _list(getattr(F, f"multiclass_{k}")(probs, target, average="none", zero_division=0, **common))
            for k in ("precision", "recall", "f1_score")}
    support = torch.bincount(target, minlength=c)
    result: dict[str, Any] = {
        "n": len(out),
        "acc": _f(F.multiclass_accuracy(probs, target, average="micro", **common)),
        # Mean recall over the classes present (sklearn's balanced_accuracy_score): a class that is
        # predicted but never true has no recall, where torchmetrics' macro recall counts it as 0.
        "balanced_acc": _f(torch.tensor(pcls["recall"])[support > 0].mean()),
        "precision": _f(F.multiclass_precision(probs, target, average="macro", zero_division=0, **common)),
        "recall": _f(F.multiclass_recall(probs, target, average="macro", zero_division=0, **common)),
        "f1": _f(F.multiclass_f1_score(probs, target, average="macro", zero_division=0, **common)),
        "precision_weighted": _f(F.multiclass_precision(probs, target, average="weighted", zero_division=0, **common)),
        "recall_weighted": _f(F.multiclass_recall(probs, target, average="weighted", zero_division=0, **common)),
        "f1_weighted": _f(F.multiclass_f1_score(probs, target, average="weighted", zero_division=0, **common)),
        "log_loss": _f(torch.nn.functional.nll_loss(probs.clamp_min(1e-15).log(), target)),
        "ece": _f(F.multiclass_calibration_error(probs, target, n_bins=CALIBRATION_BINS, norm="l1", **common)),
    }
    for k in (3, 5):
        if c > k:
            result[f"top{k}_acc"] = _f(F.multiclass_accuracy(probs, target, top_k=k, average="micro", **common))
    present = support > 0  # one-vs-rest AUCs are undefined for a class with no example
    roc = _per_class_auc(F.binary_auroc, probs, target, present)
    pr = _per_class_auc(F.binary_average_precision, probs, target, present)
    result.update(_per_class(out, pcls, support, roc, pr))
    result["confusion_matrix"] = F.multiclass_confusion_matrix(probs, target, **common).tolist()  # rows: true, cols: predicted
    confidence, predicted = probs.max(dim=1)
    result["calibration"] = reliability_bins(confidence, predicted == target)
    return result


def _multi_label(out: Outputs) -> dict[str, Any]:
    c = len(out.classes)
    probs, target = out.probs, out.targets.int()
    common = {"num_labels": c, "threshold": 0.5}  # logits are shifted so that 0.5 is each label's tuned threshold
    pcls = {k: _list(getattr(F, f"multilabel_{k}")(probs, target, average="none", zero_division=0, **common))
            for k in ("precision", "recall", "f1_score")}
    support = target.sum(dim=0)
    result: dict[str, Any] = {
        "n": len(out),
        "acc": _f(F.multilabel_accuracy(probs, target, average="micro", **common)),  # Hamming accuracy
        "exact_match": _f(F.multilabel_exact_match(probs, target, **common)),
        "precision": _f(F.multilabel_precision(probs, target, average="macro", zero_division=0, **common)),
        "recall": _f(F.multilabel_recall(probs, target, average="macro", zero_division=0, **common)),
        "f1": _f(F.multilabel_f1_score(probs, target, average="macro", zero_division=0, **common)),
        "f1_micro": _f(F.multilabel_f1_score(probs, target, average="micro", zero_division=0, **common)),
        "f1_weighted": _f(F.multilabel_f1_score(probs, target, average="weighted", zero_division=0, **common)),
        "log_loss": _f(torch.nn.functional.binary_cross_entropy(probs.clamp(1e-15, 1 - 1e-15), target.float())),
    }
    defined = (support > 0) & (support < len(out))  # AUC needs both positives and negatives
    roc = [(_f(F.binary_auroc(probs[:, i], target[:, i])) if defined[i] else None) for i in range(c)]
    pr = [(_f(F.binary_average_precision(probs[:, i], target[:, i])) if support[i] > 0 else None) for i in range(c)]
    result.update(_per_class(out, pcls, support, roc, pr))
    # Calibration over every (example, label) decision: is a 0.8 sigmoid right 80% of the time?
    flat_probs, flat_target = probs.flatten(), target.flatten()
    # Confidence of a decision is max(p, 1 - p), as for a single-label top class (torchmetrics'
    # binary ECE would bin P(label) itself, a different quantity from the diagram's).
    confidence = torch.where(flat_probs >= 0.5, flat_probs, 1 - flat_probs)
    result["calibration"] = reliability_bins(confidence, (flat_probs >= 0.5) == flat_target.bool())
    cal = result["calibration"]
    result["ece"] = sum(k / flat_probs.numel() * abs(a - c)
                        for k, a, c in zip(cal["count"], cal["accuracy"], cal["confidence"]) if k)
    return result


def _per_class(out: Outputs, pcls: dict[str, list[float]], support: torch.Tensor, roc: list[float | None],
               pr: list[float | None]) -> dict[str, Any]:
    """The macro AUCs (over the classes where they are defined) and the per-class table.

    A class with no example in the data (support 0) has no recall and no F1: None (shown as
    "—"), not 0, which would read as a class the model fails; its precision is None too unless
    the model predicted it (then 0: every such prediction is wrong)."""
    predicted = out.predicted
    n_predicted = (predicted.sum(dim=0) if out.multi_label
                   else torch.bincount(predicted, minlength=len(out.classes))).tolist()
    absent = [int(n) == 0 for n in support.tolist()]

    def defined(values: list[float], keep: list[bool] | None = None) -> list[float | None]:
        return [None if a and not (keep and keep[i]) else v for i, (v, a) in enumerate(zip(values, absent))]

    return {
        "roc_auc": _mean_defined(roc),
        "pr_auc": _mean_defined(pr),
        "per_class": {"class": list(out.classes), "support": [int(n) for n in support.tolist()],
                      "precision": defined(pcls["precision"], [n > 0 for n in n_predicted]),
                      "recall": defined(pcls["recall"]), "f1": defined(pcls["f1_score"]), "roc_auc": roc, "pr_auc": pr},
    }


def classes_without_examples(out: Outputs) -> list[str]:
    """The classes of ``out`` with no example in its data (their recall and F1 are undefined)."""
    support = out.targets.sum(dim=0) if out.multi_label else torch.bincount(out.targets.long(), minlength=len(out.classes))
    return [c for c, n in zip(out.classes, support.tolist()) if n == 0]


def no_example_note(classes: list[str], where: str = "the evaluation data") -> str:
    """The warning said when ``classes`` have no example in ``where``."""
    shown = ", ".join(classes[:10]) + (f" and {len(classes) - 10} more" if len(classes) > 10 else "")
    return (f"{where} has no example of {len(classes)} class(es): {shown}; their recall and F1 are undefined "
            f"(shown as —), not 0, and the macro averages leave them out unless the model predicted them")


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = CALIBRATION_BINS) -> dict[str, list]:
    """Equal-width confidence bins over [0, 1]: mean confidence, accuracy and count per bin
    (the reliability diagram; ECE = sum(count/N * |accuracy - confidence|))."""
    edges = torch.linspace(0, 1, bins + 1)
    # Bin i holds (edges[i], edges[i+1]], as torchmetrics' calibration error does.
    index = (torch.bucketize(confidence, edges[1:-1], right=False)).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins)
    conf_sum = torch.bincount(index, weights=confidence.double(), minlength=bins)
    acc_sum = torch.bincount(index, weights=correct.double(), minlength=bins)
    safe = count.clamp_min(1).double()
    return {
        "edges": [round(float(e), 4) for e in edges],
        "count": count.tolist(),
        "confidence": [(float(s / n) if k else None) for s, n, k in zip(conf_sum, safe, count.tolist())],
        "accuracy": [(float(s / n) if k else None) for s, n, k in zip(acc_sum, safe, count.tolist())],
    }


def _per_class_auc(fn: Any, probs: torch.Tensor, target: torch.Tensor, present: torch.Tensor) -> list[float | None]:
    out: list[float | None] = []
    for i in range(probs.shape[1]):
        positives = target == i
        if not present[i] or bool(positives.all()):
            out.append(None)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(_f(fn(probs[:, i], positives.long())))
    return out


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None and not math.isnan(v)]
    return sum(defined) / len(defined) if defined else None


def _f(t: torch.Tensor) -> float:
    return float(t)


def _list(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t]
