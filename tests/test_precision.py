"""Inference precision: auto picks bf16 only where the hardware has it; 32 is always exact."""

from __future__ import annotations

import pytest
import torch

import sftune
from sftune.errors import SftuneError
from sftune.precision import cpu_has_native_bf16, inference_bf16

from conftest import TINY


def test_explicit_choices_and_auto():
    cpu = torch.device("cpu")
    assert inference_bf16(cpu, "32") is False and inference_bf16(cpu, "bf16") is True
    assert inference_bf16(cpu, "auto") is cpu_has_native_bf16()
    with pytest.raises(SftuneError, match="one of auto, 32, bf16"):
        inference_bf16(cpu, "fp8")


def test_fp32_and_bf16_evaluation_agree_on_a_trained_bundle(digits_split_dir, tmp_path):
    kw = {k.replace(".", "__"): v for k, v in TINY.items()}
    run = sftune.finetune(data=digits_split_dir, out=tmp_path / "run", strategy="full", train__epochs=3,
                          train__lr=0.02, trainer__inference_precision="32", **kw)
    exact = sftune.load(run.path, precision="32").evaluate(digits_split_dir / "val")
    assert exact["acc"] == pytest.approx(run.metrics["acc"], abs=1e-6)  # metrics.json used the same precision
    fast = sftune.load(run.path, precision="bf16").evaluate(digits_split_dir / "val")
    assert abs(fast["acc"] - exact["acc"]) <= 2 / 30 and abs(fast["loss"] - exact["loss"]) < 0.05


def test_auto_training_precision_is_bf16_only_where_it_pays(monkeypatch):
    """auto: bf16-mixed for transformers on a CPU with native bf16, float32 for CNNs on any CPU."""
    from sftune import precision

    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    for native in (True, False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        assert precision.training_precision("auto", "cpu", convolutional=True) == "32-true"
        assert precision.training_precision("auto", "auto", convolutional=False) == ("bf16-mixed" if native else "32-true")
        assert precision.training_precision("32-true", "cpu", convolutional=False) == "32-true"  # asked for: kept
        assert precision.training_precision("bf16-mixed", "cpu", convolutional=True) == "bf16-mixed"
