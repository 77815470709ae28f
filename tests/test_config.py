"""build_config / validate: defaults, precedence, and one-line errors naming the field."""

from __future__ import annotations

import pytest

from sftune.config import resolve_task, RunConfig, build_config, parse_override, validate
from sftune.errors import SftuneError
from sftune.strategies import create_strategy


def _write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- defaults


def test_defaults():
    cfg = build_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.task == "auto" and cfg.model.name is None  # resolved from the model name / data at run time
    resolved = resolve_task(build_config())
    assert resolved.task == "image_classification"
    assert resolved.model.name == "efficientnet_lite0" and cfg.model.pretrained is True and cfg.model.arch is None
    text = resolve_task(build_config(overrides={"model.name": "minilm"}))
    assert text.task == "text_classification"
    assert resolve_task(build_config(overrides={"task": "text_classification"})).model.name == "minilm"
    assert cfg.strategy.name == "linear_probe" and cfg.strategy.options() == {}
    assert cfg.train.epochs == 10 and cfg.train.batch_size == 32 and cfg.train.lr is None
    assert cfg.train.seed == 42 and cfg.train.monitor is None  # the task's: val/acc for classification
    assert cfg.data.path is None and cfg.data.val_fraction == 0.2 and cfg.data.strict is False
    assert cfg.data.crop_scale == (0.08, 1.0)
    assert cfg.trainer.precision == "auto" and cfg.trainer.devices == "auto"


# --------------------------------------------------------------------------- precedence


def test_precedence_base_file_overrides_set(tmp_path):
    path = _write(tmp_path, """
train:
  epochs: 3
  batch_size: 8
  lr: 0.01
data:
  path: from_file
model:
  name: timm:resnet18
""")
    cfg = build_config(
        file=path,
        base={"train": {"epochs": 1, "seed": 7, "patience": 9}},
        overrides={"train.epochs": 4, "train.batch_size": None, "data.path": "from_flag"},  # None = flag not given
        sets=["train.epochs=5", "model.pretrained=false"],
    )
    assert cfg.train.epochs == 5  # --set beats flag beats file beats base
    assert cfg.train.batch_size == 8  # a flag left unset keeps the file's value
    assert cfg.train.lr == 0.01  # file
    assert cfg.train.seed == 7 and cfg.train.patience == 9  # base survives a file that doesn't mention it
    assert cfg.data.path == "from_flag"  # flag beats file
    assert cfg.model.name == "timm:resnet18" and cfg.model.pretrained is False


