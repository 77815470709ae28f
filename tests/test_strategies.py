"""What each strategy trains, when, and at which learning rate (tiny model, real digits)."""

from __future__ import annotations

import lightning as L
import pytest
import timm
import torch

from sftune.backbones import Backbone
from sftune.config import DataConfig, StrategyConfig, TrainConfig
from sftune.data import ImageClassificationData, build_transforms, find_labeled_images
from sftune.errors import SftuneError
from sftune.strategies import STRATEGIES, create_strategy
from sftune.tasks import Classifier
from sftune.optim import lr_multiplier


def make_task(strategy_name: str, **options) -> Classifier:
    torch.manual_seed(0)
    backbone = Backbone(timm.create_model("test_efficientnet", pretrained=False), "test_efficientnet", "test")
    strategy = create_strategy(StrategyConfig(name=strategy_name, **options))
    return Classifier(backbone, 3, strategy, TrainConfig(lr=0.01, warmup_epochs=0), drop_rate=0.0)


def make_data(root, backbone: Backbone) -> ImageClassificationData:
    data = find_labeled_images(root, val_fraction=0.2)
    cfg = DataConfig(image_size=32)
    train_tf, eval_tf = build_transforms(backbone.data_config(32), cfg)
    return ImageClassificationData(data.train, data.val, data.classes, train_tf, eval_tf, batch_size=16, num_workers=0)


