from __future__ import annotations

from dataclasses import dataclass as plain_dataclass

from pydantic import Field
from pydantic.dataclasses import dataclass

from ..errors import SftuneError
from .base import STRATEGIES, ParamGroup, Strategy


@plain_dataclass
class Choice:
    strategy: str
    options: dict[str, object]
    why: str
    probe_acc: float | None
    train_size: int
    num_classes: int

    def to_dict(self) -> dict[str, object]:
        return {"requested": "auto", "chosen": self.strategy, "options": self.options, "why": self.why,
                "probe_acc": None if self.probe_acc is None else round(self.probe_acc, 4), "train_size": self.train_size, "num_classes": self.num_classes}


@STRATEGIES.register("auto")
@dataclass
class Automatic(Strategy):
    """Picks a strategy from the data size, the number of classes and a quick linear-probe
    score (a head fitted in seconds on cached frozen features, scored on the val set).

    The rules follow what fine-tuning studies report and what sftune's own strategy
    benchmark (bench/strategy_bench.py) measures:

    * strong probe (>= ``strong_probe``) with few images per class (< ``few_per_class``):
      ``linear_probe`` — the pretrained features already separate the classes and
      fine-tuning hundreds of images mostly adds variance (and minutes);
    * weaker probe with few images per class: ``freeze_unfreeze`` — the head settles on
      frozen features, then the whole network adapts at a small LR;
    * many images per class: ``llrd`` — everything trains, layers near the input least,
      which is what large labeled sets reward.

    The choice and its reason are printed, and saved in the bundle (config.yaml holds the
    chosen strategy, metrics.json and lineage.json the reasoning).
    """

    name = "auto"
    default_lr = 1e-3
    summary = "chooses linear_probe, freeze_unfreeze or llrd from data size, classes and a quick probe score"
    strong_probe: float = Field(0.85, gt=0, le=1, description="probe val accuracy that counts as strong")
    few_per_class: int = Field(200, ge=1, description="below this many training examples per class, data counts as few")

    def choose(self, train_size: int, num_classes: int, probe_acc: float | None, epochs: int) -> Choice:
        """``probe_acc`` None: the task has no pooled-feature probe (dense tasks such as segmentation,
        where every image holds many labeled pixels); then "few" means fewer than ``few_per_class``
        training images, and the frozen-features shortcut (linear_probe) is never chosen."""
        if probe_acc is None:
            per_class = float(train_size)
            facts = f"{train_size} training images, {num_classes} classes, no pooled-feature probe for this task"
        else:
            per_class = train_size / max(1, num_classes)
            facts = f"{train_size} training examples, {num_classes} classes ({per_class:.0f} per class), probe val acc {probe_acc:.3f}"
        options: dict[str, object] = {}
        if probe_acc is not None and per_class < self.few_per_class and probe_acc >= self.strong_probe:
            strategy, why = "linear_probe", "few examples per class and a strong probe: the frozen features already separate the classes"
        elif per_class < self.few_per_class and epochs >= 2:
            strategy, why = "freeze_unfreeze", "few examples per class but a weak probe: the features need adapting, gently, after the head settles"
            options["unfreeze_epoch"] = min(3, max(1, epochs // 3))  # the head's share of a short budget
        elif per_class < self.few_per_class:
            strategy, why = "full", "few examples per class, a weak probe and one epoch: everything trains, the backbone at a small LR"
        else:
            strategy, why = "llrd", "many examples per class: fine-tune everything, with smaller steps near the input"
        return Choice(strategy, options, f"{why} ({facts})", probe_acc, train_size, num_classes)

    def param_groups(self, task) -> list[ParamGroup]:
        raise SftuneError("strategy auto chooses another strategy before training; it has no param groups itself")
