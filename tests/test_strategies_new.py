"""LoRA, WiSE-FT and auto: what trains, what the bundle holds, resume (tiny random timm model, real digits)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import sftune
from sftune import bundle as B
from sftune.config import StrategyConfig, TrainConfig, build_config, dump_yaml
from sftune.errors import SftuneError
from sftune.strategies import create_strategy
from sftune.strategies.auto import Automatic
from sftune.strategies.wise_ft import interpolate
from sftune.tasks import Classifier

from conftest import tiny_run, with_callbacks, write_digits


# ----------------------------------------------------------------------------- helpers


pytestmark = pytest.mark.usefixtures("one_thread")


def make_task(strategy_name: str, **options) -> Classifier:
    from sftune.backbones import Backbone

    torch.manual_seed(0)
    backbone = Backbone(timm.create_model("test_efficientnet", pretrained=False), "test_efficientnet", "test")
    strategy = create_strategy(StrategyConfig(name=strategy_name, **options))
    return Classifier(backbone, 3, strategy, TrainConfig(lr=0.01, warmup_epochs=0), drop_rate=0.0)


class Capture(L.Callback):
    """Keeps the engine's in-memory task (after the run it holds the bundle's best weights)."""

    module = None

    def setup(self, trainer, pl_module, stage):
        self.module = pl_module


class Crash(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def crash_then_resume(monkeypatch, data: Path, out: Path, crash_epoch: int, before_resume=None, **overrides):
    """A run that dies at the end of ``crash_epoch`` (its checkpoint is the previous epoch's), then --resume."""
    with monkeypatch.context() as m:
        with_callbacks(m, Crash(crash_epoch))
        with pytest.raises(RuntimeError, match="simulated crash"):
            tiny_run(data, out, **overrides)
    assert not out.exists() and (B.partial_dir(out) / "checkpoints" / "last.ckpt").is_file()
    if before_resume:
        before_resume(B.partial_dir(out))
    return sftune.finetune(out=out, resume=True)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


def lora_names(module: torch.nn.Module) -> set[str]:
    return {n for n, _ in module.named_parameters() if ".lora_" in n}


# ----------------------------------------------------------------------------- LoRA


def test_lora_explicit_targets_and_a_target_that_matches_nothing(small_digits, tmp_path):
    task = make_task("lora", targets=["conv_pwl"], rank=2)
    adapted = {n.split(".lora_")[0] for n in lora_names(task.backbone.model)}
    plain = timm.create_model("test_efficientnet", pretrained=False)
    assert adapted == {n for n, _ in plain.named_modules() if n.endswith(".conv_pwl")}

    with pytest.raises(SftuneError) as exc:
        make_task("lora", targets=["no_such_layer"])
    assert "targets" in one_line(exc) and "no_such_layer" in str(exc.value)

    run = tiny_run(small_digits, tmp_path / "pwl", strategy="lora", strategy__targets=["conv_pwl"], train__epochs=1)
    adapter_keys = [k for k in load_file(str(run.path / B.ADAPTERS)) if k.startswith("backbone.")]
    assert adapter_keys and {k[len("backbone."):].split(".lora_")[0] for k in adapter_keys} == adapted
    assert yaml.safe_load((run.path / B.CONFIG).read_text())["strategy"]["targets"] == ["conv_pwl"]

    out = tmp_path / "bad-targets"
    with pytest.raises(SftuneError) as exc:  # the engine: same one-line error, no folder left behind
        tiny_run(small_digits, out, strategy="lora", strategy__targets=["no_such_layer"], train__epochs=1)
    assert "no_such_layer" in one_line(exc)
    assert not out.exists() and not B.partial_dir(out).exists()


class LoraWatch(Capture):
    """The task at setup (its backbone before any step) and, at every training step, what may train."""

    def setup(self, trainer, pl_module, stage):
        super().setup(trainer, pl_module, stage)
        self.initial = {k: v.detach().clone() for k, v in pl_module.backbone.model.state_dict().items()}
        self.trainable: list[set[str]] = []
        self.bn_training: list[bool] = []
        self.group_names: set[str] = set()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.trainable.append({n for n, p in module.named_parameters() if p.requires_grad})
        self.bn_training += [m.training for m in module.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.group_names |= {g["name"] for g in trainer.optimizers[0].param_groups}


@pytest.fixture(scope="module")
def lora_reference(small_digits, tmp_path_factory):
    """An uninterrupted 2-epoch LoRA run plus its in-memory task (holding the bundle's best weights)."""
    watch = LoraWatch()
    mp = pytest.MonkeyPatch()
    try:
        with_callbacks(mp, watch)
        run = tiny_run(small_digits, tmp_path_factory.mktemp("lora") / "run", strategy="lora", train__epochs=2,
                       train__lr=0.01, train__patience=0)
    finally:
        mp.undo()
    return run, watch.module, watch


def test_lora_trains_only_adapters_and_head_and_leaves_the_backbone_bit_identical(lora_reference):
    _, task, watch = lora_reference
    model = task.backbone.model
    adapters = lora_names(model)
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    expected = {f"backbone.model.{n}" for n in adapters} | {f"head.{n}" for n, _ in task.head.named_parameters()}
    assert watch.trainable and all(s == expected for s in watch.trainable)
    assert watch.bn_training and not any(watch.bn_training), "BatchNorm keeps its pretrained statistics under LoRA"
    assert watch.group_names == {"head", "adapters"}

    before, after = watch.initial, model.state_dict()
    frozen = [k for k in before if ".lora_" not in k]
    assert any(".base_layer." in k for k in frozen) and any("running_mean" in k for k in frozen)
    changed = [k for k in frozen if not torch.equal(before[k], after[k])]
    assert not changed, f"non-adapter backbone tensors moved: {changed[:5]}"
    assert any(not torch.equal(before[k], after[k]) for k in before if ".lora_B." in k), "adapters must train"


def test_lora_bundle_holds_merged_plain_timm_weights_with_the_same_logits(lora_reference):
    run, task, _ = lora_reference
    tensors = load_file(str(run.path / B.WEIGHTS))
    assert not [k for k in tensors if "lora_" in k or "base_layer" in k]

    # Readable by plain timm: exactly the architecture's keys, strict.
    plain = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    plain.load_state_dict({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}, strict=True)

    # The merged weights really carry the adapters (W + B A scale differs from W).
    deltas = []
    for name, module in task.backbone.model.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            deltas.append((tensors[f"backbone.{name}.weight"] - module.base_layer.weight.detach()).abs().max().item())
    assert deltas and max(deltas) > 1e-5

    torch.manual_seed(1)
    batch = torch.randn(6, 3, 32, 32)
    task.eval()
    loaded = sftune.load(run.path, device="cpu", precision="32")
    with torch.no_grad():
        expected = task(batch)
        got = loaded.model(batch)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    data_path = json.loads((run.path / B.LINEAGE).read_text())["data"]["path"]
    assert loaded.evaluate(Path(data_path))["n"] == 36


def test_lora_adapters_file_and_metrics(lora_reference):
    run, task, _ = lora_reference
    adapters = load_file(str(run.path / B.ADAPTERS))
    head = {f"head.{k}" for k in task.head.state_dict()}
    backbone_keys = {k for k in adapters if k.startswith("backbone.")}
    assert set(adapters) == backbone_keys | head
    assert backbone_keys == {f"backbone.{k}" for k in task.backbone.model.state_dict() if ".lora_" in k}
    assert all(".lora_" in k for k in backbone_keys)
    live = task.backbone.model.state_dict()
    assert all(torch.equal(adapters[k], live[k[len("backbone."):]]) for k in backbone_keys)
    with safe_open(str(run.path / B.ADAPTERS), "pt") as f:
        peft_config = json.loads(f.metadata()["peft_config"])
    assert peft_config["name"] == "lora" and peft_config["rank"] == 8

    metrics = run.metrics
    assert metrics == json.loads((run.path / B.METRICS).read_text()) | {"history": metrics["history"]}
    assert metrics["strategy"] == "lora"
    adapter_count = sum(p.numel() for n, p in task.named_parameters() if ".lora_" in n)
    head_count = sum(p.numel() for p in task.head.parameters())
    assert metrics["trainable_parameters"] == adapter_count + head_count
    assert metrics["total_parameters"] == sum(p.numel() for p in task.parameters())
    assert "strategy_choice" not in metrics and "lora" not in metrics  # no auto choice, no after_fit report
    assert yaml.safe_load((run.path / B.CONFIG).read_text())["strategy"]["name"] == "lora"
    assert json.loads((run.path / B.LINEAGE).read_text())["strategy"] == {"requested": "lora", "chosen": "lora"}


def test_lora_resume_finishes_like_an_uninterrupted_run(lora_reference, small_digits, tmp_path, monkeypatch):
    reference, _, _ = lora_reference
    resumed = crash_then_resume(monkeypatch, small_digits, tmp_path / "crashy", crash_epoch=1, strategy="lora",
                                train__epochs=2, train__lr=0.01, train__patience=0)
    assert resumed.metrics["epochs_run"] == 2 and [h["epoch"] for h in resumed.metrics["history"]] == [0, 1]
    assert resumed.metrics["acc"] == pytest.approx(reference.metrics["acc"], abs=1e-6)
    assert resumed.metrics["loss"] == pytest.approx(reference.metrics["loss"], rel=1e-4)
    a, b = load_file(str(reference.path / B.WEIGHTS)), load_file(str(resumed.path / B.WEIGHTS))
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert load_file(str(resumed.path / B.ADAPTERS)).keys() == load_file(str(reference.path / B.ADAPTERS)).keys()


# ----------------------------------------------------------------------------- WiSE-FT


def test_interpolate_math():
    start = {"w": torch.tensor([0.0, 2.0, -4.0]), "n": torch.tensor(3), "h": torch.tensor([[1.0]], dtype=torch.float64)}
    end = {"w": torch.tensor([4.0, 2.0, 4.0]), "n": torch.tensor(10), "h": torch.tensor([[3.0]], dtype=torch.float64)}
    zero, one, half = (interpolate(start, end, a) for a in (0.0, 1.0, 0.5))
    assert torch.equal(zero["w"], start["w"]) and torch.equal(one["w"], end["w"])
    assert torch.equal(half["w"], torch.tensor([2.0, 2.0, 0.0]))
    assert torch.equal(interpolate(start, end, 0.25)["w"], torch.tensor([1.0, 2.0, -2.0]))
    assert half["h"].dtype == torch.float64 and half["h"].item() == 2.0
    for mixed in (zero, one, half):  # integer buffers (BatchNorm's num_batches_tracked) come from the end
        assert mixed["n"].item() == 10 and mixed["n"].dtype == torch.int64
    assert set(half) == set(end)


def test_wise_ft_after_fit_evaluates_the_grid_and_keeps_the_chosen_mix():
    from sftune.strategies.wise_ft import WeightSpaceEnsemble

    task = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        task.weight.fill_(1.0)  # the fine-tuned end; the start is 0
    start = {"weight": torch.zeros(1, 1)}
    finetuned = {k: v.clone() for k, v in task.state_dict().items()}

    def evaluate():  # accuracy peaks where the weight is 0.6
        w = task.weight.item()
        return {"acc": 1 - (w - 0.6) ** 2, "f1": 1 - abs(w - 0.6)}

    report = WeightSpaceEnsemble(alpha="val").after_fit(task, start, evaluate)
    assert report["alpha"] == 0.5 and report["chosen_on"] == "val" and task.weight.item() == 0.5
    assert [s["alpha"] for s in report["alphas"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert report["alphas"][2] == {"alpha": 0.5, "acc": pytest.approx(0.99), "f1": pytest.approx(0.9)}

    task.load_state_dict(finetuned)
    report = WeightSpaceEnsemble(alpha=0.3, alphas=[0.0, 1.0]).after_fit(task, start, evaluate)
    assert [s["alpha"] for s in report["alphas"]] == [0.0, 0.3, 1.0]  # a fixed alpha is evaluated too
    assert report["alpha"] == 0.3 and report["chosen_on"] == "config"
    assert task.weight.item() == pytest.approx(0.3)

    task.load_state_dict(finetuned)
    tie = WeightSpaceEnsemble(alpha="val", alphas=[0.0, 1.0]).after_fit(task, start, lambda: {"acc": 0.5, "f1": 0.5})
    assert tie["alpha"] == 1.0  # equal scores: the fine-tuned side
    with pytest.raises(SftuneError) as exc:
        WeightSpaceEnsemble().after_fit(task, None, evaluate)
    assert "start.safetensors" in one_line(exc)


def test_wise_ft_rejects_weights_outside_0_1(small_digits, tmp_path):
    for options in ({"alpha": 1.5}, {"alpha": -0.1}, {"alphas": [0.0, 2.0]}):
        strategy = create_strategy(StrategyConfig(name="wise_ft", **options))
        with pytest.raises(SftuneError) as exc:
            strategy.check(epochs=2)
        assert "[0, 1]" in one_line(exc)
    with pytest.raises(SftuneError) as exc:
        create_strategy(StrategyConfig(name="wise_ft", alpha="best"))
    assert "strategy.alpha" in one_line(exc)
    out = tmp_path / "bad-alpha"
    with pytest.raises(SftuneError) as exc:
        tiny_run(small_digits, out, strategy="wise_ft", strategy__alpha=1.5, train__epochs=1)
    assert "alpha" in one_line(exc) and not out.exists() and not B.partial_dir(out).exists()


def test_wise_ft_reports_the_alpha_grid_and_picks_the_best_on_val(small_digits, tmp_path):
    run = tiny_run(small_digits, tmp_path / "wise", strategy="wise_ft", strategy__alpha="val", train__epochs=1,
                   train__lr=0.01, trainer__inference_precision="32")
    report = json.loads((run.path / B.METRICS).read_text())["wise_ft"]
    grid = report["alphas"]
    assert [s["alpha"] for s in grid] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(0 <= s["acc"] <= 1 and 0 <= s["f1"] <= 1 for s in grid)
    best = max(grid, key=lambda s: (s["acc"], s["alpha"]))
    assert report["alpha"] == best["alpha"] and report["chosen_on"] == "val"
    assert max(s["acc"] for s in grid) == next(s["acc"] for s in grid if s["alpha"] == report["alpha"])
    # The bundle holds the chosen interpolation: its final val accuracy is the grid's at that alpha.
    assert run.metrics["acc"] == pytest.approx(best["acc"], abs=1e-6)
    assert run.metrics["strategy"] == "wise_ft"
    assert (run.path / "checkpoints" / "start.safetensors").is_file()


def test_wise_ft_resume_uses_the_saved_start_weights(small_digits, tmp_path, monkeypatch):
    tampered: dict[str, torch.Tensor] = {}

    def tamper(work: Path) -> None:
        # Change the saved start (the probe's head) so the resumed run can only match it by reading the file.
        path = work / "checkpoints" / "start.safetensors"
        state = load_file(str(path))
        assert "head.fc.weight" in state and any(k.startswith("backbone.model.") for k in state)
        state["head.fc.weight"] = state["head.fc.weight"] * 3 + 0.5
        save_file(state, str(path))
        tampered.update(state)

    run = crash_then_resume(monkeypatch, small_digits, tmp_path / "wise", crash_epoch=1, before_resume=tamper,
                            strategy="wise_ft", strategy__alpha=0.0, train__epochs=2, train__lr=0.01)
    assert run.metrics["wise_ft"]["alpha"] == 0.0 and run.metrics["wise_ft"]["chosen_on"] == "config"
    weights = load_file(str(run.path / B.WEIGHTS))
    assert torch.equal(weights["head.fc.weight"], tampered["head.fc.weight"])
    for key, value in weights.items():
        start_key = "backbone.model." + key[len("backbone."):] if key.startswith("backbone.") else key
        if value.is_floating_point():
            assert torch.equal(value, tampered[start_key]), key  # alpha 0: exactly the start
        else:
            assert value.item() > tampered[start_key].item(), key  # BN counters: from the fine-tuned end


# ----------------------------------------------------------------------------- auto


def test_auto_rule_table():
    auto = Automatic()
    assert auto.choose(300, 3, 0.95, epochs=10).strategy == "linear_probe"  # strong probe, 100 per class
    assert auto.choose(300, 3, 0.95, epochs=1).strategy == "linear_probe"
    weak = auto.choose(300, 3, 0.5, epochs=10)
    assert weak.strategy == "freeze_unfreeze" and weak.options == {"unfreeze_epoch": 3}
    assert auto.choose(300, 3, 0.5, epochs=1).strategy == "full"
    assert auto.choose(3000, 3, 0.99, epochs=10).strategy == "llrd"  # 1000 per class: many
    assert auto.choose(3000, 3, 0.1, epochs=1).strategy == "llrd"
    # Boundaries: per class < few_per_class is few, probe >= strong_probe is strong.
    assert auto.choose(600, 3, 0.85, epochs=5).strategy == "llrd"
    assert auto.choose(597, 3, 0.85, epochs=5).strategy == "linear_probe"
    assert auto.choose(597, 3, 0.849, epochs=5).strategy == "freeze_unfreeze"
    assert Automatic(strong_probe=0.99, few_per_class=10).choose(300, 3, 0.95, 5).strategy == "llrd"
    # The unfreeze epoch always fits the budget.
    from sftune.strategies.freeze_unfreeze import FreezeUnfreeze

    for epochs in range(2, 40):
        choice = auto.choose(300, 3, 0.2, epochs)
        assert 1 <= choice.options["unfreeze_epoch"] < epochs
        FreezeUnfreeze(**choice.options).check(epochs)
    report = weak.to_dict()
    assert report["requested"] == "auto" and report["chosen"] == "freeze_unfreeze" and report["train_size"] == 300
    assert "100 per class" in report["why"]


@pytest.fixture(scope="module")
def mislabeled_val(tmp_path_factory) -> Path:
    """train/<c>/ holds digit c (10 each); val/<c>/ holds digit c+1 (2 each): any probe scores ~0 on val."""
    import shutil

    src = write_digits(tmp_path_factory.mktemp("mislabeled_src") / "all", per_class=12)
    root = tmp_path_factory.mktemp("mislabeled") / "data"
    for c in range(3):
        files = sorted((src / str(c)).iterdir())
        for split, label, chunk in (("train", c, files[:10]), ("val", (c - 1) % 3, files[10:])):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            for f in chunk:
                shutil.copy(f, root / split / str(label) / f.name)
    return root


def test_auto_run_records_the_chosen_strategy(mislabeled_val, tmp_path):
    # Few examples per class and a weak probe (val labels are shifted): freeze_unfreeze, fitted to 2 epochs.
    run = tiny_run(mislabeled_val, tmp_path / "auto", strategy="auto", train__epochs=2, train__patience=0)
    metrics = json.loads((run.path / B.METRICS).read_text())
    choice = metrics["strategy_choice"]
    assert choice["requested"] == "auto" and choice["chosen"] == "freeze_unfreeze", choice
    assert choice["options"] == {"unfreeze_epoch": 1} and choice["train_size"] == 30 and choice["num_classes"] == 3
    assert 0 <= choice["probe_acc"] < 0.85
    assert metrics["strategy"] == "freeze_unfreeze" and metrics["epochs_run"] == 2

    config = yaml.safe_load((run.path / B.CONFIG).read_text())
    assert config["strategy"] == {"name": "freeze_unfreeze", "unfreeze_epoch": 1}
    lineage = json.loads((run.path / B.LINEAGE).read_text())
    assert lineage["strategy"]["chosen"] == "freeze_unfreeze" and lineage["strategy"]["requested"] == "auto"
    assert run.config.strategy.name == "freeze_unfreeze"
    assert sftune.load(run.path).evaluate(mislabeled_val / "train")["n"] == 30


def test_resume_accepts_the_original_auto_command(small_digits, tmp_path):
    from sftune.engine import _resumed_config

    out = tmp_path / "run"
    work = B.partial_dir(out)
    work.mkdir(parents=True)
    saved = build_config(overrides={"data.path": str(small_digits), "strategy.name": "freeze_unfreeze",
                                    "strategy.unfreeze_epoch": 1, "train.epochs": 2})
    (work / B.CONFIG).write_text(dump_yaml(saved))
    again = build_config(overrides={"data.path": str(small_digits), "strategy.name": "auto", "train.epochs": 2})
    assert _resumed_config(out, again).strategy.name == "freeze_unfreeze"
