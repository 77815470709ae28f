"""One tiny real training run whose bundle the report tests share (read-only: copy before changing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_run, validate_report  # noqa: F401  (validate_report: the report tests import it from here)


N_VAL = 30  # digits_split_dir: 3 classes x 10 validation images


@pytest.fixture(scope="session")
def report_digits(digits_split_dir) -> Path:
    """train/ and val/ folders of 3 digit classes (the shared digits_split_dir; read-only)."""
    return digits_split_dir


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

