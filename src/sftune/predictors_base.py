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
    column: Any = None  # --text-column (predict's older --column): the text column of --file / eval data
    top_k: int = 1
    batch_size: int = 64
    out_dir: str | None = None  # segmentation: masks and overlays
    draw: str | None = None  # detection: images with boxes drawn
    min_score: float | None = None  # detection: lowest box score kept
    label_column: Any = None  # eval, text: the label column of --data
    text_pair_column: Any = None  # text: the second-text column of sentence pairs
    long_texts: str | None = None  # text: "truncate" or "windows" (mean over windows of max_length tokens)
    windows: bool = False  # audio: each window's prediction of a long recording, with its times

    def text_flags(self) -> dict[str, Any]:
        """The options on how to read texts (flag -> value): refused by bundles that read none."""
        return {"--text-column": self.column, "--label-column": self.label_column,
                "--text-pair-column": self.text_pair_column, "--long-texts": self.long_texts}

    def apply_to(self, predictor: Any, bundle: str | Path) -> None:
        """Hand these options to ``predictor.use_inputs``; a predictor without one reads no texts
        and refuses the text flags in one line."""
        use = getattr(predictor, "use_inputs", None)
        if use is not None:
            use(self)
        else:
            self.refuse(Path(bundle), "does not read texts", **self.text_flags())

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
        self.notes = []

    notes: list[str]  # what the last predict/outputs call changed about its inputs (warned by the CLI)

    def use_inputs(self, given: CliInputs) -> None:
        """Take the command line's options on how to read inputs (``sftune eval`` and ``predict``:
        text columns, long texts); a bundle that reads none refuses them in one line."""
        given.refuse(self.path, "does not read texts", **given.text_flags())

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
