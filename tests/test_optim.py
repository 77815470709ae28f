"""Optimizers, LR schedules, mixup/cutmix and EMA: the curves, and what a real fit does with them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from safetensors.torch import load_file

import sftune
from sftune import bundle as B
from sftune.backbones import Backbone
from sftune.config import DataConfig, StrategyConfig, TrainConfig, build_config
from sftune.data import ImageClassificationData, build_transforms, find_labeled_images
from sftune.errors import SftuneError
from sftune.optim import ONECYCLE_END, ONECYCLE_START, SGD_DEFAULT_LR_FACTOR, default_lr, lr_multiplier
from sftune.strategies import create_strategy
from sftune.tasks import Classifier
from sftune.tasks.classification import module as classification_module

from conftest import tiny_run, with_callbacks, write_digits


# ----------------------------------------------------------------------------- helpers


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def odd_split(tmp_path_factory) -> Path:
    """train/ with 31 images (batches of 16 and 15), val/ with 4 per class."""
    src = write_digits(tmp_path_factory.mktemp("odd_src") / "all", per_class=15)
    root = tmp_path_factory.mktemp("odd") / "data"
    for c, n_train in zip("012", (11, 10, 10)):
        files = sorted((src / c).iterdir())
        for split, chunk in (("train", files[:n_train]), ("val", files[n_train:n_train + 4])):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for f in chunk:
                shutil.copy(f, root / split / c / f.name)
    assert len(list((root / "train").rglob("*.png"))) == 31
    return root


def make_task(strategy_name: str, train: TrainConfig, **options) -> Classifier:
    torch.manual_seed(0)
    backbone = Backbone(timm.create_model("test_efficientnet", pretrained=False), "test_efficientnet", "test")
    strategy = create_strategy(StrategyConfig(name=strategy_name, **options))
    return Classifier(backbone, 3, strategy, train, drop_rate=0.0)


def fit(task: Classifier, data_root: Path, epochs: int, callbacks=(), **trainer_kw) -> L.Trainer:
    data = find_labeled_images(data_root, val_fraction=0.2)
    train_tf, eval_tf = build_transforms(task.backbone.data_config(32), DataConfig(image_size=32))
    datamodule = ImageClassificationData(data.train, data.val, data.classes, train_tf, eval_tf, batch_size=16, num_workers=0)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                        num_sanity_val_steps=0, **trainer_kw)
    trainer.fit(task, datamodule=datamodule)
    return trainer


class StepLRs(L.Callback):
    """At each optimizer step (before it is taken): every param group's (name, lr) and whether the backbone trains."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, list[tuple[str, float]], bool]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        groups = [(g["name"], g["lr"]) for g in trainer.optimizers[0].param_groups]
        self.steps.append((trainer.global_step, groups, any(p.requires_grad for p in module.backbone.parameters())))


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, repr(text)
    return text


# ----------------------------------------------------------------------------- schedule curves


