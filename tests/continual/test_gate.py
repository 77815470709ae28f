"""The promotion gate on fixed held-out scores."""

from __future__ import annotations

import pytest

from sftune.continual.gate import Gate
from sftune.errors import SftuneError


def _scores(old: float, new: float) -> dict[str, dict[str, float]]:
    return {"old": {"acc": old, "f1": old}, "new": {"acc": new, "f1": new}}


@pytest.mark.parametrize(
    ("champion", "challenger", "gate", "promote"),
    [
        ((0.90, 0.40), (0.89, 0.80), Gate(), True),  # much better on new, 1 point lost on old
        ((0.90, 0.40), (0.90, 0.40), Gate(), False),  # the same model again: nothing gained
        ((0.90, 0.40), (0.95, 0.35), Gate(), False),  # worse on the new data
        ((0.90, 0.40), (0.85, 0.80), Gate(), False),  # forgot 5 points of the old data
        ((0.90, 0.40), (0.85, 0.80), Gate(max_drop=0.06), True),
        ((0.90, 0.40), (0.90, 0.405), Gate(min_gain=0.01), False),  # better, but by less than asked
        ((0.90, 0.40), (0.90, 0.42), Gate(min_gain=0.01, metric="f1"), True),
    ],
)
def test_gate_decisions(champion, challenger, gate, promote):
    decision = gate.decide(_scores(*champion), _scores(*challenger))
    assert decision.promote is promote
    assert bool(decision.reasons) is not promote  # a refusal always says why
    assert decision.gain_new == pytest.approx(challenger[1] - champion[1])
    assert decision.drop_old == pytest.approx(champion[0] - challenger[0])


def test_gate_rejects_bad_settings():
    with pytest.raises(SftuneError, match="not one of"):
        Gate(metric="auc")
    with pytest.raises(SftuneError, match="max_drop"):
        Gate(max_drop=-0.1)
