"""One real end-to-end segmentation run: CamVid subset, offline EfficientNet-Lite0 DeepLabV3+,
through the CLI (train -> report -> predict masks -> eval), as the README documents it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sftune.cli.main import cli

from conftest import SHARED_DATA

CAMVID = SHARED_DATA / "CamVid_subset" / "CamVid"
pytestmark = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"{CAMVID} is absent (../shared/data)")


@pytest.mark.slow
def test_camvid_trains_predicts_and_evaluates(tmp_path):
    out = tmp_path / "camvid"
    runner = CliRunner()
    # Task detected from the layout; CamVid's void (11) ignored. Two short epochs: decoder first, then everything.
    result = runner.invoke(cli, [
        "train", "--data", str(CAMVID), "--set", "task.ignore_index=11", "--set", "task.crop_size=160",
        "--strategy", "freeze_unfreeze", "--set", "strategy.unfreeze_epoch=1", "--epochs", "2", "--batch-size", "8",
        "--workers", "0", "--no-progress", "--out", str(out), "--set", "report.bootstrap=100", "--json"])
    assert result.exit_code == 0, result.output
    config = (out / "config.yaml").read_text()
    assert "semantic_segmentation" in config and "ignore_index: 11" in config
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 34 and metrics["skipped"] == 0
    assert len(metrics["per_class_iou"]) == 11  # 12 mask values, void left out
    # Two epochs on 62 images: far above chance (about 1/11 per class), far below converged.
    assert 0.15 < metrics["miou"] < 1 and metrics["pixel_acc"] > 0.6
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "semantic_segmentation" and len(report["worst"]) == 8
    assert "data:image/jpeg;base64" in (out / "report.html").read_text()  # the worst images drawn

    image = sorted((CAMVID / "val").iterdir())[0]
    masks = tmp_path / "masks"
    result = runner.invoke(cli, ["predict", str(out), str(image), "--out-dir", str(masks), "--json"])
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)
    written = Image.open(record["mask"])
    assert written.mode == "P" and written.size == Image.open(image).size  # palette index PNG, original size
    assert np.asarray(written).max() < 11 and abs(sum(record["class_fractions"].values()) - 1) < 1e-3

    result = runner.invoke(cli, ["eval", str(out), "--data", str(CAMVID), "--bootstrap", "50", "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert evaluated["miou"] == pytest.approx(metrics["miou"], abs=1e-6)  # the bundle's own evaluation
