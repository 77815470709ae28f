"""Classification (single- and multi-label) as a task on the contract, over three modalities:
images (``image_classification``), text (``text_classification``) and audio
(``audio_classification``). Everything but the pipeline (how items are found, decoded and
batched) and the predictor class is shared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ... import bundle as B
from ..base import TASKS, Task
from .module import Classifier

if TYPE_CHECKING:
    from ...config import RunConfig
    from ...pipelines.base import Pipeline
    from ...strategies import Strategy


class Classification(Task):
    """Shared by the image, text and audio classification tasks."""

    summary = "one class per example (or several: multi-label); softmax/sigmoid head on pooled features"
    monitor = ("val/acc", "max")
    metrics = {"val/acc": "max", "val/f1": "max", "val/loss": "min"}
    backbone_output = "pooled"
    caches_features = True
    continual = True

    def module(self, pipeline: "Pipeline", strategy: "Strategy", config: "RunConfig") -> Classifier:
        module = Classifier(pipeline.backbone, len(pipeline.data.classes), strategy, config.train, config.model.drop_rate,
                            multi_label=getattr(pipeline.data, "multi_label", False))
        module.channels_last = config.trainer.channels_last
        return module

    def start_from_parent(self, module: Classifier, config: "RunConfig", pipeline: "Pipeline") -> bool:
        """``file:<bundle>`` with the same classes in the same order (a re-fine-tune, as ``sftune update``
        does): the head starts from the parent's instead of from scratch, so training continues the
        parent's classifier rather than refitting one (less forgetting of what it knew)."""
        name = config.model.name or ""
        if not name.startswith("file:"):
            return False
        parent = Path(name[len("file:"):]).expanduser()
        if not (B.is_bundle(parent) and (parent / B.LABELS).is_file()):
            return False
        if B.read_json(parent / B.LABELS).get("classes") != list(pipeline.data.classes):
            return False
        _, head_state = B.split_weights(B.read_weights(parent))
        try:
            module.head.load_state_dict(head_state)
        except RuntimeError:  # a head of another shape (e.g. another pooling width): start fresh
            return False
        return True

    def evaluate_in_memory(self, module: Classifier, datamodule: Any, bf16: bool) -> dict[str, float]:
        """Val metrics of the module's current weights, straight from the datamodule's val loader,
        at the inference precision the bundle's evaluation uses (so both report the same numbers)."""
        from ...data.datamodule import make_loader
        from ...eval import evaluate_logits

        module.eval()
        device = next(module.parameters()).device
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            # Every val example on this one process (the fit's val loader is sharded by rank).
            loader = make_loader(datamodule.val_set, datamodule.val_batch_size(), datamodule.num_workers,
                                 collate_fn=datamodule.collate_fn)
            batches = [(module(_to_device(x, device)).float().cpu(), y) for x, y in loader]
        return evaluate_logits(batches, module.num_classes, multi_label=module.multi_label)

    def save_model(self, work: Path, module: Classifier, pipeline: "Pipeline", datamodule: Any,
                   strategy: "Strategy", config: "RunConfig") -> None:
        from ...adapters import adapter_state_dict
        from ...strategies import strategy_options_of

        backbone = pipeline.backbone
        B.save_weights(work / B.WEIGHTS, module.backbone.weights(), module.head.state_dict(),
                       metadata={"format": str(B.BUNDLE_FORMAT), "arch": backbone.arch})
        adapters = adapter_state_dict(module.backbone.model)
        if adapters:  # LoRA: the adapters alone, to re-apply to the same pretrained backbone (model.safetensors is merged)
            B.save_weights(work / B.ADAPTERS, adapters, module.head.state_dict(),
                           metadata={"format": str(B.BUNDLE_FORMAT), "arch": backbone.arch, "base": config.model.name,
                                     "peft_config": json.dumps(strategy_options_of(strategy))})
        pipeline.save_inputs_spec(work)  # e.g. text: encoder config + tokenizer, so the bundle stands alone
        labels: dict[str, Any] = {"classes": pipeline.data.classes}
        if module.multi_label:  # per-class decision thresholds, tuned for F1 on the val set
            labels["thresholds"] = _tuned_thresholds(module, datamodule)
        B.atomic_write_json(work / B.LABELS, labels)

    def final_outputs(self, work: Path, module: Classifier, datamodule: Any, pipeline: "Pipeline",
                      config: "RunConfig", workers: int) -> Any:
        from ...eval.outputs import Outputs, describe_item

        data = pipeline.data
        if module.inputs_are_features:
            # Same numbers as `sftune eval` (same features, same precision) without a second pass over the inputs.
            val_x, val_y = datamodule.val_set.tensors
            with torch.inference_mode():
                module.eval()
                logits = module.head(val_x)
                if module.multi_label:  # 0 = each class's tuned threshold, as the bundle's predictor does
                    thresholds = B.read_json(work / B.LABELS)["thresholds"]
                    logits = logits - torch.logit(torch.tensor(thresholds))
            outputs = Outputs(list(data.classes), logits.float(), val_y, [describe_item(s) for s in data.val],
                              multi_label=module.multi_label)
        else:
            from ...predictor import load

            # With pooled features: the drift reference samples them instead of a second pass.
            outputs = load(work, precision=config.trainer.inference_precision).outputs(
                data.val, batch_size=max(64, config.train.batch_size), num_workers=workers, features=True)
        outputs.skipped = list(getattr(data, "skipped", []))  # the report lists every file the run could not read
        return outputs

    def write_report(self, work: Path, final: Path, outputs: Any, pipeline: "Pipeline", config: "RunConfig") -> None:
        from ...eval.report import evaluation_report, write_report

        report = evaluation_report(outputs, work, validation_description(config, pipeline), pipeline.kind,
                                   title=run_title(config), bootstrap=config.report.bootstrap,
                                   mistakes=config.report.mistakes, location=final)
        write_report(work, report, items_are_files=pipeline.items_are_files)

    def write_reference(self, work: Path, module: Classifier, datamodule: Any, pipeline: "Pipeline", outputs: Any,
                        config: "RunConfig", log: Callable[[str], None]) -> None:
        from ...continual.reference import write_reference

        write_reference(work, module, datamodule, pipeline.data, config.train.seed, config.trainer.inference_precision,
                        log, val_outputs=outputs, kind=pipeline.kind)

    def evaluation_report(self, outputs: Any, bundle: str | Path, data: str, title: str, bootstrap: int,
                          mistakes: int) -> dict[str, Any]:
        from ...eval.report import evaluation_report

        return evaluation_report(outputs, bundle, data, self.modality, title=title, bootstrap=bootstrap, mistakes=mistakes)

    def comparison_report(self, a: Any, b: Any, bundle_a: str | Path, bundle_b: str | Path, data: str, title: str,
                          bootstrap: int, mistakes: int) -> dict[str, Any]:
        from ...eval.report import comparison_report

        return comparison_report(a, b, bundle_a, bundle_b, data, self.modality, bootstrap=bootstrap, mistakes=mistakes,
                                 title=title)

    def write_evaluation(self, folder: Path, report: dict[str, Any], model: Any) -> tuple[Path, Path]:
        from ...eval.report import write_report

        return write_report(folder, report, items_are_files=model.items_are_files)


