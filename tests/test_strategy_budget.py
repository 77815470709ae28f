"""Strategy defaults scale to a short epoch budget when the user did not set them (said in one
line and saved in config.yaml); a setting the user gave that cannot fit is still refused."""

from __future__ import annotations

import pytest

from sftune.config import build_config
from sftune.engine import _budgeted_strategy
from sftune.errors import SftuneError


def budgeted(*sets: str):
    lines: list[str] = []
    config = build_config(sets=list(sets))
    return _budgeted_strategy(config, lines.append), config, lines


def test_freeze_unfreeze_defaults_fit_two_epochs():
    strategy, config, lines = budgeted("strategy.name=freeze_unfreeze", "train.epochs=2")
    assert strategy.unfreeze_epoch == 1 and config.strategy.options() == {"unfreeze_epoch": 1}  # -> config.yaml
    assert lines == ["strategy: strategy.unfreeze_epoch=1 to fit 2 epochs (the defaults need more; set them to override)"]


def test_gradual_unfreeze_defaults_fit_two_and_three_epochs():
    strategy, _, _ = budgeted("strategy.name=gradual_unfreeze", "train.epochs=2")
    assert strategy.stages == 1 and strategy.min_epochs() <= 2
    strategy, _, _ = budgeted("strategy.name=gradual_unfreeze", "train.epochs=3")
    assert strategy.stages == 2 and strategy.unfreeze_every == 1


def test_defaults_that_fit_are_left_alone():
    strategy, config, lines = budgeted("strategy.name=freeze_unfreeze", "train.epochs=10")
    assert strategy.unfreeze_epoch == 3 and config.strategy.options() == {} and lines == []


@pytest.mark.parametrize("sets", [
    ("strategy.name=freeze_unfreeze", "strategy.unfreeze_epoch=3", "train.epochs=2"),
    ("strategy.name=gradual_unfreeze", "strategy.stages=4", "train.epochs=2"),
    ("strategy.name=freeze_unfreeze", "train.epochs=1"),  # nothing left to unfreeze in
])
def test_impossible_settings_are_still_one_line_errors(sets):
    with pytest.raises(SftuneError) as e:
        budgeted(*sets)
    assert "\n" not in str(e.value) and "epoch" in str(e.value)


def test_progress_bar_counts_epochs_from_one(small_digits, tmp_path, capfd, one_thread):
    """The bar says "Epoch 2/2" during the second of two epochs, like the summaries (Lightning's
    own bar says "Epoch 1")."""
    from conftest import tiny_run

    tiny_run(small_digits, tmp_path / "run", **{"train.epochs": 2, "trainer.progress_bar": True,
                                                 "data.feature_cache": False, "strategy.name": "full"})
    captured = capfd.readouterr()
    err = captured.err + captured.out
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "Epoch 0" not in err
