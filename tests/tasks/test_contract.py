"""The task contract, TASKS x STRATEGIES, on tiny models through the public API.

One harness (:func:`check_run`) trains a bundle with ``sftune.finetune`` and checks what every
task promises: metrics.json holds the task's monitored metric, report.html exists, and
``sftune.load(path)`` predicts and re-evaluates to the same number. Semantic segmentation runs
under every strategy in STRATEGIES (those it cannot take are refused in one line); image
classification runs once to show the same harness serves both (its strategies are covered in
tests/test_strategies*.py). Then: the registry drives ``--task``, ``sftune tasks`` and
task=auto; task options and train.monitor are checked per task; drift/update refuse
segmentation bundles; and the engine, CLI, eval and continual code never name a task.

Tiny settings: timm's random test_efficientnet, 45x37 px images (odd on purpose: padding
to the encoder's stride and cropping back are exercised), 32 px training crops, 2 epochs.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

import sftune
from sftune import bundle as B
from sftune.cli.main import cli
from sftune.config import build_config, resolve_task
from sftune.errors import SftuneError
from sftune.strategies import STRATEGIES, create_strategy
from sftune.tasks import TASKS, TaskOptions, create_task

from audio.conftest import TINY_AUDIO as AUDIO_TINY, write_class_folders
from conftest import TINY
from detection.conftest import write_detection
from segmentation.conftest import draw_labels, save_image, write_seg_folder

pytestmark = pytest.mark.usefixtures("one_thread")

SEG = "semantic_segmentation"
DET = "object_detection"
CLS = "image_classification"
AUD = "audio_classification"
SEG_SIZE = (45, 37)  # (width, height) of the generated segmentation images
EPOCHS = 2

# Strategy options that fit a 2-3 epoch run (shared by every task).
STRATEGY_OPTIONS: dict[str, dict[str, Any]] = {
    "freeze_unfreeze": {"strategy__unfreeze_epoch": 1},
    "gradual_unfreeze": {"strategy__stages": 2, "strategy__unfreeze_every": 1, "train__epochs": 3},
}
# Segmentation: every strategy trains, except the ones whose closed-form probe needs a linear head.
SEG_TRAINS = ("linear_probe", "full", "freeze_unfreeze", "gradual_unfreeze", "llrd", "bitfit", "lora", "auto")
SEG_REFUSED = ("lp_ft", "wise_ft")

SEG_RUN = {
    "model": "timm:test_efficientnet", "model__pretrained": False, "data__num_workers": 0, "train__batch_size": 4,
    "train__epochs": EPOCHS, "trainer__progress_bar": False, "trainer__accelerator": "cpu", "report__bootstrap": 20,
    "task__crop_size": 32, "task__worst_images": 2,
}
# The strategy sweep uses FCOS (one-stage, ~7x cheaper per step than Faster R-CNN on CPU); the default
# detector, Faster R-CNN, has its own end-to-end case below.
DET_RUN = {**{k: v for k, v in SEG_RUN.items() if not k.startswith("task__")},
           "task__min_size": 64, "task__max_size": 96, "task__worst_images": 2, "task__detector": "fcos"}
CLS_RUN = {k.replace(".", "__"): v for k, v in TINY.items()} | {"train__epochs": EPOCHS, "report__bootstrap": 20,
                                                                  "report__mistakes": 4}
AUD_RUN = {k.replace(".", "__"): v for k, v in AUDIO_TINY.items()} | {"train__epochs": EPOCHS}
RUNS = {SEG: SEG_RUN, DET: DET_RUN, CLS: CLS_RUN, AUD: AUD_RUN}


def invoke(*args: Any):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *needles: str) -> str:
    """Exit 2, no traceback, a single 'error: ...' line naming every needle; returns the line."""
    out = result.output
    assert "Traceback" not in out, out
    assert result.exit_code == 2, (result.exit_code, repr(result.exception), out)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ============================================================================== data and runs


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    """CamVid layout (train/ trainannot/ val/ valannot/): 6 train + 2 val pairs, 45x37, 3 classes."""
    return write_seg_folder(tmp_path_factory.mktemp("contract") / "camvid", n=8, size=SEG_SIZE)


@pytest.fixture(scope="module")
def seg_images(tmp_path_factory) -> list[Path]:
    """Unlabeled images of two odd sizes (45x37 and 29x51) to predict on."""
    root = tmp_path_factory.mktemp("contract_predict")
    return [save_image(draw_labels(3, SEG_SIZE), root / "a.png"), save_image(draw_labels(5, (29, 51)), root / "b.png")]


@pytest.fixture(scope="module")
def det_data(tmp_path_factory) -> Path:
    """Pascal VOC layout with ImageSets splits: 8 train (1 without boxes) + 3 val images, 64x48, 3 classes."""
    return write_detection(tmp_path_factory.mktemp("contract") / "voc", "voc", n=11, n_val=3, negatives=1)


@pytest.fixture(scope="module")
def audio_folders(tmp_path_factory) -> Path:
    """train/<digit>/*.wav + val/<digit>/*.wav: 8 + 2 tones per class, 3 classes."""
    return write_class_folders(tmp_path_factory.mktemp("contract") / "audio")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """train(task, strategy, data) -> RunResult, each combination trained once per module."""
    runs: dict[tuple[str, str], Any] = {}

    def train(task: str, strategy: str, data: Path):
        if (task, strategy) not in runs:
            out = tmp_path_factory.mktemp(f"{task}-{strategy}") / "bundle"
            runs[task, strategy] = sftune.finetune(data=data, out=out, strategy=strategy, task__name=task,
                                                   **{**RUNS[task], **STRATEGY_OPTIONS.get(strategy, {})})
        return runs[task, strategy]

    return train


def check_segmentation_predictions(model: Any, images: list[Path], classes: int) -> None:
    from PIL import Image

    predictions = model.predict(images)
    assert [p.path for p in predictions] == [str(p) for p in images]
    for p, image in zip(predictions, images):
        with Image.open(image) as im:
            w, h = im.size
        assert isinstance(p.mask, np.ndarray) and p.mask.dtype == np.uint8
        assert p.mask.shape == (h, w), (image, p.mask.shape)  # the image's own size, padding cropped off
        assert int(p.mask.max()) < classes
        assert p.to_dict()["size"] == [h, w]
        assert sum(p.class_fractions.values()) == pytest.approx(1.0, abs=1e-4)  # shares rounded to 6 places


def check_detection_predictions(model: Any, images: list[Path], classes: int) -> None:
    from PIL import Image

    predictions = model.predict(images, min_score=0.0)
    assert [p.path for p in predictions] == [str(p) for p in images]
    for p, image in zip(predictions, images):
        with Image.open(image) as im:
            w, h = im.size
        assert p.boxes.dtype == np.float32 and p.boxes.shape == (len(p.labels), 4) == (len(p.scores), 4)
        if len(p.boxes):  # inside the image, xyxy, scores highest first, known classes
            assert (p.boxes[:, 0] >= 0).all() and (p.boxes[:, 2] <= w).all() and (p.boxes[:, 3] <= h).all()
            assert (p.boxes[:, 2] >= p.boxes[:, 0]).all() and (np.diff(p.scores) <= 1e-6).all()
            assert set(p.labels) <= set(model.classes)
        assert p.json_records() and all(r["image"] == str(image) for r in p.json_records())
    assert len(model.classes) == classes


def check_classification_predictions(model: Any, images: list[Path], classes: int) -> None:
    predictions = model.predict(images, top_k=2)
    assert [p.path for p in predictions] == [str(p) for p in images]
    assert len(model.classes) == classes
    for p in predictions:
        assert p.label in model.classes and 0 <= p.score <= 1 and len(p.top_k) == 2


def check_run(run: Any, task: str, strategy: str, data: Path, images: list[Path], check_predictions: Callable,
              classes: int) -> dict[str, Any]:
    """What every task's bundle promises, whatever the strategy; returns metrics.json."""
    metric = TASKS.get(task).monitor[0].removeprefix("val/")  # the task's headline: miou, acc, ...
    out = run.path
    assert B.is_bundle(out) and (out / B.LABELS).is_file() and (out / B.LINEAGE).is_file()
    metrics = json.loads((out / B.METRICS).read_text())
    assert 0.0 <= metrics[metric] <= 1.0, metrics
    assert metrics[metric] == run.metrics[metric]  # RunResult.metrics is what was written
    assert (out / "report.html").is_file() and (out / "report.json").is_file()
    assert metrics["epochs_run"] == run.config.train.epochs and len(metrics["history"]) == run.config.train.epochs
    assert all(f"val/{metric}" in row and any(k.startswith("lr-") for k in row) for row in metrics["history"])
    saved = yaml.safe_load((out / B.CONFIG).read_text())
    saved_task = saved["task"] if isinstance(saved["task"], str) else saved["task"]["name"]
    assert saved_task == task and json.loads((out / B.LINEAGE).read_text())["task"] == task
    if strategy == "auto":  # resolved before training: config.yaml and metrics.json hold the choice
        chosen = metrics["strategy_choice"]["chosen"]
        assert chosen != "auto" and metrics["strategy"] == chosen == saved["strategy"]["name"]
        assert chosen not in SEG_REFUSED
    else:
        assert metrics["strategy"] == strategy == saved["strategy"]["name"]
    assert 0 < metrics["trainable_parameters"] <= metrics["total_parameters"]

    model = sftune.load(out)
    assert type(model) is type(TASKS.get(task)().load_predictor(out, "cpu", "auto"))
    check_predictions(model, images, classes)
    evaluated = model.evaluate(data)
    assert evaluated[metric] == pytest.approx(metrics[metric], abs=1e-6), (evaluated, metrics[metric])
    return metrics


# ============================================================================== TASKS x STRATEGIES


def test_every_strategy_has_a_segmentation_case():
    """A new strategy must be added to SEG_TRAINS or SEG_REFUSED (trained, or refused in one line)."""
    assert set(SEG_TRAINS) | set(SEG_REFUSED) == set(STRATEGIES.list())
    assert not set(SEG_TRAINS) & set(SEG_REFUSED)


# The harness's cases: segmentation and detection under every strategy they take, classification once
# (every strategy x classification: tests/test_strategies*.py). Detection refuses what segmentation refuses.
CASES = [pytest.param(SEG, s, id=f"{SEG}-{s}") for s in SEG_TRAINS] + [
    pytest.param(DET, s, id=f"{DET}-{s}") for s in SEG_TRAINS] + [
    pytest.param(CLS, "freeze_unfreeze", id=f"{CLS}-freeze_unfreeze"),
    pytest.param(AUD, "freeze_unfreeze", id=f"{AUD}-freeze_unfreeze")]


def case_inputs(task: str, request) -> tuple[Path, list[Path], Callable, int]:
    """(training data, images to predict on, the prediction check, number of classes) of a task."""
    if task == SEG:
        return (request.getfixturevalue("seg_data"), request.getfixturevalue("seg_images"),
                check_segmentation_predictions, 3)
    if task == DET:
        data = request.getfixturevalue("det_data")
        return data, sorted((data / "JPEGImages").iterdir())[:3], check_detection_predictions, 3
    if task == AUD:
        data = request.getfixturevalue("audio_folders")
        return data, sorted((data / "val" / "1").iterdir()), check_classification_predictions, 3
    data = request.getfixturevalue("digits_split_dir")
    return data, sorted((data / "val" / "1").iterdir())[:3], check_classification_predictions, 3


@pytest.mark.parametrize("task, strategy", CASES)
def test_task_trains_to_a_bundle_that_loads_predicts_and_evaluates(task, strategy, trained, request):
    data, images, check_predictions, classes = case_inputs(task, request)
    metrics = check_run(trained(task, strategy, data), task, strategy, data, images, check_predictions, classes)
    if task == SEG:
        assert metrics["n"] == 2 and set(metrics["per_class_iou"]) == {"class_0", "class_1", "class_2"}
    elif task == DET:
        assert metrics["n"] == 3 and len(metrics["per_class_ap"]) == 3 and metrics["n_boxes"] > 0
    elif task == AUD:
        assert metrics["n"] == 6  # 2 val clips x 3 classes
    else:
        assert metrics["n"] == 30


@pytest.mark.parametrize("strategy", SEG_TRAINS)
def test_segmentation_bundle_reflects_the_strategy(strategy, trained, seg_data):
    """What trained, per strategy (the run is the harness's, trained once)."""
    run = trained(SEG, strategy, seg_data)
    metrics = json.loads((run.path / B.METRICS).read_text())
    lrs = {k for row in metrics["history"] for k in row if k.startswith("lr-")}
    total, trainable = metrics["total_parameters"], metrics["trainable_parameters"]
    if strategy in ("linear_probe", "bitfit", "lora"):
        assert trainable < total  # the encoder's weights (all, or all but biases/norms) stay frozen
    elif strategy in ("full", "freeze_unfreeze", "gradual_unfreeze", "llrd"):
        assert trainable == total
    if strategy == "llrd":  # the encoder's timm layer groups reach the strategy: one LR per group
        assert len({k for k in lrs if k.startswith("lr-backbone.layer")}) >= 3, lrs
    if strategy == "gradual_unfreeze":
        assert {"lr-backbone.stage0", "lr-backbone.stage1"} <= lrs, lrs
    if strategy == "lora":  # adapters beside the merged weights; model.safetensors has plain timm keys
        assert (run.path / B.ADAPTERS).is_file()
        assert not any("lora" in k for k in B.read_weights(run.path))


def test_segmentation_config_yaml_holds_the_resolved_class_names(trained, seg_data):
    """config.yaml is the resolved config: the class names the pipeline found (tasks/segmentation/
    pipeline.py says it saves them there, so a bundle and --resume know them without the data)."""
    run = trained(SEG, "linear_probe", seg_data)
    saved = yaml.safe_load((run.path / B.CONFIG).read_text())["task"]
    assert saved["classes"] == json.loads((run.path / B.LABELS).read_text())["classes"] == ["class_0", "class_1",
                                                                                              "class_2"]


def test_default_detector_trains_loads_and_predicts(det_data, tmp_path):
    """Faster R-CNN (the default detector) end to end: bundle, report, predictions, eval = metrics.json."""
    options = {**DET_RUN, "train__epochs": 1}
    del options["task__detector"]
    run = sftune.finetune(data=det_data, out=tmp_path / "frcnn", task__name=DET, **options)
    assert json.loads((run.path / B.LABELS).read_text())["model"]["detector"] == "faster_rcnn"
    images = sorted((det_data / "JPEGImages").iterdir())[:3]
    model = sftune.load(run.path)
    check_detection_predictions(model, images, 3)
    assert model.evaluate(det_data)["map"] == pytest.approx(run.metrics["map"], abs=1e-6)


@pytest.mark.parametrize("strategy", SEG_REFUSED)
def test_detection_refuses_probe_strategies_in_one_line(strategy, det_data, tmp_path):
    with pytest.raises(SftuneError) as e:
        sftune.finetune(data=det_data, out=tmp_path / "out", strategy=strategy, task__name=DET, **DET_RUN)
    assert "\n" not in str(e.value) and strategy in str(e.value) and DET in str(e.value)
    assert not (tmp_path / "out").exists()


def test_auto_detects_a_voc_folder(det_data):
    from sftune.config import build_config, resolve_task

    assert resolve_task(build_config(overrides={"data.path": str(det_data)})).task.name == DET


@pytest.mark.parametrize("strategy", SEG_REFUSED)
def test_segmentation_refuses_probe_strategies_in_one_line(strategy, seg_data, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(SftuneError) as err:
        sftune.finetune(data=seg_data, out=out, strategy=strategy, task__name=SEG, **SEG_RUN)
    message = str(err.value)
    assert "\n" not in message and strategy in message and SEG in message, message
    assert not out.exists()  # refused before the run folder is claimed


def test_segmentation_refusal_on_the_command_line(seg_data, tmp_path):
    result = invoke("train", "--data", seg_data, "--out", tmp_path / "x", "--strategy", "lp_ft", "--epochs", 2,
                    "--model", "timm:test_efficientnet", "--set", "model.pretrained=false", "--no-progress")
    one_line_error(result, "lp_ft", SEG)


def test_a_classification_bundle_keeps_the_task_as_a_plain_string(trained, digits_split_dir):
    """`task: image_classification` as a plain string, as bundles written before tasks had options:
    the harness's classification bundle is one, and sftune.load read it there."""
    run = trained(CLS, "freeze_unfreeze", digits_split_dir)
    assert yaml.safe_load((run.path / B.CONFIG).read_text())["task"] == CLS
    assert sftune.load(run.path).classes == ["0", "1", "2"]


def test_segmentation_resume_is_exact(trained, seg_data, tmp_path, monkeypatch):
    """TaskModule's per-epoch seeding and checkpoint checks serve every task: a segmentation run
    killed at the end of its last epoch (its checkpoint: the first epoch's) and resumed from the
    saved config alone (task options included) ends with the uninterrupted run's weights and mIoU."""
    import lightning as L

    from conftest import with_callbacks

    class Crash(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == EPOCHS - 1:
                raise RuntimeError("simulated crash")

    straight = trained(SEG, "freeze_unfreeze", seg_data)
    out = tmp_path / "bundle"
    options = {**SEG_RUN, **STRATEGY_OPTIONS["freeze_unfreeze"]}
    with monkeypatch.context() as m:
        with_callbacks(m, Crash())
        with pytest.raises(RuntimeError, match="simulated crash"):
            sftune.finetune(data=seg_data, out=out, strategy="freeze_unfreeze", task__name=SEG, **options)
    assert not out.exists() and (B.partial_dir(out) / "checkpoints" / "last.ckpt").is_file()
    resumed = sftune.finetune(out=out, resume=True)
    assert resumed.config.task.name == SEG and resumed.config.task.options()["crop_size"] == 32
    assert resumed.metrics["miou"] == pytest.approx(straight.metrics["miou"], abs=1e-6)
    a, b = B.read_weights(straight.path), B.read_weights(resumed.path)
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


# ============================================================================== layer groups


def seg_module(data: Path, strategy: str, **options: Any):
    """The segmentation TaskModule built through the task API (no training)."""
    cfg = build_config(overrides={"data.path": str(data), "task.name": SEG, "model.name": "timm:test_efficientnet",
                                  "model.pretrained": False, "strategy.name": strategy,
                                  **{f"strategy.{k}": v for k, v in options.items()}})
    task = create_task(cfg.task.name, cfg.task.options())
    pipeline = task.pipeline(cfg, 0, lambda _: None)
    pipeline.load()
    return task.module(pipeline, create_strategy(cfg.strategy), cfg)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


@pytest.mark.parametrize("strategy, options", [("llrd", {}), ("gradual_unfreeze", {"stages": 4})])
def test_layerwise_strategies_see_several_encoder_groups(strategy, options, seg_data):
    """timm's features_only encoder lost group_matcher; the task maps the groups back (model.py)."""
    module = seg_module(seg_data, strategy, **options)
    encoder = _ids(module.backbone.parameters())
    layers = module.backbone_layer_groups()
    assert len(layers) >= 3
    assert _ids(p for layer in layers for p in layer) == encoder  # a partition of the encoder...
    assert sum(len(layer) for layer in layers) == len(encoder)
    backbone_groups = [g for g in module.groups if g.name.startswith("backbone")]
    assert len(backbone_groups) >= 3, [g.name for g in module.groups]
    assert all(_ids(g.params) <= encoder for g in backbone_groups)
    head = [g for g in module.groups if g.name == "head"]
    assert len(head) == 1 and _ids(head[0].params) == _ids(module.head_parameters())
    assert not _ids(head[0].params) & encoder  # decoder + segmentation head only
    if strategy == "llrd":  # LR grows towards the decoder
        scales = [g.lr_scale for g in backbone_groups]
        assert scales == sorted(scales) and len(set(scales)) == len(scales)
    else:  # the stage next to the decoder unfreezes first
        starts = [g.start_epoch for g in backbone_groups]
        assert starts == sorted(starts, reverse=True) and len(set(starts)) == 4


@pytest.mark.parametrize("strategy", ["linear_probe", "bitfit", "lora"])
def test_partial_strategies_reach_the_segmenter_through_its_methods(strategy, seg_data):
    module = seg_module(seg_data, strategy)
    encoder = dict(module.backbone.named_parameters())
    trains = _ids(p for g in module.groups for p in g.params)
    head = _ids(module.head_parameters())
    assert head <= trains and head == _ids([*module.decoder.parameters(), *module.segmentation_head.parameters()])
    in_encoder = {n for n, p in encoder.items() if id(p) in trains}
    if strategy == "linear_probe":
        assert not in_encoder and module.backbone_always_frozen()
    elif strategy == "bitfit":
        assert in_encoder and all(n.endswith(".bias") or ".bn" in n for n in in_encoder), sorted(in_encoder)[:5]
    else:
        assert in_encoder and all(".lora_" in n for n in in_encoder)


# ============================================================================== registry -> CLI


def test_train_help_lists_every_registered_task():
    result = invoke("train", "--help")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "--task" in line)
    for name in ["auto", *TASKS.list()]:
        assert name in line, (name, line)
    assert SEG in line


def test_sftune_tasks_lists_every_registered_task_with_its_monitor():
    result = invoke("tasks")
    assert result.exit_code == 0, result.output
    for name in TASKS.list():
        assert name in result.output
        assert f"{TASKS.get(name).monitor[0]} ({TASKS.get(name).monitor[1]})" in result.output
    assert "ignore_index=255" in result.output  # a task's options with their defaults


def test_unknown_task_on_the_command_line_lists_the_registry(digits_dir, tmp_path):
    result = invoke("train", "--data", digits_dir, "--out", tmp_path / "x", "--task", "segmentation")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert all(name in result.output for name in TASKS.list())


@pytest.mark.parametrize("name", sorted(TASKS.list()))
def test_every_registered_task_is_complete(name):
    cls = TASKS.get(name)
    assert cls.name == name and cls.modality and cls.summary
    assert issubclass(cls.Options, TaskOptions) and cls.Options()  # defaults validate
    metric, mode = cls.monitor
    assert mode in ("min", "max") and cls.metrics[metric] == mode
    assert all(m.startswith("val/") and d in ("min", "max") for m, d in cls.metrics.items())
    assert cls.backbone_output in ("pooled", "pyramid")
    task = create_task(name)
    for m, d in cls.metrics.items():  # every metric it names may be train.monitor
        assert task.monitor_of(build_config(overrides={"task.name": name, "train.monitor": m})) == (m, d)


# ============================================================================== task=auto


@pytest.mark.parametrize("layout", ["camvid", "images_masks"])
def test_auto_detects_segmentation_folders(layout, tmp_path):
    data = write_seg_folder(tmp_path / layout, layout=layout, n=8)
    resolved = resolve_task(build_config(overrides={"data.path": str(data)}))
    assert resolved.task.name == SEG and resolved.model.name == TASKS.get(SEG).default_model


def test_auto_keeps_a_class_folder_image_classification(digits_dir, digits_split_dir):
    for data in (digits_dir, digits_split_dir):
        assert resolve_task(build_config(overrides={"data.path": str(data)})).task.name == CLS


def test_auto_detected_task_validates_its_options(seg_data, digits_dir):
    """task=auto with task.<option>: checked once the task is known (here: segmentation's ignore_index)."""
    cfg = resolve_task(build_config(overrides={"data.path": str(seg_data), "task.ignore_index": 11}))
    assert cfg.task.name == SEG and cfg.task.options() == {"ignore_index": 11}
    with pytest.raises(SftuneError) as err:
        resolve_task(build_config(overrides={"data.path": str(digits_dir), "task.ignore_index": 11}))
    assert "task.ignore_index" in str(err.value) and CLS in str(err.value) and "\n" not in str(err.value)


# ============================================================================== config


def test_task_shorthand_in_yaml_validates(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("task: image_classification\ntrain:\n  epochs: 3\n")
    cfg = build_config(file=plain)
    assert cfg.task == CLS and cfg.task.name == CLS and cfg.task.options() == {}
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["task"] == CLS  # saved in the same short form
    seg = tmp_path / "seg.yaml"
    seg.write_text("task: semantic_segmentation\n")
    cfg = build_config(file=seg, sets=["task.ignore_index=11"])  # an option beside the shorthand
    assert cfg.task.name == SEG and cfg.task.options() == {"ignore_index": 11}
    assert cfg.to_dict()["task"] == {"name": SEG, "ignore_index": 11}


def test_task_name_beside_its_options_in_overrides():
    """``sftune.finetune(task="semantic_segmentation", task__crop_size=32)`` (and --set task=NAME
    --set task.KEY=V): the shorthand and its options, in either order, keep both."""
    for overrides in ({"task": SEG, "task.crop_size": 32}, {"task.crop_size": 32, "task": SEG}):
        cfg = build_config(overrides=overrides)
        assert cfg.task.name == SEG and cfg.task.options() == {"crop_size": 32}, overrides
    cfg = build_config(sets=[f"task={SEG}", "task.crop_size=32"])
    assert cfg.task.name == SEG and cfg.task.options() == {"crop_size": 32}


@pytest.mark.parametrize("task, options", [(SEG, "ignore_index, decoder, crop_size"), (CLS, "none")])
def test_unknown_task_option_is_one_line_listing_the_options(task, options, digits_dir, tmp_path):
    out = tmp_path / "x"
    result = invoke("train", "--data", digits_dir, "--out", out, "--task", task, "--set", "task.foo=1")
    one_line_error(result, "task.foo", task, options)
    assert not out.exists()


def test_unknown_task_option_under_auto_names_the_detected_task(seg_data, tmp_path):
    out = tmp_path / "x"
    result = invoke("train", "--data", seg_data, "--out", out, "--set", "task.crop_sise=64")
    line = one_line_error(result, "task.crop_sise", SEG, "crop_size")
    assert "did you mean 'crop_size'" in line
    assert not out.exists()


def test_monitor_of_another_task_is_refused_in_one_line(digits_dir, tmp_path):
    out = tmp_path / "x"
    result = invoke("train", "--data", digits_dir, "--out", out, "--task", CLS, "--set", "train.monitor=val/miou")
    one_line_error(result, "val/miou", CLS, "val/acc")
    assert not out.exists()
    with pytest.raises(SftuneError, match="val/miou"):  # the API says the same, before any data is read
        sftune.finetune(data=digits_dir, out=out, train__monitor="val/miou", **CLS_RUN)
    assert not out.exists()


def test_monitor_of_the_task_itself_is_accepted(seg_data):
    cfg = build_config(overrides={"task.name": SEG, "train.monitor": "val/pixel_acc"})
    assert create_task(SEG).monitor_of(cfg) == ("val/pixel_acc", "max")


# ============================================================================== continual


@pytest.mark.parametrize("command", ["drift", "update"])
def test_drift_and_update_refuse_segmentation_bundles(command, trained, seg_data, tmp_path):
    bundle = trained(SEG, "linear_probe", seg_data).path
    out = tmp_path / "challenger"
    extra = ["--out", out] if command == "update" else []
    result = invoke(command, bundle, "--data", seg_data, *extra)
    line = one_line_error(result, command, SEG)
    assert "not available" in line
    assert not out.exists()


# ============================================================================== no task names outside tasks/


TASK_FREE = ("engine.py", "cli", "eval", "continual", "strategies", "data", "bundle.py", "__init__.py")


def test_task_free_code_never_branches_on_a_task_name():
    """DESIGN.md section 2: no if/else on a task name in the engine, CLI, eval or continual code,
    and none of them imports a task's own package (they reach tasks through TASKS)."""
    src = Path(sftune.__file__).resolve().parent
    names = set(TASKS.list())
    files = [f for part in TASK_FREE for f in ([src / part] if (src / part).is_file() else (src / part).rglob("*.py"))]
    assert len(files) > 10
    problems = []
    for f in files:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                consts = [c for side in (node.left, *node.comparators)
                          for c in ([side] if not isinstance(side, (ast.Tuple, ast.List, ast.Set)) else side.elts)]
                hit = [c.value for c in consts if isinstance(c, ast.Constant) and c.value in names]
                if hit:
                    problems.append(f"{f.relative_to(src)}:{node.lineno} compares with {hit}")
            if isinstance(node, ast.ImportFrom) and node.module and any(
                    f"tasks.{pkg}" in node.module for pkg in ("classification", "segmentation")):
                problems.append(f"{f.relative_to(src)}:{node.lineno} imports {node.module}")
    assert not problems, problems