def test_cosine_warms_up_then_decays_to_zero():
    f = lr_multiplier("cosine", start=0, warmup=10, total=100)
    ramp = [f(s) for s in range(10)]
    assert ramp == sorted(ramp) and ramp[0] == pytest.approx(0.1, abs=1e-3)
    assert f(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 100)))
    decay = [f(s) for s in range(10, 101)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert f(50) == pytest.approx(0.5) and f(100) == 0.0 and f(150) == 0.0


def test_onecycle_rises_from_1_25th_to_the_peak_at_30_percent_then_falls_to_1_25e4th():
    f = lr_multiplier("onecycle", start=0, warmup=10, total=100)  # warmup does not apply to one-cycle
    assert f(0) == pytest.approx(ONECYCLE_START) == pytest.approx(1 / 25)
    assert f(30) == pytest.approx(1.0)
    rise, fall = [f(s) for s in range(31)], [f(s) for s in range(30, 101)]
    assert all(a < b for a, b in zip(rise, rise[1:])) and all(a > b for a, b in zip(fall, fall[1:]))
    assert max(f(s) for s in range(101)) == pytest.approx(1.0)
    assert f(100) == pytest.approx(ONECYCLE_END, rel=1e-9) and ONECYCLE_END == pytest.approx(1 / 25e4)
    assert f(65) == pytest.approx((1.0 + ONECYCLE_END) / 2)  # half-way down the cosine

    late = lr_multiplier("onecycle", start=20, warmup=1, total=100)  # span 80: peak at 20 + 24
    assert all(late(s) == 0.0 for s in range(20))
    assert late(20) == pytest.approx(1 / 25) and late(44) == pytest.approx(1.0)
    assert late(43) < 1.0 and late(45) < 1.0 and late(100) == pytest.approx(1 / 25e4)


def test_constant_warms_up_then_stays_flat():
    f = lr_multiplier("constant", start=0, warmup=4, total=100)
    assert [f(s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert f(99) == 1.0 and f(100) == 1.0
    g = lr_multiplier("constant", start=10, warmup=1, total=100)
    assert g(9) == 0.0 and g(10) == 1.0 and g(100) == 1.0


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_a_group_starting_at_step_k_is_off_before_k(schedule):
    f = lr_multiplier(schedule, start=37, warmup=5, total=100)
    assert all(f(s) == 0.0 for s in range(37)) and f(37) > 0 and all(f(s) > 0 for s in range(37, 100))


def test_unknown_schedule_is_a_one_line_error():
    with pytest.raises(SftuneError) as exc:
        lr_multiplier("linear", 0, 1, 10)
    assert "cosine, onecycle, constant" in one_line(exc)
    with pytest.raises(SftuneError) as exc:
        build_config(overrides={"train.schedule": "linear"})
    assert "train.schedule" in one_line(exc)


# ----------------------------------------------------------------------------- LRs in a real fit


def test_freeze_unfreeze_group_lrs_step_by_step(small_digits):
    # 30 images / 16 = 2 steps per epoch; 3 epochs = 6 steps; the backbone joins at step 2 with its own warm-up.
    task = make_task("freeze_unfreeze", TrainConfig(lr=0.01, warmup_epochs=1.0), unfreeze_epoch=1, backbone_lr_scale=0.1)
    rec = StepLRs()
    fit(task, small_digits, epochs=3, callbacks=[rec])
    head = lr_multiplier("cosine", start=0, warmup=2, total=6)
    backbone = lr_multiplier("cosine", start=2, warmup=2, total=6)
    assert [s for s, _, _ in rec.steps] == list(range(6))
    for step, groups, backbone_trains in rec.steps:
        assert {n for n, _ in groups} == {"head", "backbone"}
        for name, lr in groups:
            expected = 0.01 * head(step) if name == "head" else 0.001 * backbone(step)
            assert lr == pytest.approx(expected, rel=1e-9, abs=1e-15), (step, name)
        assert backbone_trains == (step >= 2)
    assert [lr for n, lr in rec.steps[1][1] if n == "backbone"] == [0.0, 0.0]
    assert all(lr > 0 for _, lr in rec.steps[2][1])


def test_llrd_group_lrs_follow_onecycle_and_no_decay_on_1d_params(small_digits):
    task = make_task("llrd", TrainConfig(lr=0.01, schedule="onecycle", weight_decay=0.05), decay=0.5)
    n = len(task.backbone.layer_groups())
    rec = StepLRs()
    trainer = fit(task, small_digits, epochs=2, callbacks=[rec])
    curve = lr_multiplier("onecycle", start=0, warmup=2, total=4)
    assert [s for s, _, _ in rec.steps] == [0, 1, 2, 3]
    for step, groups, _ in rec.steps:
        for name, lr in groups:
            scale = 1.0 if name == "head" else 0.5 ** (n - int(name.removeprefix("backbone.layer")))
            assert lr == pytest.approx(0.01 * scale * curve(step), rel=1e-9), (step, name)
    assert rec.steps[0][1][0][1] == pytest.approx(0.01 / 25)

    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        if group["weight_decay"] > 0:
            assert group["weight_decay"] == 0.05 and all(p.ndim > 1 for p in group["params"])
        else:
            assert all(p.ndim <= 1 for p in group["params"])
    all_params = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == len(list(task.parameters()))
    assert any(g["weight_decay"] == 0 for g in optimizer.param_groups)


def test_sgd_is_timm_nesterov_sgd_with_ten_times_the_default_lr(small_digits):
    strategy_default = create_strategy(StrategyConfig(name="full")).default_lr
    assert default_lr(1e-3, "sgd") == pytest.approx(1e-3 * SGD_DEFAULT_LR_FACTOR) and SGD_DEFAULT_LR_FACTOR == 10
    assert default_lr(1e-3, "adamw") == 1e-3
    task = make_task("full", TrainConfig(optimizer="sgd", momentum=0.8, warmup_epochs=0))
    assert task.lr == pytest.approx(10 * strategy_default)
    rec = StepLRs()
    trainer = fit(task, small_digits, epochs=1, callbacks=[rec], limit_train_batches=1, limit_val_batches=0)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is torch.optim.SGD
    assert all(g["nesterov"] and g["momentum"] == 0.8 for g in optimizer.param_groups)
    head_lr = [lr for name, lr in rec.steps[0][1] if name == "head"][0]
    assert head_lr == pytest.approx(10 * strategy_default * lr_multiplier("cosine", 0, 1, 1)(0))
    # An explicit LR is taken as given, also for SGD.
    assert make_task("full", TrainConfig(optimizer="sgd", lr=0.05)).lr == 0.05
    assert make_task("full", TrainConfig()).lr == strategy_default


def test_unknown_optimizer_is_a_one_line_config_error(small_digits, tmp_path):
    with pytest.raises(SftuneError) as exc:
        build_config(overrides={"train.optimizer": "adamww"})
    text = one_line(exc)
    assert text.startswith("config: train.optimizer:") and "did you mean 'adamw'" in text
    out = tmp_path / "run"
    with pytest.raises(SftuneError, match="did you mean 'adamw'") as exc:
        tiny_run(small_digits, out, train__optimizer="adamww", train__epochs=1)
    one_line(exc)
    assert not out.exists() and not B.partial_dir(out).exists()
    assert TrainConfig(optimizer="SGD").optimizer == "sgd" and TrainConfig(optimizer="lamb").optimizer == "lamb"


@pytest.mark.parametrize("schedule", ["onecycle", "constant"])
def test_engine_runs_with_each_schedule(schedule, small_digits, tmp_path, monkeypatch):
    rec = StepLRs()
    with_callbacks(monkeypatch, rec)
    run = tiny_run(small_digits, tmp_path / schedule, strategy="full", train__epochs=2, train__lr=0.01,
                   train__schedule=schedule, train__patience=0, train__warmup_epochs=1.0)
    monkeypatch.undo()
    assert run.metrics["epochs_run"] == 2 and math.isfinite(run.metrics["loss"])
    assert all(math.isfinite(h["train/loss"]) for h in run.metrics["history"])
    assert run.config.train.schedule == schedule
    curve = lr_multiplier(schedule, start=0, warmup=2, total=4)  # 2 steps per epoch, warm-up 1 epoch
    heads = [lr for _, groups, _ in rec.steps for name, lr in groups if name == "head"]
    assert heads[::2] == pytest.approx([0.01 * curve(s) for s in range(4)])  # head: decay + no-decay groups


# ----------------------------------------------------------------------------- mixup / cutmix


def test_mix_batch_keeps_an_odd_last_sample_and_gives_soft_targets():
    from timm.data import Mixup

    mixup = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0, label_smoothing=0.1, num_classes=3)
    torch.manual_seed(0)
    images, labels = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    mixed, targets = classification_module._mix_batch(mixup, images.clone(), labels)
    assert mixed.shape == images.shape and targets.shape == (5, 3)
    assert torch.allclose(targets.sum(-1), torch.ones(5))
    assert torch.equal(mixed[4], images[4]) and targets[4].argmax() == 1 and targets[4].max() == pytest.approx(0.9 + 0.1 / 3)
    assert not torch.equal(mixed[:4], images[:4])
    single, target = classification_module._mix_batch(mixup, images[:1].clone(), labels[:1])  # nothing to mix with
    assert torch.equal(single, images[:1]) and target.shape == (1, 3) and target[0].argmax() == 0


@pytest.fixture
def mix_spy(monkeypatch):
    calls: list[tuple[int, bool]] = []
    original = classification_module._mix_batch

    def spy(mixup, images, labels):
        mixed, targets = original(mixup, images, labels)
        even = len(images) - len(images) % 2
        calls.append((len(images), not torch.equal(mixed[:even], images[:even])))
        assert torch.isfinite(mixed).all() and torch.allclose(targets.sum(-1), torch.ones(len(images)))
        return mixed, targets

    monkeypatch.setattr(classification_module, "_mix_batch", spy)
    return calls


def test_mixup_and_cutmix_train_with_an_odd_last_batch(odd_split, tmp_path, mix_spy):
    run = tiny_run(odd_split, tmp_path / "mix", strategy="full", train__epochs=1, train__mixup=0.2,
                   train__cutmix=1.0, train__lr=0.01)
    assert [n for n, _ in mix_spy] == [16, 15] and any(changed for _, changed in mix_spy)
    assert math.isfinite(run.metrics["history"][0]["train/loss"]) and math.isfinite(run.metrics["loss"])
    assert run.config.train.mixup == 0.2 and run.config.train.cutmix == 1.0


def test_mixup_is_not_applied_to_feature_cached_runs(odd_split, tmp_path, mix_spy):
    run = tiny_run(odd_split, tmp_path / "lp", strategy="linear_probe", strategy__solver="sgd", train__epochs=2,
                   train__mixup=0.2, train__cutmix=1.0)  # sgd: the epochs over cached features this checks
    assert mix_spy == [] and run.metrics["epochs_run"] == 2
    assert all(math.isfinite(h["train/loss"]) for h in run.metrics["history"])


# ----------------------------------------------------------------------------- EMA


class WeightWatch(L.Callback):
    """Raw weights after every optimizer step, and the weights each validation ran with."""

    def __init__(self) -> None:
        self.raw_steps: list[dict[str, torch.Tensor]] = []
        self.raw_at_epoch_end: dict[int, dict[str, torch.Tensor]] = {}
        self.validated: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.raw_steps.append(state)
        self.raw_at_epoch_end[trainer.current_epoch] = state

    def on_validation_epoch_start(self, trainer, module):  # runs after the EMA callback swapped its weights in
        self.validated[trainer.current_epoch] = {k: v.detach().clone() for k, v in module.state_dict().items()}


def bundle_key(key: str) -> str:
    """model.safetensors key -> the task's state-dict key."""
    return "backbone.model." + key[len("backbone."):] if key.startswith("backbone.") else key


EMA_RUN = dict(strategy="full", train__epochs=2, train__lr=0.01, train__ema=True, train__ema_decay=0.9,
               train__patience=0, trainer__inference_precision="32")


@pytest.fixture(scope="module")
def ema_reference(odd_split, tmp_path_factory):
    watch = WeightWatch()
    mp = pytest.MonkeyPatch()
    try:
        with_callbacks(mp, watch)
        run = tiny_run(odd_split, tmp_path_factory.mktemp("ema") / "run", **EMA_RUN)
    finally:
        mp.undo()
    return run, watch


def test_ema_bundle_holds_the_averaged_weights_validation_used(ema_reference, odd_split):
    run, watch = ema_reference
    best = run.metrics["best_epoch"]
    bundle = load_file(str(run.path / B.WEIGHTS))
    validated, raw = watch.validated[best], watch.raw_at_epoch_end[best]
    for key, value in bundle.items():
        assert torch.equal(value, validated[bundle_key(key)]), key
    floats = [k for k, v in bundle.items() if v.is_floating_point()]
    assert any(not torch.equal(bundle[k], raw[bundle_key(k)]) for k in floats), "EMA weights must differ from the raw ones"

    # The average is timm-style warmed-up EMA of the raw step weights: decay min(0.9, (1 + n) / (10 + n)).
    steps = watch.raw_steps[: 2 * (best + 1)]
    for key in ("head.fc.weight", "backbone.model.conv_stem.weight", "backbone.model.bn1.running_mean"):
        average = steps[0][key].clone()
        for n, state in enumerate(steps[1:], start=1):
            d = min(0.9, (1.0 + n) / (10.0 + n))
            average = average * d + state[key] * (1 - d)
        torch.testing.assert_close(validated[key], average, atol=1e-6, rtol=1e-5)

    # Validation's accuracy (EMA weights) is what the loaded bundle scores on the same val images.
    evaluated = sftune.load(run.path, device="cpu", precision="32").evaluate(odd_split / "val")
    assert run.metrics["history"][best]["val/acc"] == pytest.approx(evaluated["acc"], abs=1e-6)
    assert json.loads((run.path / B.METRICS).read_text())["acc"] == pytest.approx(evaluated["acc"], abs=1e-6)


def test_ema_resume_finishes_like_an_uninterrupted_run(ema_reference, odd_split, tmp_path, monkeypatch):
    reference, _ = ema_reference

    class Crash(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise RuntimeError("simulated crash")

    out = tmp_path / "crashy"
    with monkeypatch.context() as m:
        with_callbacks(m, Crash())
        with pytest.raises(RuntimeError, match="simulated crash"):
            tiny_run(odd_split, out, **EMA_RUN)
    ckpt = torch.load(B.partial_dir(out) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0 and "current_model_state" in ckpt  # raw weights kept next to the averaged ones
    resumed = sftune.finetune(out=out, resume=True)
    assert resumed.metrics["epochs_run"] == 2 and resumed.config.train.ema
    assert resumed.metrics["acc"] == pytest.approx(reference.metrics["acc"], abs=1e-6)
    assert resumed.metrics["loss"] == pytest.approx(reference.metrics["loss"], rel=1e-4)
    a, b = load_file(str(reference.path / B.WEIGHTS)), load_file(str(resumed.path / B.WEIGHTS))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=key)


# ----------------------------------------------------------------------------- gradient clipping


class GradNorms(L.Callback):
    """The global L2 norm of the gradients each optimizer step used: after the step Lightning leaves
    them in ``.grad`` (they are zeroed before the next training step), clipped if clipping is on."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_grad_clip_bounds_the_global_gradient_norm(odd_split, tmp_path, monkeypatch, clip):
    watch = GradNorms()
    with_callbacks(monkeypatch, watch)
    tiny_run(odd_split, tmp_path / "run", strategy="full", train__epochs=1, train__patience=0, train__grad_clip=clip)
    assert watch.norms, "no optimizer step was seen"
    if clip is None:  # the tiny model's raw gradients are far above 1e-3: the bound below is the clipping's doing
        assert min(watch.norms) > 1e-2
    else:
        assert max(watch.norms) <= clip * (1 + 1e-4)


def test_grad_clip_must_be_positive():
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0)


def test_grad_clip_with_fsdp_is_refused_in_one_line():
    from sftune import engine

    config = build_config(overrides={"train.grad_clip": 1.0, "trainer.distributed": "fsdp"})
    with pytest.raises(SftuneError, match=r"train.grad_clip \(1\) cannot be used with trainer.distributed='fsdp'") as e:
        engine._check_trainer_settings(config)
    assert "\n" not in str(e.value)
