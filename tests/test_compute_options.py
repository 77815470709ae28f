"""Opt-in compute options: automatic batch size (GPU) and torch.compile."""

from __future__ import annotations

import pytest

import sftune
from sftune.engine import split_batch

from conftest import TINY


@pytest.mark.parametrize("fits, effective, expected", [
    (256, 64, (64, 1)),   # room to spare: the effective batch, no accumulation
    (64, 64, (64, 1)),
    (24, 64, (22, 3)),    # 22 x 3 = 66 >= 64 with each step <= 24
    (1, 8, (1, 8)),
])
def test_split_batch_keeps_the_effective_batch(fits, effective, expected):
    batch, steps = split_batch(fits, effective)
    assert (batch, steps) == expected
    assert batch * steps >= effective and batch <= max(fits, 1)


def test_auto_batch_size_on_cpu_keeps_the_configured_batch(digits_dir, tmp_path, capsys):
    kw = {k.replace(".", "__"): v for k, v in TINY.items()}
    run = sftune.finetune(data=digits_dir, out=tmp_path / "run", strategy="full", train__epochs=1,
                          train__auto_batch_size=True, **kw)
    assert "auto batch size: no accelerator memory limit to find here; keeping batch 16" in capsys.readouterr().out
    assert run.config.train.batch_size == 16 and run.metrics["n"] == 18


@pytest.mark.slow
def test_compiled_backbone_trains_and_keeps_bundle_keys(digits_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    kw = {k.replace(".", "__"): v for k, v in TINY.items()}
    plain = sftune.finetune(data=digits_dir, out=tmp_path / "plain", strategy="full", train__epochs=1, **kw)
    compiled = sftune.finetune(data=digits_dir, out=tmp_path / "compiled", strategy="full", train__epochs=1,
                               trainer__compile=True, **kw)
    assert "torch.compile" in capsys.readouterr().out
    assert load_file(str(plain.path / "model.safetensors")).keys() == load_file(str(compiled.path / "model.safetensors")).keys()
    assert abs(compiled.metrics["loss"] - plain.metrics["loss"]) < 0.05  # same maths, other kernels
