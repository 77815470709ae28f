"""One tiny real training run whose bundle the report tests share (read-only: copy before changing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_run, write_digits

SCHEMA = Path(__file__).resolve().parents[2] / "src" / "sftune" / "eval" / "report.schema.json"


@pytest.fixture(scope="session")
def report_digits(tmp_path_factory) -> Path:
    """train/ and val/ folders of 3 digit classes (val: 12 per class)."""
    import shutil

    src = write_digits(tmp_path_factory.mktemp("report_src") / "all", per_class=36)
    root = tmp_path_factory.mktemp("report_data") / "digits"
    for class_dir in sorted(src.iterdir()):
        files = sorted(class_dir.iterdir())
        for split, chunk in (("train", files[:24]), ("val", files[24:])):
            (root / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            for f in chunk:
                shutil.copy(f, root / split / class_dir.name / f.name)
    return root


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, report_digits) -> Path:
    """A full fine-tune of the tiny model for 2 epochs (so the report has curves and mistakes)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = tiny_run(report_digits, tmp_path_factory.mktemp("bundles") / "digits_full", strategy="full",
                          train__epochs=2)
    finally:
        torch.set_num_threads(before)
    return result.path


def validate_report(report: dict) -> None:
    import jsonschema

    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