@TASKS.register("image_classification")
class ImageClassification(Classification):
    name = "image_classification"
    modality = "images"
    summary = "images -> one class (or several); EfficientNet-Lite0 or any timm backbone"
    default_model = "efficientnet_lite0"
    detect_priority = 0  # the fallback: any folder of images

    def pipeline(self, config: "RunConfig", workers: int, log: Callable[[str], None]) -> "Pipeline":
        from ...pipelines.images import ImagePipeline

        return ImagePipeline(config, workers, log)

    def load_predictor(self, path: Path, device: str | None, precision: str) -> Any:
        from ...predictor import FineTunedModel

        return FineTunedModel(path, device=device, precision=precision)


@TASKS.register("text_classification")
class TextClassification(Classification):
    name = "text_classification"
    modality = "text"
    summary = "texts (or sentence pairs) -> one class (or several); MiniLM or any transformers encoder"
    default_model = "minilm"
    detect_priority = 10

    @classmethod
    def claims(cls, config: "RunConfig") -> bool:
        from ...backbones.text import is_text_model_name

        name = config.model.name
        if name and name.startswith("file:"):
            return bundle_task(name[len("file:"):]) == cls.name
        if name:
            return is_text_model_name(name)
        from ...data.texts import is_text_data

        return bool(config.data.path) and is_text_data(config.data.path)

    def pipeline(self, config: "RunConfig", workers: int, log: Callable[[str], None]) -> "Pipeline":
        from ...pipelines.text import TextPipeline

        return TextPipeline(config, workers, log)

    def load_predictor(self, path: Path, device: str | None, precision: str) -> Any:
        from ...text_predictor import FineTunedTextModel

        return FineTunedTextModel(path, device=device, precision=precision)


