"""The promotion gate: a challenger replaces the champion only if it is better on the new data
and not much worse on the old."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import SftuneError

METRICS = ("acc", "f1", "precision", "recall")


@dataclass
class Gate:
    metric: str = "acc"
    # challenger - champion on held-out NEW data must be MORE than this (0.01 = 1 point); at the default 0
    # a challenger that is merely as good is not promoted (churn, not an update); < 0 tolerates a loss.
    min_gain: float = 0.0
    max_drop: float = 0.02  # champion - challenger on held-out OLD data must be <= this

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise SftuneError(f"gate metric '{self.metric}' is not one of {', '.join(METRICS)}")
        if self.max_drop < 0:
            raise SftuneError(f"gate max_drop must be >= 0 (got {self.max_drop})")

    def decide(self, champion: dict[str, dict[str, float]], challenger: dict[str, dict[str, float]]) -> "Decision":
        """``champion``/``challenger``: {"old": metrics, "new": metrics} on the held-out sets."""
        gain = challenger["new"][self.metric] - champion["new"][self.metric]
        drop = champion["old"][self.metric] - challenger["old"][self.metric]
        reasons = []
        if gain <= self.min_gain + 1e-12:
            reasons.append(f"{self.metric} on new data changed by {gain:+.4f}, needs more than {self.min_gain:+.4f}")
        if drop > self.max_drop + 1e-12:
            reasons.append(f"{self.metric} on old data dropped by {drop:.4f}, allowed <= {self.max_drop:.4f}")
        return Decision(not reasons, gain, drop, reasons, self)


@dataclass
class Decision:
    promote: bool
    gain_new: float
    drop_old: float
    reasons: list[str]
    gate: Gate

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "gain_new": self.gain_new, "drop_old": self.drop_old,
                "reasons": self.reasons, "gate": asdict(self.gate)}
