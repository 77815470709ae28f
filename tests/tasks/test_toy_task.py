"""The proof that the task seam is real: a task defined only in this module runs end to end.

``image_brightness`` regresses each image's mean brightness (times ``task.scale``) from the
pooled features of a tiny timm backbone. Everything it needs -- its typed options, a
pipeline that finds images in a flat folder and splits them, a TaskModule with a linear head
and an MSE loss, its monitored metric (val/mae, min), the bundle's weights, metrics and
report, and a predictor -- lives here. It is registered in ``TASKS`` by a fixture (and
unregistered afterwards); ``sftune.finetune`` / ``sftune.load`` / ``sftune.evaluate``, the
config validation, ``--task`` and ``sftune tasks`` reach it through the registry alone, and no
file under ``src/`` knows its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sftune
from sftune import bundle as B
from sftune.errors import SftuneError
from sftune.pipelines.base import Pipeline
from sftune.tasks import TASKS, Task, TaskModule, TaskOptions

NAME = "image_brightness"
MARKER = "BRIGHTNESS"  # a data folder holding this file is claimed by the toy task under task=auto
SIZE = 32  # px, square
N_IMAGES = 60  # every 5th is validation: 48 train / 12 val
# The run must actually learn. On 20 fresh images (another seed): Pearson r of predictions vs true
# brightness above MIN_CORRELATION, and a mean absolute error below MAX_MAE_VS_BASELINE x that of
# always predicting the mean brightness (0.45 at scale 2). The run below reaches r 0.99 and
# 0.11 x the baseline (train seeds 0-3: r 0.94-0.996, at most 0.36 x the baseline).
MIN_CORRELATION = 0.9
MAX_MAE_VS_BASELINE = 0.5

pytestmark = pytest.mark.usefixtures("one_thread")


# =============================================================================== the toy task


class BrightnessOptions(TaskOptions):
    scale: float = Field(1.0, gt=0, description="target = scale x mean brightness in [0, 1]")


def read_image(path: Path, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(3, SIZE, SIZE) normalized tensor and the image's mean brightness in [0, 1]."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32) / 255.0
    x = torch.from_numpy(rgb).permute(2, 0, 1)
    return (x - mean[:, None, None]) / std[:, None, None], float(rgb.mean())


def find_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise SftuneError(f"{NAME}: '{root}' is not a folder of images")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(files) < 5:
        raise SftuneError(f"{NAME}: '{root}' holds {len(files)} images; need at least 5")
    return files


@dataclass
class BrightnessData:
    train: list[Path]
    val: list[Path]
    skipped: list[tuple[str, str]]
    classes: tuple[str, ...] = ()  # no classes: a regression


class BrightnessBatches(L.LightningDataModule):
    def __init__(self, train: TensorDataset, val: TensorDataset, batch_size: int) -> None:
        super().__init__()
        self.train_set, self.val_set, self.batch_size = train, val, batch_size

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(int(self.trainer.current_epoch) if self.trainer else 0)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64)


class BrightnessPipeline(Pipeline):
    """A flat folder of images; every 5th (sorted by name) is validation."""

    kind = "images"

    def __init__(self, config: Any, workers: int, log: Callable[[str], None], options: BrightnessOptions) -> None:
        super().__init__(config, workers, log)
        self.options = options

    def load(self) -> None:
        from sftune.backbones import create_backbone

        files = find_images(self.config.data.path)
        val = files[::5]
        self.data = BrightnessData([f for f in files if f not in val], val, [])
        self.backbone = create_backbone(self.config.model.name, pretrained=self.config.model.pretrained,
                                        arch=self.config.model.arch)
        self.config.model.arch = self.backbone.arch  # config.yaml: enough to rebuild without weights
        cfg = self.backbone.data_config()
        self.mean, self.std = torch.tensor(cfg["mean"]), torch.tensor(cfg["std"])

    def _tensors(self, files: list[Path]) -> TensorDataset:
        pairs = [read_image(f, self.mean, self.std) for f in files]
        targets = torch.tensor([b for _, b in pairs], dtype=torch.float32) * self.options.scale
        return TensorDataset(torch.stack([x for x, _ in pairs]), targets)

    def datamodule(self) -> BrightnessBatches:
        return BrightnessBatches(self._tensors(self.data.train), self._tensors(self.data.val),
                                 self.config.train.batch_size)

    def describe(self) -> str:
        return f"{len(self.data.train)} train / {len(self.data.val)} val images (brightness targets)"

    def lineage(self) -> dict[str, Any]:
        return {"path": str(Path(self.config.data.path).absolute()), "train_images": len(self.data.train),
                "val_images": len(self.data.val)}


class BrightnessModule(TaskModule):
    """pooled backbone features (B, F) -> linear -> (B,) brightness; MSE loss, val MAE."""

    def __init__(self, backbone: nn.Module, strategy: Any, train_cfg: Any) -> None:
        super().__init__(strategy, train_cfg)
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, 1)
        self._abs_errors: list[torch.Tensor] = []
        self.setup_strategy()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone_features(images)).squeeze(-1)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def training_losses(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        images, targets = batch
        return {"mse": F.mse_loss(self(images), targets)}, len(targets)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        predicted = self(images)
        self._abs_errors.append((predicted - targets).abs().detach())
        self.log("val/loss", F.mse_loss(predicted, targets), on_epoch=True, batch_size=len(targets))

    def on_validation_epoch_end(self) -> None:
        self.log("val/mae", torch.cat(self._abs_errors).mean())
        self._abs_errors.clear()


@dataclass
class BrightnessPrediction:
    path: str
    brightness: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "brightness": self.brightness}

    def json_records(self) -> list[dict[str, Any]]:  # `sftune predict --json`
        return [self.to_dict()]

    table_columns = ("image", "brightness")  # `sftune predict`'s table

    def table_row(self) -> tuple[str, str]:
        return self.path, f"{self.brightness:.3f}"


@dataclass
class BrightnessOutputs:
    predicted: torch.Tensor  # (N,)
    target: torch.Tensor  # (N,)
    skipped: list[tuple[str, str]]

    def headline(self) -> dict[str, Any]:
        r = float(torch.corrcoef(torch.stack([self.predicted, self.target]))[0, 1])
        return {"mae": float((self.predicted - self.target).abs().mean()), "pearson_r": r, "n": len(self.target)}


class BrightnessPredictor:
    """A bundle of the toy task: its own weights layout read back through sftune.bundle."""

    modality = "images"
    items_are_files = True

    def __init__(self, path: Path, device: str | None, precision: str, scale: float) -> None:
        from sftune.config import load_yaml, validate

        self.path = B.check_bundle(path)
        self.scale = scale
        config = validate(load_yaml(self.path / B.CONFIG), source=str(self.path / B.CONFIG))
        self.backbone, head_state = B.read_bundle_model(self.path, config.model.arch, source=config.model.name)
        self.head = nn.Linear(self.backbone.num_features, 1)
        self.head.load_state_dict(head_state)
        self.backbone.eval()
        self.head.eval()
        cfg = self.backbone.data_config()
        self.mean, self.std = torch.tensor(cfg["mean"]), torch.tensor(cfg["std"])

    @torch.inference_mode()
    def _run(self, files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [read_image(f, self.mean, self.std) for f in files]
        images = torch.stack([x for x, _ in pairs])
        predicted = self.head(self.backbone(images)).squeeze(-1)
        return predicted, torch.tensor([b for _, b in pairs]) * self.scale

    def predict(self, paths: list[str | Path]) -> list[BrightnessPrediction]:
        files = [Path(p) for p in paths]
        predicted, _ = self._run(files)
        return [BrightnessPrediction(str(f), float(v)) for f, v in zip(files, predicted)]

    def run_cli(self, given: Any) -> list[BrightnessPrediction]:
        given.refuse(self.path, "reads images (pass image files)", **{"--text": given.texts, "--file": given.text_file,
                                                                     "--out-dir": given.out_dir})
        return self.predict(list(given.paths))

    def outputs(self, data: str | Path | list[Path], **_: Any) -> BrightnessOutputs:
        files = data if isinstance(data, list) else find_images(data)
        predicted, target = self._run(files)
        return BrightnessOutputs(predicted, target, [])

    def evaluate(self, data: str | Path, **_: Any) -> dict[str, Any]:
        return self.outputs(data).headline()


class ImageBrightness(Task):
    name = NAME
    modality = "images"
    summary = "toy: images -> mean brightness (regression), defined in a test"
    Options = BrightnessOptions
    monitor = ("val/mae", "min")
    metrics = {"val/mae": "min", "val/loss": "min"}
    backbone_output = "pooled"
    caches_features = False
    continual = False
    default_model = "timm:test_efficientnet"
    detect_priority = 100
    options: BrightnessOptions

    @classmethod
    def claims(cls, config: Any) -> bool:
        return bool(config.data.path) and (Path(config.data.path) / MARKER).is_file()

    def pipeline(self, config: Any, workers: int, log: Callable[[str], None]) -> BrightnessPipeline:
        return BrightnessPipeline(config, workers, log, self.options)

    def refusal(self, strategy: Any) -> str | None:
        if strategy.probes_head:
            return "a closed-form class probe does not fit a regression head"
        return None

    def module(self, pipeline: BrightnessPipeline, strategy: Any, config: Any) -> BrightnessModule:
        return BrightnessModule(pipeline.backbone, strategy, config.train)

    def save_model(self, work: Path, module: BrightnessModule, pipeline: BrightnessPipeline, datamodule: Any,
                   strategy: Any, config: Any) -> None:
        B.save_weights(work / B.WEIGHTS, module.backbone.weights(), module.head.state_dict(),
                       metadata={"format": str(B.BUNDLE_FORMAT), "arch": pipeline.backbone.arch})
        B.atomic_write_json(work / B.LABELS, {"target": "mean brightness", "scale": self.options.scale})

    def final_outputs(self, work: Path, module: BrightnessModule, datamodule: Any, pipeline: BrightnessPipeline,
                      config: Any, workers: int) -> BrightnessOutputs:
        return self.load_predictor(work, "cpu", "32").outputs(pipeline.data.val)

    def write_report(self, work: Path, final: Path, outputs: BrightnessOutputs, pipeline: BrightnessPipeline,
                     config: Any) -> None:
        B.atomic_write_json(work / "report.json", {"task": NAME, "bundle": str(final), "metrics": outputs.headline()})

    def load_predictor(self, path: Path, device: str | None, precision: str) -> BrightnessPredictor:
        return BrightnessPredictor(path, device, precision, self.options.scale)


# =============================================================================== fixtures


@pytest.fixture
def toy_task():
    """ImageBrightness in TASKS for one test; removed afterwards (even when the test fails)."""
    assert NAME not in TASKS
    TASKS.register(NAME)(ImageBrightness)
    try:
        yield ImageBrightness
    finally:
        TASKS._items.pop(NAME, None)


def write_brightness_folder(root: Path, n: int = N_IMAGES, seed: int = 0) -> Path:
    """n flat PNGs with brightness spread evenly over 0.08..0.92, each with its own texture."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    levels = np.linspace(0.08, 0.92, n)
    rng.shuffle(levels)
    for i, level in enumerate(levels):
        texture = rng.normal(0.0, 0.06, size=(SIZE, SIZE, 3))
        tint = rng.uniform(-0.04, 0.04, size=3)  # a little colour, so brightness is not one channel
        pixels = np.clip(level + tint + texture, 0, 1)
        Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="RGB").save(root / f"im_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def brightness_dir(tmp_path_factory) -> Path:
    return write_brightness_folder(tmp_path_factory.mktemp("brightness") / "images")


# Tiny and offline, and enough steps to learn: 48 train images / batch 8 = 6 steps x 12 epochs of a
# linear head on the frozen (random) backbone's pooled features (~2 s).
TOY_RUN = {
    "model": "timm:test_efficientnet", "model__pretrained": False, "strategy": "linear_probe",
    "data__num_workers": 0, "train__batch_size": 8, "train__epochs": 12, "train__lr": 0.1, "train__patience": 0,
    "trainer__progress_bar": False, "trainer__accelerator": "cpu",
}


# =============================================================================== tests


def module_head_size(metrics: dict[str, Any]) -> int:
    """Parameters of the toy's linear head: pooled width + 1 (total minus the backbone's)."""
    from sftune.backbones import create_backbone

    backbone = create_backbone("timm:test_efficientnet", pretrained=False)
    assert metrics["total_parameters"] == sum(p.numel() for p in backbone.parameters()) + backbone.num_features + 1
    return backbone.num_features + 1


def test_nothing_in_src_knows_the_toy_task():
    src = Path(sftune.__file__).resolve().parent
    files = [p for p in src.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".yml", ".json", ".html", ".txt",
                                                                       ".md", ".toml", ".cfg")]
    assert len(files) > 20, src
    knowing = [str(p) for p in files if NAME in p.read_text(encoding="utf-8", errors="replace")]
    assert not knowing, knowing