@TASKS.register("audio_classification")
class AudioClassification(Classification):
    """Audio clips -> one class: a log-mel front end (data.audio) feeding an image backbone."""

    name = "audio_classification"
    modality = "audio"
    summary = "audio clips (speech, sounds) -> one class; log-mel spectrogram into EfficientNet-Lite0 or any timm CNN"
    default_model = "efficientnet_lite0"
    # No own defaults: the global linear_probe (features cached once) measured 77% on FSDD's official
    # split, while fine-tuning every layer (full, llrd) reached 22-42% in 2-epoch budgets (README).
    detect_priority = 12  # above text (a manifest of audio paths is no text table), below detection/segmentation

    @classmethod
    def claims(cls, config: "RunConfig") -> bool:
        name = config.model.name
        if name and name.startswith("file:"):
            return bundle_task(name[len("file:"):]) == cls.name
        from ...data.audio_sources import is_audio_data

        return bool(config.data.path) and is_audio_data(config.data.path)

    def pipeline(self, config: "RunConfig", workers: int, log: Callable[[str], None]) -> "Pipeline":
        from ...pipelines.audio import AudioPipeline

        return AudioPipeline(config, workers, log)

    def load_predictor(self, path: Path, device: str | None, precision: str) -> Any:
        from ...audio_predictor import FineTunedAudioModel

        return FineTunedAudioModel(path, device=device, precision=precision)


def bundle_task(path: str) -> str | None:
    """The task of an sftune bundle used as a backbone (None for plain weight files)."""
    import yaml

    saved = Path(path).expanduser() / B.CONFIG
    if not saved.is_file():
        return None
    try:
        task = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("task")
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    return task.get("name") if isinstance(task, dict) else task


def validation_description(config: "RunConfig", pipeline: "Pipeline") -> str:
    """Where the validation set came from, for the report's title block."""
    split = getattr(pipeline.data, "split", {}) or {}
    if split.get("val_fraction"):
        return f"{config.data.path}: {split['method']} {split['val_fraction']:.0%} validation split (seed {split.get('seed')})"
    return f"{split.get('source') or config.data.val_path or config.data.path}: validation set"


def run_title(config: "RunConfig") -> str:
    return f"{Path(str(config.data.path)).name}: {config.model.name} + {config.strategy.name}, validation"


def _tuned_thresholds(module: Classifier, datamodule: Any) -> list[float]:
    from ...data.datamodule import make_loader
    from ...text_predictor import tune_thresholds

    module.eval()
    device = next(module.parameters()).device
    loader = make_loader(datamodule.val_set, datamodule.val_batch_size(), datamodule.num_workers,
                         collate_fn=datamodule.collate_fn)
    with torch.inference_mode():
        pairs = [(module(_to_device(x, device)).float().sigmoid().cpu(), y) for x, y in loader]
    return tune_thresholds(torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs]))


def _to_device(x: Any, device: torch.device) -> Any:
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)

