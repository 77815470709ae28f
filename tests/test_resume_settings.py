"""--resume and settings given again: anything the user gives that differs from the saved run is
refused in one line, even a value equal to the default (issue: `--resume --strategy linear_probe`
used to finish a `full` run silently)."""

from __future__ import annotations

import pytest

from sftune import bundle as B
from sftune.config import build_config, dump_yaml
from sftune.engine import _resumed_config
from sftune.errors import SftuneError


@pytest.fixture
def saved_run(tmp_path):
    out = tmp_path / "run"
    work = B.partial_dir(out)
    work.mkdir(parents=True)
    saved = build_config(overrides={"data.path": "photos", "strategy.name": "full", "train.epochs": 4,
                                    "train.lr": 0.01, "model.drop_rate": 0.5, "train.seed": 7})
    (work / B.CONFIG).write_text(dump_yaml(saved))
    return out


def test_a_given_setting_equal_to_the_default_is_refused(saved_run):
    again = build_config(overrides={"strategy.name": "linear_probe"})  # linear_probe is the default strategy
    with pytest.raises(SftuneError) as e:
        _resumed_config(saved_run, again)
    message = str(e.value)
    assert "\n" not in message and "strategy.name is 'full' there, not 'linear_probe'" in message


# The last two are the defaults (0.2, 42), given again on purpose.
@pytest.mark.parametrize("sets", [["train.lr=0.001"], ["model.drop_rate=0.2"], ["train.seed=42"]])
def test_any_given_setting_that_differs_is_refused(saved_run, sets):
    with pytest.raises(SftuneError, match=sets[0].split("=")[0]):
        _resumed_config(saved_run, build_config(sets=sets))


def test_the_original_command_and_budget_changes_are_accepted(saved_run):
    again = build_config(overrides={"data.path": "photos", "strategy.name": "full", "train.epochs": 6,
                                    "trainer.progress_bar": False})
    resumed = _resumed_config(saved_run, again)
    assert resumed.strategy.name == "full" and resumed.train.epochs == 6 and resumed.train.lr == 0.01
    assert resumed.trainer.progress_bar is False


def test_settings_not_given_come_from_the_saved_run(saved_run):
    resumed = _resumed_config(saved_run, build_config())
    assert resumed.strategy.name == "full" and resumed.train.epochs == 4 and resumed.data.path == "photos"


def test_task_defaults_apply_only_to_settings_not_given(tmp_path):
    """Segmentation's own batch default (8) replaces the global one (32) unless the user gave a
    value, and never a value a resumed run saved."""
    from sftune.config import resolve_task

    camvid = tmp_path / "camvid"
    for d in ("train", "trainannot", "val", "valannot"):
        (camvid / d).mkdir(parents=True)
    assert resolve_task(build_config(overrides={"data.path": str(camvid)})).train.batch_size == 8
    given = build_config(overrides={"data.path": str(camvid), "train.batch_size": 32})
    assert resolve_task(given).train.batch_size == 32
    out = tmp_path / "run"
    work = B.partial_dir(out)
    work.mkdir(parents=True)
    (work / B.CONFIG).write_text(dump_yaml(resolve_task(given)))
    assert resolve_task(_resumed_config(out, build_config())).train.batch_size == 32
