"""Bootstrap confidence intervals for the headline metrics, and paired differences.

One val image of 153 is 0.65 accuracy points: a number without its interval invites reading
noise as progress. Each resample draws N examples with replacement; instead of materialising
(B, N) index arrays of predictions, each resample is a (N,) vector of draw counts ``w`` and
every metric is a function of count-weighted sums (``w @ M`` for a few (N, C) indicator
matrices), so 1000 resamples of 10k examples cost a few matrix products.
Passing several models' outputs uses the *same* resamples for all of them: the differences
are then paired, as a comparison of two models on one data set should be.
"""

from __future__ import annotations

import torch

from .outputs import Outputs

RESAMPLES = 1000
CONFIDENCE = 0.95
_CHUNK_ELEMENTS = 20_000_000  # resamples x examples per chunk: ~80 MB of float32 weights


def headline_names(multi_label: bool) -> tuple[str, ...]:
    return ("exact_match", "f1", "f1_micro") if multi_label else ("acc", "balanced_acc", "f1")


def resampled_metrics(outs: list[Outputs], resamples: int = RESAMPLES, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """For each of ``outs`` (same examples, same order), each headline metric over the same
    ``resamples`` bootstrap draws: a (resamples,) tensor per metric name."""
    n = len(outs[0])
    if any(len(o) != n for o in outs):
        raise ValueError("paired bootstrap needs outputs over the same examples")
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n))
    per_model: list[dict[str, list[torch.Tensor]]] = [{} for _ in outs]
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        draws = torch.randint(n, (b, n), generator=generator)
        weights = torch.zeros(b, n).scatter_add_(1, draws, torch.ones(b, n))  # (b, N) draw counts
        for out, acc in zip(outs, per_model):
            values = _multi_label(out, weights) if out.multi_label else _single_label(out, weights)
            for name, v in values.items():
                acc.setdefault(name, []).append(v)
        done += b
    return [{k: torch.cat(v) for k, v in m.items()} for m in per_model]


def intervals(out: Outputs, resamples: int = RESAMPLES, seed: int = 0,
              confidence: float = CONFIDENCE) -> dict[str, dict[str, float]]:
    """Percentile bootstrap interval of each headline metric: {name: {"low", "high"}}."""
    samples = resampled_metrics([out], resamples, seed)[0]
    return {name: percentile_interval(v, confidence) for name, v in samples.items()}


def percentile_interval(values: torch.Tensor, confidence: float = CONFIDENCE) -> dict[str, float]:
    values = values[~values.isnan()]
    if values.numel() == 0:
        return {"low": float("nan"), "high": float("nan")}
    alpha = (1 - confidence) / 2
    low, high = torch.quantile(values.double(), torch.tensor([alpha, 1 - alpha], dtype=torch.double))
    return {"low": float(low), "high": float(high)}


def _single_label(out: Outputs, w: torch.Tensor) -> dict[str, torch.Tensor]:
    c = len(out.classes)
    target = out.targets.long()
    predicted = out.predicted
    true_hot = torch.nn.functional.one_hot(target, c).float()  # (N, C)
    pred_hot = torch.nn.functional.one_hot(predicted, c).float()
    hit_hot = true_hot * (predicted == target).float().unsqueeze(1)  # (N, C): right, by true class
    support, predicted_count, tp = w @ true_hot, w @ pred_hot, w @ hit_hot  # (B, C) each
    n = w.sum(dim=1)
    recall = tp / support  # NaN where the class is absent from the resample
    f1 = 2 * tp / (support + predicted_count)  # NaN where the class is neither true nor predicted
    return {"acc": tp.sum(dim=1) / n, "balanced_acc": recall.nanmean(dim=1), "f1": f1.nan_to_num(0.0).sum(dim=1)
            / (support + predicted_count > 0).sum(dim=1).clamp_min(1)}


def _multi_label(out: Outputs, w: torch.Tensor) -> dict[str, torch.Tensor]:
    target = out.targets.bool()
    predicted = out.predicted
    tp = w @ (predicted & target).float()  # (B, C)
    fp = w @ (predicted & ~target).float()
    fn = w @ (~predicted & target).float()
    n = w.sum(dim=1)
    denominator = 2 * tp + fp + fn
    per_label_f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1e-12), torch.zeros_like(tp))
    micro = 2 * tp.sum(1) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1)).clamp_min(1e-12)
    return {"exact_match": (w @ out.correct.float()) / n, "f1": per_label_f1.mean(dim=1), "f1_micro": micro}
