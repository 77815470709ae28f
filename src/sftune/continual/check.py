"""``sftune drift``'s work: a bundle, new data and (stored or given) reference -> DriftResult."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..eval.outputs import Outputs
from .drift import DriftResult, detect
from .inputs import outputs_on, reference_from_outputs
from .reference import Reference, read_reference


@dataclass
class DriftCheck:
    result: DriftResult
    reference: Reference
    new: Outputs
    classes: list[str]


def check_drift(bundle: str | Path, data: str | Path, reference_data: str | Path | None = None, alpha: float = 0.05,
                permutations: int = 1000, max_samples: int = 1000, seed: int = 0, text_column: Any = None,
                keep_null: bool = True, precision: str = "auto",
                decide_on: tuple[str, ...] | str = ("features",)) -> DriftCheck:
    """Compare ``data`` with the bundle's training distribution in the bundle's feature space."""
    from ..predictor import load, require_continual

    require_continual(bundle, "drift")
    model = load(bundle, precision=precision)
    if reference_data is not None:
        reference = reference_from_outputs(outputs_on(model, reference_data, max_samples, seed, text_column), seed)
    else:
        reference = read_reference(Path(bundle))
    new = outputs_on(model, data, max_samples, seed + 1, text_column)
    assert new.features is not None
    result = detect(reference.features, new.features, reference.probs, new.probs, reference.targets,
                    new.targets if not new.multi_label else None, alpha=alpha, permutations=permutations, seed=seed,
                    multi_label=new.multi_label, keep_null=keep_null, decide_on=decide_on)
    return DriftCheck(result, reference, new, list(model.classes))


def write_drift_report(check: DriftCheck, path: str | Path, title: str) -> None:
    """A self-contained HTML page (tests, p-values, a 2-D view of both feature sets) at ``path``;
    ``check`` must come from :func:`check_drift` with ``keep_null=True`` (the null distribution is drawn)."""
    from .html import drift_figure, drift_section, write_drift_html

    if check.new.features is None:
        raise ValueError("the drift check holds no new features to draw")
    png = drift_figure(check.result, check.reference.features, check.new.features, check.classes)
    write_drift_html(Path(path), drift_section(check.result, png, title), title)