def test_the_fixture_registers_and_unregisters(toy_task):
    assert NAME in TASKS and TASKS.get(NAME) is toy_task


def test_not_registered_outside_the_fixture():
    assert NAME not in TASKS
    with pytest.raises(SftuneError, match="unknown task"):
        from sftune.config import build_config

        build_config(overrides={"task.name": NAME})


def test_toy_task_trains_saves_loads_and_learns(toy_task, brightness_dir, tmp_path):
    out = tmp_path / "bundle"
    run = sftune.finetune(data=brightness_dir, out=out, task__name=NAME, task__scale=2.0, **TOY_RUN)
    assert run.path == out and B.is_bundle(out)

    # The bundle: the task's own weights layout, labels, config with its typed options, metrics, report.
    weights = B.read_weights(out)
    assert any(k.startswith("backbone.") for k in weights) and set(k for k in weights if k.startswith("head.")) == {
        "head.weight", "head.bias"}
    import yaml

    saved = yaml.safe_load((out / B.CONFIG).read_text())
    assert saved["task"] == {"name": NAME, "scale": 2.0}
    assert saved["model"]["arch"] == "test_efficientnet"
    metrics = json.loads((out / B.METRICS).read_text())
    assert metrics["n"] == N_IMAGES // 5 and 0 <= metrics["mae"] < 2.0
    assert metrics["strategy"] == "linear_probe" and metrics["epochs_run"] == TOY_RUN["train__epochs"]
    assert metrics["trainable_parameters"] == module_head_size(metrics)  # the strategy reached the toy's head
    assert all("val/mae" in row and "train/loss" in row for row in metrics["history"])  # the task's monitor was logged
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == NAME and report["metrics"]["mae"] == pytest.approx(metrics["mae"])
    lineage = json.loads((out / B.LINEAGE).read_text())
    assert lineage["task"] == NAME and lineage["data"]["train_images"] == N_IMAGES - N_IMAGES // 5

    # sftune.load: the toy predictor, through the registry.
    model = sftune.load(out)
    assert isinstance(model, BrightnessPredictor) and model.scale == 2.0

    # It learnt: fresh images (another seed) of known brightness, predictions correlate.
    fresh = write_brightness_folder(tmp_path / "fresh", n=20, seed=1)
    files = find_images(fresh)
    predictions = model.predict(files)
    assert [p.path for p in predictions] == [str(f) for f in files]
    truth = np.array([read_image(f, torch.zeros(3), torch.ones(3))[1] for f in files]) * 2.0
    predicted = np.array([p.brightness for p in predictions])
    r = float(np.corrcoef(predicted, truth)[0, 1])
    mae, baseline = np.abs(predicted - truth).mean(), np.abs(truth - truth.mean()).mean()
    assert r > MIN_CORRELATION, (r, predicted.round(2), truth.round(2))
    assert mae < MAX_MAE_VS_BASELINE * baseline, (mae, baseline, predicted.round(2), truth.round(2))
    # The monitored val metric improved over training and the saved weights are the best epoch's.
    maes = [row["val/mae"] for row in metrics["history"]]
    assert min(maes) < maes[0]
    assert metrics["mae"] == pytest.approx(min(maes), rel=1e-4, abs=1e-5)

    # sftune.evaluate goes through the same registry lookup.
    evaluated = sftune.evaluate(out, brightness_dir)
    assert evaluated["n"] == N_IMAGES and evaluated["pearson_r"] > MIN_CORRELATION

    # So do `sftune predict` (the predictor lays out its own JSON and table) and the continual refusal.
    from sftune.cli.main import cli

    runner = CliRunner()
    as_json = runner.invoke(cli, ["predict", str(out), *map(str, files[:2]), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == [p.to_dict() for p in predictions[:2]]
    table = runner.invoke(cli, ["predict", str(out), str(files[0])])
    assert table.exit_code == 0 and "brightness" in table.output and f"{predictions[0].brightness:.3f}" in table.output
    drift = runner.invoke(cli, ["drift", str(out), "--data", str(brightness_dir)])
    assert drift.exit_code == 2 and NAME in drift.output and len(drift.output.strip().splitlines()) == 1, drift.output


def test_a_command_the_task_does_not_implement_is_one_line(toy_task, brightness_dir, tmp_path):
    """The toy has no evaluation report (Task.evaluation_report is optional): `sftune eval` on its
    bundle must say so in one line (exit 2), not crash with the base class's NotImplementedError."""
    from sftune.cli.main import cli

    out = tmp_path / "bundle"
    sftune.finetune(data=brightness_dir, out=out, task__name=NAME, **{**TOY_RUN, "train__epochs": 1})
    result = CliRunner().invoke(cli, ["eval", str(out), "--data", str(brightness_dir), "--no-report"])
    assert result.exit_code == 2, (result.exit_code, repr(result.exception), result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and NAME in lines[0], result.output


def test_toy_task_refuses_a_strategy_in_one_line_before_writing(toy_task, brightness_dir, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(SftuneError) as err:
        sftune.finetune(data=brightness_dir, out=out, task__name=NAME, **{**TOY_RUN, "strategy": "lp_ft"})
    message = str(err.value)
    assert "\n" not in message and "lp_ft" in message and NAME in message
    assert not out.exists()


def test_toy_task_options_are_typed_and_listed(toy_task):
    from sftune.config import build_config

    assert build_config(overrides={"task.name": NAME, "task.scale": 3}).task.options() == {"scale": 3}
    with pytest.raises(SftuneError) as err:
        build_config(overrides={"task.name": NAME}, sets=["task.sclae=3"])
    line = str(err.value)
    assert "task.sclae" in line and "scale" in line and NAME in line and "\n" not in line
    with pytest.raises(SftuneError, match="task.scale"):
        build_config(overrides={"task.name": NAME, "task.scale": -1})
    # train.monitor accepts the toy's metric for the toy task, and refuses another task's.
    from sftune.tasks import create_task

    task = create_task(NAME)
    own = build_config(overrides={"task.name": NAME, "train.monitor": "val/loss"})
    assert task.monitor_of(own) == ("val/loss", "min")
    with pytest.raises(SftuneError, match="val/miou.*image_brightness"):
        task.monitor_of(build_config(overrides={"task.name": NAME, "train.monitor": "val/miou"}))


def test_task_auto_and_the_cli_see_the_toy_through_the_registry(toy_task, brightness_dir, tmp_path):
    import shutil

    from sftune.cli.main import cli
    from sftune.config import build_config, resolve_task

    claimed = tmp_path / "claimed"
    shutil.copytree(brightness_dir, claimed)
    (claimed / MARKER).write_text("")
    resolved = resolve_task(build_config(overrides={"data.path": str(claimed)}))
    assert resolved.task.name == NAME and resolved.model.name == "timm:test_efficientnet"  # its default model
    assert resolve_task(build_config(overrides={"data.path": str(brightness_dir)})).task.name != NAME

    runner = CliRunner()
    listed = runner.invoke(cli, ["tasks"])
    assert listed.exit_code == 0 and NAME in listed.output and "val/mae (min)" in listed.output
    helped = runner.invoke(cli, ["train", "--help"])
    assert helped.exit_code == 0 and NAME in helped.output