def test_file_only_and_later_set_wins(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 3\n")
    assert build_config(file=path).train.epochs == 3
    assert build_config(file=path, sets=["train.epochs=6", "train.epochs=7"]).train.epochs == 7


def test_set_values_are_read_as_yaml():
    cfg = build_config(sets=["train.lr=1e-3", "data.crop_scale=[0.5, 1.0]", "data.strict=true",
                             "trainer.devices=2", "strategy.name=freeze_unfreeze", "strategy.unfreeze_epoch=2"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.data.crop_scale == (0.5, 1.0)
    assert cfg.data.strict is True
    assert cfg.trainer.devices == 2
    assert cfg.strategy.options() == {"unfreeze_epoch": 2}


def test_empty_yaml_file_means_defaults(tmp_path):
    assert build_config(file=_write(tmp_path, "# nothing\n")).train.epochs == 10


def test_parse_override():
    assert parse_override("train.lr=0.5") == ("train.lr", 0.5)
    assert parse_override(" train.seed = 3") == ("train.seed", 3)
    assert parse_override("data.path=a=b") == ("data.path", "a=b")  # only the first '=' splits
    assert parse_override("data.path=") == ("data.path", None)


# -------------------------------------------------------------------------- bad values


def test_unknown_key_did_you_mean():
    with pytest.raises(SftuneError) as e:
        build_config(sets=["train.epoch=3"])
    msg = str(e.value)
    assert "train.epoch" in msg and "did you mean 'epochs'" in msg
    assert "known keys here" in msg and "batch_size" in msg


def test_unknown_section_did_you_mean():
    with pytest.raises(SftuneError) as e:
        build_config(sets=["trian.lr=1"])
    assert "'trian'" in str(e.value) and "did you mean 'train'" in str(e.value)


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = _write(tmp_path, "data:\n  pth: x\n")
    with pytest.raises(SftuneError) as e:
        build_config(file=path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "data.pth" in msg and "did you mean 'path'" in msg


@pytest.mark.parametrize(
    "setting, field",
    [
        ("train.epochs=abc", "train.epochs"),  # wrong type
        ("train.batch_size=[1, 2]", "train.batch_size"),  # wrong type
        ("model.pretrained=maybe", "model.pretrained"),  # wrong type
        ("train.lr=0", "train.lr"),
        ("train.lr=-0.1", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.epochs=0", "train.epochs"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("data.crop_scale=[0.9, 0.1]", "data.crop_scale"),
        ("trainer.precision=8-bit", "trainer.precision"),
        ("train.monitor=val/auc", "train.monitor"),
        ("data.image_size=8", "data.image_size"),
    ],
)
def test_invalid_values_name_the_field(setting, field):
    with pytest.raises(SftuneError) as e:
        build_config(sets=[setting])
    msg = str(e.value)
    assert f"{field}:" in msg, msg
    assert "\n" not in msg  # one line
    value = setting.split("=", 1)[1]
    if not value.startswith("["):
        assert value in msg  # shows what was given


def test_section_given_a_value():
    with pytest.raises(SftuneError, match="config: train: Input should be a valid dictionary"):
        build_config(sets=["train=3"])


def test_set_into_a_value_is_refused():
    with pytest.raises(SftuneError, match="'train.lr' is a value, not a section"):
        build_config(sets=["train.lr=1", "train.lr.x=2"])


def test_invalid_yaml_file(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: [3\n")
    with pytest.raises(SftuneError) as e:
        build_config(file=path)
    assert str(path) in str(e.value) and "not valid YAML" in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_file_that_is_not_a_mapping(tmp_path):
    path = _write(tmp_path, "- train\n- data\n")
    with pytest.raises(SftuneError, match="must hold a mapping") as e:
        build_config(file=path)
    assert str(path) in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(SftuneError, match="does not exist") as e:
        build_config(file=tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value)


def test_non_utf8_config_file(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("data:\n  path: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SftuneError, match="not valid YAML"):
        build_config(file=path)


@pytest.mark.parametrize("text", ["train.lr", "=3", "  =x", ""])
def test_set_without_equals(text):
    with pytest.raises(SftuneError, match="must look like section.key=value"):
        build_config(sets=[text])


# ----------------------------------------------------------------------------- strategy


def _strategy(*sets):
    return create_strategy(build_config(sets=list(sets)).strategy)


def test_strategy_defaults_and_options():
    s = _strategy("strategy.name=freeze_unfreeze", "strategy.unfreeze_epoch=2", "strategy.backbone_lr_scale=0.5")
    assert s.name == "freeze_unfreeze" and s.unfreeze_epoch == 2 and s.backbone_lr_scale == 0.5
    assert _strategy().name == "linear_probe"


def test_unknown_strategy_option_did_you_mean():
    with pytest.raises(SftuneError) as e:
        _strategy("strategy.name=freeze_unfreeze", "strategy.unfreeze_epoc=2")
    msg = str(e.value)
    assert "strategy.unfreeze_epoc" in msg and "did you mean 'unfreeze_epoch'" in msg
    assert "backbone_lr_scale" in msg  # lists the options


def test_option_of_another_strategy_is_refused():
    with pytest.raises(SftuneError, match="unknown key 'strategy.unfreeze_epoch' for strategy 'linear_probe'"):
        _strategy("strategy.unfreeze_epoch=2")


@pytest.mark.parametrize(
    "option, value",
    [("unfreeze_epoch", "0"), ("unfreeze_epoch", "abc"), ("backbone_lr_scale", "0"), ("backbone_lr_scale", "2")],
)
def test_invalid_strategy_option_names_the_field(option, value):
    with pytest.raises(SftuneError) as e:
        _strategy("strategy.name=freeze_unfreeze", f"strategy.{option}={value}")
    assert f"strategy.{option}:" in str(e.value)
    assert repr(value) in str(e.value) or value in str(e.value)


def test_unknown_strategy_lists_available():
    with pytest.raises(SftuneError) as e:
        _strategy("strategy.name=linear_prob")
    msg = str(e.value)
    assert "'linear_prob'" in msg and "did you mean 'linear_probe'" in msg
    assert "available: auto, bitfit, freeze_unfreeze, full, gradual_unfreeze, linear_probe, llrd, lora, lp_ft, wise_ft" in msg


def test_unfreeze_epoch_must_fit_in_epochs():
    cfg = build_config(sets=["strategy.name=freeze_unfreeze", "strategy.unfreeze_epoch=5", "train.epochs=5"])
    with pytest.raises(SftuneError, match=r"strategy.unfreeze_epoch \(5\) must be smaller than train.epochs \(5\)"):
        create_strategy(cfg.strategy).check(cfg.train.epochs)
    create_strategy(cfg.strategy).check(6)  # fine with one more epoch


# --------------------------------------------------------------------------- property


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test-only extra
    given = None

if given is not None:
    _SECTIONS = {name: sorted(RunConfig.model_fields[name].annotation.model_fields)
                 for name in ("data", "model", "strategy", "train", "trainer")}
    _SECTIONS["strategy"] += ["unfreeze_epoch", "backbone_lr_scale"]
    _ALL_FIELDS = sorted({f for fields in _SECTIONS.values() for f in fields} | set(RunConfig.model_fields))
    # Mostly plausible values (so a good share of trees validate), plus junk of every JSON/YAML type.
    _plausible = st.one_of(
        st.booleans(), st.integers(0, 20), st.floats(0, 1), st.none(),
        st.sampled_from(["auto", "cpu", "32-true", "bf16-mixed", "val/acc", "val/loss", "full", "linear_probe",
                         "efficientnet_lite0", "x/y", "2"]),
        st.tuples(st.floats(0.01, 0.5), st.floats(0.5, 1)).map(list),
    )
    _junk = st.one_of(
        st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=4),
        st.lists(st.floats(-2, 2), max_size=3),
    )
    _leaves = st.one_of(_plausible, _plausible, _junk)
    _values = st.recursive(_leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)
    _odd_keys = st.one_of(st.sampled_from(_ALL_FIELDS), st.text(max_size=8), st.integers(-3, 3))

    def _section(name):
        keys = st.one_of(st.sampled_from(_SECTIONS[name]), st.sampled_from(_SECTIONS[name]), _odd_keys)
        return st.dictionaries(keys, st.one_of(_leaves, _leaves, _leaves, _values), max_size=4)

    _well_formed = st.fixed_dictionaries({}, optional={name: _section(name) for name in _SECTIONS} | {
        "task": st.sampled_from(["image_classification", "detection", 3])})
    _trees = st.one_of(_well_formed, _well_formed, _well_formed, st.dictionaries(_odd_keys, _values, max_size=5))

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_trees)
    def test_validate_random_trees_raise_only_sftune_error(tree):
        try:
            cfg = validate(tree)
        except SftuneError as e:
            assert str(e)  # a message, not an empty error
        else:
            assert isinstance(cfg, RunConfig)
            if not cfg.strategy.options():  # (free-form until create_strategy checks them)
                assert validate(cfg.to_dict()) == cfg  # what validates round-trips through config.yaml
else:  # pragma: no cover

    def test_validate_random_trees_raise_only_sftune_error():
        pytest.skip("hypothesis is not installed")
