"""A bundle's outputs (scores + pooled features) on new data, labeled or not, through the
predictors' own inference loops (``outputs()`` / ``_batches``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..eval.outputs import Outputs
from .reference import MAX_FEATURES, Reference


def outputs_on(model: Any, data: str | Path, max_samples: int = 1000, seed: int = 0, text_column: Any = None) -> Outputs:
    """Outputs with features on at most ``max_samples`` examples of ``data`` (a seeded sample),
    read as the model's modality reads new data (modalities/: labeled when the data carries
    labels the model knows, else unlabeled rows with target -1)."""
    from ..modalities import modality_of

    return modality_of(model.modality).outputs_on(model, Path(data).expanduser(), max_samples, seed, text_column)


def reference_from_outputs(out: Outputs, seed: int = 0) -> Reference:
    """A :class:`Reference` computed now from old data (``--reference OLD``) instead of the bundle's."""
    import torch

    features = out.features
    assert features is not None
    if len(features) > MAX_FEATURES:
        index = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:MAX_FEATURES]
        features = features[index.sort().values]
    return Reference(features, out.logits, out.targets, list(out.classes), out.multi_label, "the --reference data")
