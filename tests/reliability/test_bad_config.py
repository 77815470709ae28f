"""Bad configuration: unknown keys (did-you-mean), wrong types, impossible values, incompatible choices.
Each is refused before any work starts (no data scan, no output folder) with the field named;
hypothesis fuzzes --set strings, YAML files and strategy options for anything but a one-line SftuneError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftune.config import RunConfig, build_config, load_yaml, validate
from sftune.errors import SftuneError
from sftune.strategies import create_strategy

from .conftest import assert_clear_error, cli_run, good_images, train_args


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return good_images(tmp_path_factory.mktemp("cfg") / "data", per_class=4)


BAD = {
    # name: (extra CLI args, words the one error line must hold)
    "unknown key": (["--set", "train.lrr=0.1"], ["unknown key 'train.lrr'", "did you mean 'lr'"]),
    "unknown section": (["--set", "trian.lr=0.1"], ["unknown key 'trian'", "did you mean 'train'"]),
    "lr = 0": (["--lr", "0"], ["train.lr", "greater than 0"]),
    "lr < 0": (["--lr", "-1e-3"], ["train.lr", "greater than 0"]),
    "batch 0": (["--batch-size", "0"], ["train.batch_size", "greater than or equal to 1"]),
    "epochs 0": (["--epochs", "0"], ["train.epochs", "greater than or equal to 1"]),
    "epochs -3": (["--epochs", "-3"], ["train.epochs"]),
    "val fraction 0": (["--set", "data.val_fraction=0"], ["data.val_fraction", "greater than 0"]),
    "val fraction 1": (["--set", "data.val_fraction=1"], ["data.val_fraction", "less than 1"]),
    "val fraction 1.5": (["--set", "data.val_fraction=1.5"], ["data.val_fraction"]),
    "val fraction -0.1": (["--set", "data.val_fraction=-0.1"], ["data.val_fraction"]),
    "epochs as a word": (["--set", "train.epochs=ten"], ["train.epochs", "'ten'"]),
    "batch as a fraction": (["--set", "train.batch_size=1.5"], ["train.batch_size"]),
    "bool as a word": (["--set", "data.strict=maybe"], ["data.strict"]),
    "section given a value": (["--set", "train=3"], ["train"]),
    "crop scale reversed": (["--set", "data.crop_scale=[0.9,0.1]"], ["data.crop_scale", "0 < low <= high <= 1"]),
    "unknown optimizer": (["--optimizer", "adamz"], ["train.optimizer"]),
    "unknown precision": (["--precision", "17"], ["trainer.precision", "must be one of"]),
    "unknown monitor": (["--set", "train.monitor=val/acc2"], ["train.monitor"]),
    "unknown task": (["--set", "task=detection"], ["task"]),
    "NaN learning rate": (["--set", "train.lr=.nan"], ["train.lr"]),
    "infinite label smoothing": (["--set", "train.label_smoothing=.inf"], ["train.label_smoothing"]),
    "unknown strategy": (["--strategy", "ful"], ["unknown strategy 'ful'", "did you mean 'full'"]),
    "option of another strategy": (["--strategy", "full", "--set", "strategy.rank=4"], ["strategy", "rank"]),
    "lora rank 0": (["--strategy", "lora", "--set", "strategy.rank=0"], ["rank"]),
    "unfreeze after the last epoch": (["--strategy", "freeze_unfreeze", "--set", "strategy.unfreeze_epoch=3"],
                                      ["unfreeze_epoch"]),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_setting_is_refused_before_any_work(kind, data, tmp_path, bad_input):
    args, needles = BAD[kind]
    result = cli_run(*train_args(data, tmp_path / "run", *args))
    assert_clear_error(result, *needles)
    assert "data:" not in result.output  # rejected before the data scan and the model
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())  # no output folder, no lock, no partial run
    bad_input(f"config: {kind}", "clear error")


def test_lora_on_a_backbone_without_such_layers_is_refused_before_training(data, tmp_path, bad_input):
    """LoRA needs Linear / dense Conv2d layers; targets that match none are refused before the first step."""
    result = cli_run(*train_args(data, tmp_path / "run", "--strategy", "lora", "--set", "strategy.targets=[no_such_layer]"))
    assert_clear_error(result, "strategy.targets", "no Linear/dense Conv2d layer", "leave it unset")
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()
    bad_input("config: lora on a backbone without matching linear layers", "clear error")


def test_lora_refuses_a_backbone_with_no_linear_or_dense_conv(bad_input):
    import torch

    from sftune.strategies.lora import LowRankAdapters

    only_depthwise = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.ReLU())
    with pytest.raises(SftuneError, match="no Linear or dense Conv2d layer to adapt; use bitfit or llrd"):
        LowRankAdapters().target_modules(only_depthwise)
    bad_input("config: lora on a backbone with no linear layers", "clear error")


YAML_FILES = {
    "tab-indented YAML": ("train:\n\tlr: 0.1\n", ["not valid YAML"]),
    "a YAML list": ("- train\n- lr\n", ["must hold a mapping"]),
    "binary bytes": (bytes(range(256)), ["not valid YAML"]),
    "python object tag": ("train: !!python/object/apply:os.system ['touch PWNED']\n", ["not valid YAML"]),
    "unknown key in the file": ("train:\n  epoch: 3\n", ["unknown key 'train.epoch'", "did you mean 'epochs'"]),
}


@pytest.mark.parametrize("kind", list(YAML_FILES))
def test_bad_config_file(kind, data, tmp_path, monkeypatch, bad_input):
    text, needles = YAML_FILES[kind]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.chdir(tmp_path)
    result = cli_run(*train_args(data, tmp_path / "run", "-c", cfg))
    assert_clear_error(result, str(cfg), *needles)
    assert not (tmp_path / "PWNED").exists()
    bad_input(f"config file: {kind}", "clear error")


# ----------------------------------------------------------------------------- fuzzing

_KEYS = sorted(f"{section}.{name}" for section in ("data", "model", "train", "trainer")
               for name in RunConfig.model_fields[section].annotation.model_fields)
_KEYS += ["task", "strategy.name", "strategy.rank", "strategy.unfreeze_epoch", "strategy.decay", "train", "data.x.y"]
_yaml_scalars = st.one_of(
    st.sampled_from(["0", "-1", "1e-3", "1e400", ".nan", "-.inf", "true", "no", "null", "~", "[]", "{}", "[1, 2]",
                     "'quoted'", "\"x\"", "|", ">", "&a", "*a", "!!binary AAAA", "!!python/name:os.system", "0x10",
                     "1_000", "2026-01-01", "::", "[", "{a: [b, c]}", "é", "\t", ""]),
    st.text(max_size=12),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(st.sampled_from(_KEYS), st.text(max_size=10)), _yaml_scalars), max_size=4))
def test_fuzz_set_overrides_only_ever_raise_one_line_errors(pairs):
    try:
        cfg = build_config(sets=[f"{k}={v}" for k, v in pairs])
        create_strategy(cfg.strategy).check(cfg.train.epochs)
    except SftuneError as e:
        assert str(e) and "\n" not in str(e), str(e)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    st.lists(st.tuples(st.sampled_from(["data", "model", "train", "trainer", "strategy", "task", "x"]),
                       st.sampled_from(_KEYS), _yaml_scalars), max_size=4).map(
        lambda rows: "".join(f"{s}:\n  {k.split('.')[-1]}: {v}\n" for s, k, v in rows)),
))
def test_fuzz_yaml_config_files(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        cfg = validate(load_yaml(path), source=str(path))
        create_strategy(cfg.strategy).check(cfg.train.epochs)
    except SftuneError as e:
        assert str(e) and "\n" not in str(e), str(e)
