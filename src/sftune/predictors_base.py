"""The one base of every task's predictor (``sftune.load``): what reading a bundle for
inference has in common, whatever the task or modality.

A predictor is built from a bundle folder alone (config.yaml, labels.json, model.safetensors,
and what its task saved beside them); subclasses add ``predict(inputs)``, ``outputs(data)``
(per-example results on labeled data, the material of metrics, reports and drift) and
``run_cli(...)`` (how ``sftune predict`` hands it the command line's inputs). The predictions
it returns have ``to_dict()``, ``json_records()`` (what ``--json`` prints: one or more records
per input) and either ``table_columns``/``table_row()`` or ``path``/``label``/``score``/``top_k``
(the terminal table).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from . import bundle as B
from .config import RunConfig, load_yaml, validate
from .precision import inference_bf16


@dataclass
class CliInputs:
    """What ``sftune predict`` was given; each predictor takes its own and refuses the rest."""

    paths: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)
    text_file: str | None = None
    column: Any = None
    top_k: int = 1
    batch_size: int = 64
    out_dir: str | None = None  # segmentation: masks and overlays
    draw: str | None = None  # detection: images with boxes drawn
    min_score: float | None = None  # detection: lowest box score kept
    windows: bool = False  # audio: each window's prediction of a long recording, with its times

    def refuse(self, bundle: Path, what: str, **flags: Any) -> None:
        """One line naming the first given flag among ``flags`` (flag -> value) that ``bundle`` does not take."""
        from .errors import SftuneError

        for flag, value in flags.items():
            if value not in (None, [], (), False):
                raise SftuneError(f"'{bundle}' {what}: {flag} is not for this bundle")


class BundlePredictor:
    """``path``, ``config`` (the run's resolved config), ``labels`` (labels.json), ``classes``,
    ``device`` and ``bf16`` (whether inference runs in bfloat16: precision.py)."""

    modality: ClassVar[str]  # what inputs it takes: a name in modalities.MODALITIES
    items_are_files: ClassVar[bool]  # reports show its examples as thumbnails (True) or text
    convolutional: ClassVar[bool] = True  # bf16 inference pays on CPUs for convolutions

    def __init__(self, path: str | Path, device: str | None = None, precision: str = "auto") -> None:
        self.path = B.check_bundle(path)
        self.config: RunConfig = validate(load_yaml(self.path / B.CONFIG), source=str(self.path / B.CONFIG))
        self.labels: dict[str, Any] = B.read_json(self.path / B.LABELS)
        # NFC, as every class name is read now (data/labels.py): bundles written before keep working.
        self.classes: list[str] = [unicodedata.normalize("NFC", c) for c in self.labels["classes"]]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.bf16 = inference_bf16(self.device, precision, convolutional=self.convolutional)  # see precision.py

    def outputs(self, data: Any, batch_size: int = 64, num_workers: int = 0, strict: bool = False,
                features: bool = False) -> Any:
        """Per-example results on labeled ``data`` (``headline()``, ``skipped``)."""
        raise NotImplementedError

    def evaluate(self, data: Any, batch_size: int = 64, num_workers: int = 0, strict: bool = False) -> dict[str, Any]:
        """Headline metrics on labeled ``data``, and how many inputs were skipped."""
        out = self.outputs(data, batch_size=batch_size, num_workers=num_workers, strict=strict)
        result = out.headline()
        result["skipped"] = len(getattr(out, "skipped", []))
        return result

    def run_cli(self, given: CliInputs) -> list[Any]:
        """``sftune predict``: read this predictor's kind of input from the command line and predict;
        flags meant for other kinds of bundle are refused in one line."""
        raise NotImplementedError
