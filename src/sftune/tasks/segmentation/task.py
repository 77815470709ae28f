"""``semantic_segmentation``: a class for every pixel. DeepLabV3+ (default), U-Net or FPN
decoders from segmentation_models_pytorch on a timm encoder (the offline EfficientNet-Lite0
ImageNet weights by default), trained with pixel cross-entropy that skips ``ignore_index``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
from pydantic import Field

from ... import bundle as B
from ..base import TASKS, Task, TaskOptions

if TYPE_CHECKING:
    from ...config import RunConfig
    from ...strategies import Strategy
    from .module import Segmenter
    from .pipeline import SegmentationPipeline


class SegmentationOptions(TaskOptions):
    """``task:`` options of semantic segmentation (``--set task.<key>=...``)."""

    ignore_index: int = Field(255, ge=0, le=65535, description="mask value that is not scored nor trained (void); CamVid: 11")
    decoder: Literal["deeplabv3plus", "unet", "fpn"] = Field("deeplabv3plus", description="smp decoder on the encoder's feature pyramid")
    crop_size: int | None = Field(320, ge=32, le=4096, description="training crop (px, square; after random scaling); null = whole images")
    scale: tuple[float, float] = Field((0.5, 2.0), description="random scale range of training images before the crop")
    dice_weight: float = Field(0.0, ge=0, le=10, description="weight of the soft Dice loss added to cross-entropy (0 = off)")
    class_weights: Literal["none", "median_frequency"] = Field("none", description="cross-entropy class weights: none, or median frequency balancing (SegNet)")
    classes: list[str] | None = Field(None, description="class names (default: classes.json / labelmap.txt / classes.txt beside the data, else class_0..)")
    colormap: list[tuple[int, int, int]] | None = Field(None, description="RGB colour of each class, for RGB colour masks without a classes.json/labelmap.txt")
    worst_images: int = Field(8, ge=0, le=100, description="worst validation images (by per-image mIoU) drawn in the report")


@TASKS.register("semantic_segmentation")
class SemanticSegmentation(Task):
    name = "semantic_segmentation"
    modality = "images"
    summary = "images -> a class per pixel; DeepLabV3+/U-Net/FPN (smp) on a timm encoder"
    Options = SegmentationOptions
    monitor = ("val/miou", "max")
    metrics = {"val/miou": "max", "val/pixel_acc": "max", "val/mean_dice": "max", "val/fw_iou": "max", "val/loss": "min"}
    backbone_output = "pyramid"
    caches_features = False  # the decoder needs full feature maps, recomputed under each crop
    continual = False
    default_model = "efficientnet_lite0"
    # 8 crops per step (smp's CamVid recipe): on CamVid's 62 images, 4x the steps of batch 32 per
    # epoch; measured (bench/seg_bench.py): the peer's best mIoU at epoch 3 instead of 9.
    defaults = {"train.batch_size": 8}
    detect_priority = 20
    options: SegmentationOptions

    @classmethod
    def claims(cls, config: "RunConfig") -> bool:
        from .data import is_segmentation_data

        return bool(config.data.path) and is_segmentation_data(config.data.path)

    def pipeline(self, config: "RunConfig", workers: int, log: Callable[[str], None]) -> "SegmentationPipeline":
        from .pipeline import SegmentationPipeline

        return SegmentationPipeline(config, workers, log, self.options)

    def refusal(self, strategy: "Strategy") -> str | None:
        if strategy.probes_head:
            return ("its closed-form probe fits a linear head on pooled features, and a segmentation decoder is not one; "
                    "use freeze_unfreeze (decoder first, then everything) or full")
        return None

    def module(self, pipeline: "SegmentationPipeline", strategy: "Strategy", config: "RunConfig") -> "Segmenter":
        from .module import Segmenter

        weights = pipeline.class_pixel_weights() if self.options.class_weights == "median_frequency" else None
        module = Segmenter(pipeline.net, strategy, config.train, self.options.ignore_index, self.options.dice_weight,
                           weights)
        module.channels_last = config.trainer.channels_last
        return module

    def start_from_parent(self, module: Any, config: "RunConfig", pipeline: Any) -> bool:
        return False  # a file: encoder gives the encoder only; decoders start fresh

    def evaluate_in_memory(self, module: "Segmenter", datamodule: Any, bf16: bool) -> dict[str, float]:
        from ...data.datamodule import make_loader
        from .metrics import SegmentationMetric

        module.eval()
        device = next(module.parameters()).device
        metric = SegmentationMetric(module.num_classes, ignore_index=module.ignore_index, sync_on_compute=False).to(device)
        loader = make_loader(datamodule.val_set, datamodule.val_batch_size(), datamodule.num_workers,
                             collate_fn=datamodule.collate_fn)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for images, masks in loader:
                metric.update(module(images.to(device)).argmax(1), masks.to(device))
        values = {k: float(v) for k, v in metric.compute().items()}
        values["acc"], values["f1"] = values["pixel_acc"], values["mean_dice"]  # what WiSE-FT's grid reports
        return values

    def save_model(self, work: Path, module: "Segmenter", pipeline: "SegmentationPipeline", datamodule: Any,
                   strategy: "Strategy", config: "RunConfig") -> None:
        import json

        from ...adapters import adapter_state_dict
        from ...strategies import strategy_options_of

        arch = pipeline.backbone.arch
        B.save_weights(work / B.WEIGHTS, module.backbone.weights(), module.head_state(),
                       metadata={"format": str(B.BUNDLE_FORMAT), "arch": arch})
        adapters = adapter_state_dict(module.adapter_host())
        if adapters:  # LoRA: the adapters alone as well (model.safetensors holds the merged encoder)
            B.save_weights(work / B.ADAPTERS, adapters, module.head_state(),
                           metadata={"format": str(B.BUNDLE_FORMAT), "arch": arch, "base": config.model.name,
                                     "peft_config": json.dumps(strategy_options_of(strategy))})
        data = pipeline.data
        B.atomic_write_json(work / B.LABELS, {
            "classes": data.classes, "ignore_index": data.ignore_index, "mask_format": data.mask_format,
            "colormap": [list(c) for c in data.colormap] if data.colormap else None,
            "model": pipeline.net.config(),
        })

    def final_outputs(self, work: Path, module: "Segmenter", datamodule: Any, pipeline: "SegmentationPipeline",
                      config: "RunConfig", workers: int) -> Any:
        from .predictor import FineTunedSegmenter

        model = FineTunedSegmenter(work, precision=config.trainer.inference_precision)
        outputs = model.outputs(pipeline.data.val, features=True)
        outputs.skipped = list(pipeline.data.skipped)
        self._model = model  # draws the report's worst images
        return outputs

    def write_report(self, work: Path, final: Path, outputs: Any, pipeline: "SegmentationPipeline",
                     config: "RunConfig") -> None:
        from ..classification.task import run_title, validation_description
        from .report import segmentation_report, write_segmentation_report

        data = pipeline.data
        report = segmentation_report(outputs, work, validation_description(config, pipeline), title=run_title(config),
                                     bootstrap=config.report.bootstrap, worst=self.options.worst_images,
                                     location=final, mask_format=data.mask_format, colormap=data.colormap)
        model = getattr(self, "_model", None)
        write_segmentation_report(work, report, predict_mask=model.predict_mask if model else None,
                                  read_mask=data.reader())

    # ------------------------------------------------------------------ bundles

    def load_predictor(self, path: Path, device: str | None, precision: str) -> Any:
        from .predictor import FineTunedSegmenter

        return FineTunedSegmenter(path, device=device, precision=precision)

    def evaluation_report(self, outputs: Any, bundle: str | Path, data: str, title: str, bootstrap: int,
                          mistakes: int) -> dict[str, Any]:
        from .report import segmentation_report

        labels = B.read_json(B.check_bundle(bundle) / B.LABELS)
        return segmentation_report(outputs, bundle, data, title=title, bootstrap=bootstrap,
                                   worst=min(mistakes, self.options.worst_images) if mistakes else 0,
                                   mask_format=labels.get("mask_format", "index"), colormap=labels.get("colormap"))

    def comparison_report(self, a: Any, b: Any, bundle_a: str | Path, bundle_b: str | Path, data: str, title: str,
                          bootstrap: int, mistakes: int) -> dict[str, Any]:
        from .report import segmentation_comparison

        labels = B.read_json(B.check_bundle(bundle_a) / B.LABELS)
        return segmentation_comparison(a, b, bundle_a, bundle_b, data, title=title, bootstrap=bootstrap,
                                       worst=min(mistakes, self.options.worst_images),
                                       mask_format=labels.get("mask_format", "index"), colormap=labels.get("colormap"))

    def write_evaluation(self, folder: Path, report: dict[str, Any], model: Any) -> tuple[Path, Path]:
        from .report import write_segmentation_report

        return write_segmentation_report(folder, report, predict_mask=model.predict_mask, read_mask=model.reader())