class Recorder(L.Callback):
    """Per epoch: which parameters may train, each group's LR, and the BN modes."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        self._snapshot = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 1:  # after the first step of the epoch, so warm-up/zero LRs are visible
            bn = [m for m in module.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            self.epochs.append({
                "backbone_trainable": [p.requires_grad for p in module.backbone.parameters()],
                "head_trainable": [p.requires_grad for p in module.head.parameters()],
                "lr": {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups},
                "bn_training": [m.training for m in bn],
            })

    def on_train_epoch_end(self, trainer, module) -> None:
        after = module.state_dict()
        self.epochs[-1]["changed"] = {k for k, v in after.items() if not torch.equal(v, self._snapshot[k])}


def fit(task: Classifier, data_root, epochs: int) -> Recorder:
    recorder = Recorder()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
                        num_sanity_val_steps=0)
    trainer.fit(task, datamodule=make_data(data_root, task.backbone))
    return recorder


def test_registry_lists_the_three_strategies():
    assert {"linear_probe", "full", "freeze_unfreeze"} <= set(STRATEGIES.list())
    with pytest.raises(SftuneError, match="available: .*linear_probe"):
        create_strategy(StrategyConfig(name="nope"))


def test_linear_probe_freezes_backbone_weights_and_bn_statistics(digits_dir):
    task = make_task("linear_probe")
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    rec = fit(task, digits_dir, epochs=2)
    after = task.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "backbone tensors (incl. BN running stats) must not move"
    for epoch in rec.epochs:
        assert not any(epoch["backbone_trainable"]) and all(epoch["head_trainable"])
        assert not any(epoch["bn_training"]), "frozen BN layers must stay in eval mode"
        assert set(epoch["lr"]) == {"head"}
        assert epoch["changed"] and all(k.startswith("head.") for k in epoch["changed"])


def test_full_trains_everything_with_a_lower_backbone_lr(digits_dir):
    task = make_task("full", backbone_lr_scale=0.1)
    rec = fit(task, digits_dir, epochs=1)
    epoch = rec.epochs[0]
    assert all(epoch["backbone_trainable"]) and all(epoch["bn_training"])
    assert epoch["lr"]["backbone"] == pytest.approx(0.1 * epoch["lr"]["head"])
    assert any(k.startswith("backbone.") and "running_mean" in k for k in epoch["changed"])


def test_freeze_unfreeze_switches_at_the_given_epoch(digits_dir):
    task = make_task("freeze_unfreeze", unfreeze_epoch=2, backbone_lr_scale=0.1)
    rec = fit(task, digits_dir, epochs=3)
    for epoch in rec.epochs[:2]:
        assert not any(epoch["backbone_trainable"]) and not any(epoch["bn_training"])
        assert epoch["lr"]["backbone"] == 0.0 and epoch["lr"]["head"] > 0
        assert all(k.startswith("head.") for k in epoch["changed"])
    last = rec.epochs[2]
    assert all(last["backbone_trainable"]) and all(last["bn_training"])
    assert last["lr"]["backbone"] > 0
    assert any(k.startswith("backbone.") for k in last["changed"])


def test_freeze_unfreeze_rejects_unfreezing_after_the_last_epoch():
    strategy = create_strategy(StrategyConfig(name="freeze_unfreeze", unfreeze_epoch=5))
    with pytest.raises(SftuneError, match="unfreeze_epoch"):
        strategy.check(epochs=5)


def test_schedule_warmup_cosine_and_delayed_start():
    f = lr_multiplier("cosine", start=0, warmup=4, total=100)
    assert f(0) == pytest.approx(0.25 * 0.5 * (1 + torch.cos(torch.tensor(0.0)).item()))
    assert f(3) == pytest.approx(1.0, abs=1e-2)
    assert f(50) == pytest.approx(0.5, abs=1e-6)
    assert f(100) == pytest.approx(0.0, abs=1e-9)
    g = lr_multiplier("cosine", start=20, warmup=10, total=100)
    assert g(19) == 0.0 and 0 < g(20) < g(25) and g(29) > g(35)


def test_no_weight_decay_on_biases_and_norms(digits_dir):
    task = make_task("full")
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_train_batches=1,
                        limit_val_batches=0)
    trainer.fit(task, datamodule=make_data(digits_dir, task.backbone))
    for group in trainer.optimizers[0].param_groups:
        if group["weight_decay"] > 0:
            assert all(p.ndim > 1 for p in group["params"])
        else:
            assert all(p.ndim <= 1 for p in group["params"])


def _trainable_names(task) -> set[str]:
    return {n for n, p in task.backbone.model.named_parameters() if p.requires_grad}


def test_gradual_unfreeze_goes_top_down_one_stage_per_epoch(digits_dir):
    task = make_task("gradual_unfreeze", stages=2, unfreeze_every=1)
    layers = task.backbone.layer_groups()
    half = round(len(layers) / 2)
    bottom, top = {n for g in layers[:half] for n in g}, {n for g in layers[half:] for n in g}
    seen: list[set[str]] = []

    class Trainable(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                seen.append(_trainable_names(module))

    rec = Recorder()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec, Trainable()],
                        num_sanity_val_steps=0)
    trainer.fit(task, datamodule=make_data(digits_dir, task.backbone))
    assert seen[0] == set() and seen[1] == top and seen[2] == top | bottom
    assert rec.epochs[0]["lr"]["backbone.stage0"] == 0.0 and rec.epochs[0]["lr"]["backbone.stage1"] == 0.0
    assert rec.epochs[1]["lr"]["backbone.stage1"] > 0 and rec.epochs[1]["lr"]["backbone.stage0"] == 0.0
    assert all(not k.startswith("backbone.") for k in rec.epochs[0]["changed"] if "running" not in k)
    with pytest.raises(SftuneError, match="unfreezes its last stage"):
        create_strategy(StrategyConfig(name="gradual_unfreeze", stages=4)).check(epochs=4)


def test_llrd_learning_rates_shrink_towards_the_input(digits_dir):
    task = make_task("llrd", decay=0.5)
    rec = fit(task, digits_dir, epochs=1)
    lrs = rec.epochs[0]["lr"]
    n = len(task.backbone.layer_groups())
    layer_lrs = [lrs[f"backbone.layer{i}"] for i in range(n)]
    assert layer_lrs == sorted(layer_lrs) and layer_lrs[0] < layer_lrs[-1] < lrs["head"]
    assert layer_lrs[-1] == pytest.approx(0.5 * lrs["head"]) and layer_lrs[0] == pytest.approx(0.5 ** n * lrs["head"])
    assert all(rec.epochs[0]["backbone_trainable"])


def test_bitfit_trains_only_biases_norms_and_head(digits_dir):
    task = make_task("bitfit")
    before = {k: v.clone() for k, v in task.backbone.model.state_dict().items()}
    fit(task, digits_dir, epochs=1)
    after = task.backbone.model.state_dict()
    trainable = _trainable_names(task)
    assert trainable and all(n.endswith("bias") or ".bn" in n or n.startswith("bn") for n in trainable)
    conv_weights = [k for k in before if k.endswith("conv.weight") or k.endswith("conv_stem.weight") or "conv_pw" in k]
    assert conv_weights and all(torch.equal(before[k], after[k]) for k in conv_weights)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("bias"))
