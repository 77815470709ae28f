"""One real run: the Free Spoken Digit Dataset through the command line with the offline
ImageNet EfficientNet-Lite0 (a linear probe: the frozen backbone runs once per clip), FSDD's
official split from the file-name patterns, a long recording predicted window by window, and
drift between the official test set and one speaker. Skips when ../shared/data is absent."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sftune.cli.main import cli

from conftest import SHARED_DATA

FSDD = SHARED_DATA / "free-spoken-digit-dataset" / "recordings"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FSDD.is_dir(), reason=f"Free Spoken Digit Dataset not found at {FSDD}")]


def test_fsdd_trains_predicts_a_long_recording_and_checks_drift(tmp_path):
    import soundfile as sf

    out = tmp_path / "digits"
    result = CliRunner().invoke(cli, [
        "train", "--data", str(FSDD), "--out", str(out), "--no-progress", "--strategy", "linear_probe",
        "--epochs", "10", "--set", r"data.label_pattern=^(\d+)_", "--set", r"data.group_pattern=^\d+_([a-z]+)_",
        "--set", r"data.val_pattern=_[0-4]\.wav$", "--set", "report.bootstrap=100"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 300 and metrics["acc"] > 0.5, metrics  # chance: 0.1
    html = (out / "report.html").read_text()
    assert html.count("<audio controls") == len(json.loads((out / "report.json").read_text())["mistakes"]) > 0

    # "seven" then "two" (official test clips), 1.5 s of silence-free speech: windows of 1 s every 0.5 s
    seven, rate = sf.read(str(FSDD / "7_jackson_0.wav"), dtype="float32")
    two, _ = sf.read(str(FSDD / "2_jackson_0.wav"), dtype="float32")
    long = tmp_path / "seven_two.flac"
    sf.write(str(long), np.concatenate([seven, np.zeros(rate // 4, dtype=np.float32), two]), rate)
    result = CliRunner().invoke(cli, ["predict", str(out), str(long), "--windows", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("["):])[0]
    assert len(record["windows"]) >= 2 and record["windows"][-1]["end"] == pytest.approx(record["seconds"], abs=1e-3)

    result = CliRunner().invoke(cli, ["drift", str(out), "--data", str(FSDD), "--json", "--permutations", "199",
                                      "--max-samples", "300"])
    assert result.exit_code in (0, 3), result.output
