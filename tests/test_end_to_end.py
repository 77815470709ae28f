"""End to end with the real offline ImageNet EfficientNet-Lite0 on real photos, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sftune.cli.main import cli

from conftest import HYMENOPTERA, needs_hymenoptera

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@needs_hymenoptera()
def test_linear_probe_on_ants_and_bees_then_eval_and_predict_agree(tmp_path):
    out = tmp_path / "ants"
    # 5 epochs keep CI short; the default 10 reach ~96% here (see README).
    run_cli("train", "--data", str(HYMENOPTERA), "--model", "efficientnet_lite0", "--strategy", "linear_probe",
            "--epochs", "5", "--no-progress", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 153 and metrics["acc"] >= 0.90, metrics  # chance is ~54% (83 of 153 are bees)

    evaluated = json.loads(run_cli("eval", str(out), "--data", str(HYMENOPTERA / "val"), "--json"))
    assert evaluated["acc"] == pytest.approx(metrics["acc"], abs=1e-6)
    assert evaluated["f1"] == pytest.approx(metrics["f1"], abs=1e-6)

    predictions = json.loads(run_cli("predict", str(out), str(HYMENOPTERA / "val"), "--json", "--top-k", "2"))
    assert len(predictions) == 153
    correct = sum(Path(p["path"]).parent.name == p["label"] for p in predictions)
    assert correct / 153 == pytest.approx(evaluated["acc"], abs=1e-6)
    assert all(len(p["top_k"]) == 2 and p["top_k"][0]["label"] == p["label"] for p in predictions)


def test_freeze_unfreeze_fine_tunes_the_real_backbone_on_digits(digits_split_dir, tmp_path):
    """Head first, then the whole pretrained network, on real handwritten digits (3 classes)."""
    out = tmp_path / "digits"
    run_cli("train", "--data", str(digits_split_dir), "--model", "efficientnet_lite0", "--strategy", "freeze_unfreeze",
            "--set", "strategy.unfreeze_epoch=2", "--set", "strategy.backbone_lr_scale=0.3",
            "--epochs", "6", "--image-size", "64", "--lr", "0.003",
            "--set", "data.hflip=0", "--workers", "0", "--no-progress", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["acc"] >= 0.8, metrics  # chance: 1/3
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["model"]["arch"] == "tf_efficientnet_lite0" and lineage["model"]["pretrained"] is True
