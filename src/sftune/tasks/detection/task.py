"""``object_detection``: boxes and classes for every object. torchvision's Faster R-CNN (default),
RetinaNet or FCOS over an FPN on a timm encoder (the offline EfficientNet-Lite0 ImageNet weights by
default), anchors fitted to the training boxes, COCO mAP checked against pycocotools."""

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
    from .module import Detector
    from .pipeline import DetectionPipeline


class DetectionOptions(TaskOptions):
    """``task:`` options of object detection (``--set task.<key>=...``)."""

    detector: Literal["faster_rcnn", "retinanet", "fcos"] = Field("faster_rcnn", description="torchvision detector over the FPN")
    format: Literal["auto", "voc", "coco", "yolo", "csv"] = Field("auto", description="annotation format (auto: from the layout)")
    anchors: Literal["auto", "default"] = Field("auto", description="anchor sizes/ratios from the training boxes (auto) or torchvision's")
    min_size: int = Field(480, ge=32, le=4096, description="the detector resizes the shorter image side to this (px)...")
    max_size: int = Field(640, ge=32, le=8192, description="...unless the longer side would exceed this (px)")
    iou_crop: float = Field(0.3, ge=0, le=1, description="probability of a random crop that keeps boxes whole (RandomIoUCrop)")
    min_score: float = Field(0.3, ge=0, le=1, description="predict: boxes scoring below this are left out (--min-score)")
    rois_per_image: int = Field(512, ge=8, le=4096, description="faster_rcnn: proposals sampled per image to train the box head (torchvision's 512; 128 trains 2.3x faster per epoch on a CPU, to a lower mAP)")
    test_proposals: int = Field(1000, ge=10, le=10000, description="faster_rcnn: RPN proposals per image kept for the box head at inference (torchvision's 1000)")
    torchvision: dict[str, Any] = Field(default_factory=dict, description="further keyword arguments of torchvision's FasterRCNN/RetinaNet/FCOS, e.g. {rpn_batch_size_per_image: 128}")
    classes: list[str] | None = Field(None, description="class names and order (default: from the annotations)")
    worst_images: int = Field(8, ge=0, le=100, description="worst validation images (by per-image AP50) drawn in the report")


@TASKS.register("object_detection")
class ObjectDetection(Task):
    name = "object_detection"
    modality = "images"
    summary = "images -> boxes + classes; Faster R-CNN/RetinaNet/FCOS (torchvision) over an FPN on a timm encoder"
    Options = DetectionOptions
    monitor = ("val/map", "max")
    metrics = {"val/map": "max", "val/map_50": "max", "val/map_75": "max", "val/mar_100": "max"}
    backbone_output = "pyramid"
    caches_features = False
    continual = False
    default_model = "efficientnet_lite0"
    # Whole images (640x480 on BCCD) with up to 512 sampled RoIs each: a few per step (the peer: 2).
    defaults = {"train.batch_size": 4}
    detect_priority = 15  # below segmentation: VOC segmentation folders also hold Annotations/
    options: DetectionOptions

    @classmethod
    def claims(cls, config: "RunConfig") -> bool:
        from .data import is_detection_data

        return bool(config.data.path) and is_detection_data(config.data.path)

    def pipeline(self, config: "RunConfig", workers: int, log: Callable[[str], None]) -> "DetectionPipeline":
        from .pipeline import DetectionPipeline

        return DetectionPipeline(config, workers, log, self.options)

    def refusal(self, strategy: "Strategy") -> str | None:
        if strategy.probes_head:
            return ("its closed-form probe fits a linear head on pooled features, and detection heads are not one; "
                    "use freeze_unfreeze (heads first, then everything) or full")
        return None

    def module(self, pipeline: "DetectionPipeline", strategy: "Strategy", config: "RunConfig") -> "Detector":
        from .module import Detector

        return Detector(pipeline.net, strategy, config.train)

    def evaluate_in_memory(self, module: "Detector", datamodule: Any, bf16: bool) -> dict[str, float]:
        from ...data.datamodule import make_loader
        from .metrics import detection_metric

        module.eval()
        device = next(module.parameters()).device
        metric = detection_metric(module.num_classes, class_metrics=False)
        loader = make_loader(datamodule.val_set, datamodule.val_batch_size(), datamodule.num_workers,
                             collate_fn=datamodule.collate_fn)
        with torch.inference_mode():
            for images, targets in loader:
                metric.update(module([i.to(device) for i in images]), targets)
        values = {k: float(v) for k, v in metric.compute().items() if getattr(v, "ndim", 1) == 0}
        values["acc"], values["f1"] = values["map_50"], values["map"]  # what WiSE-FT's grid reports
        return values

    def save_model(self, work: Path, module: "Detector", pipeline: "DetectionPipeline", datamodule: Any,
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
        B.atomic_write_json(work / B.LABELS, {"classes": data.classes, "category_ids": data.category_ids,
                                              "format": data.format, "model": pipeline.net.config()})

    def final_outputs(self, work: Path, module: "Detector", datamodule: Any, pipeline: "DetectionPipeline",
                      config: "RunConfig", workers: int) -> Any:
        from .predictor import FineTunedDetector

        outputs = FineTunedDetector(work, precision=config.trainer.inference_precision).outputs(
            pipeline.data.val, features=True)
        outputs.skipped = list(pipeline.data.skipped)
        return outputs

    def write_report(self, work: Path, final: Path, outputs: Any, pipeline: "DetectionPipeline",
                     config: "RunConfig") -> None:
        from ..classification.task import run_title, validation_description
        from .report import detection_report, write_detection_report

        report = detection_report(outputs, work, validation_description(config, pipeline), title=run_title(config),
                                  bootstrap=config.report.bootstrap, worst=self.options.worst_images, location=final)
        write_detection_report(work, report)

    # ------------------------------------------------------------------ bundles

    def load_predictor(self, path: Path, device: str | None, precision: str) -> Any:
        from .predictor import FineTunedDetector

        return FineTunedDetector(path, device=device, precision=precision)

    def evaluation_report(self, outputs: Any, bundle: str | Path, data: str, title: str, bootstrap: int,
                          mistakes: int) -> dict[str, Any]:
        from .report import detection_report

        return detection_report(outputs, bundle, data, title=title, bootstrap=bootstrap,
                                worst=min(mistakes, self.options.worst_images) if mistakes else 0)

    def comparison_report(self, a: Any, b: Any, bundle_a: str | Path, bundle_b: str | Path, data: str, title: str,
                          bootstrap: int, mistakes: int) -> dict[str, Any]:
        from .report import detection_comparison

        return detection_comparison(a, b, bundle_a, bundle_b, data, title=title, bootstrap=bootstrap,
                                    worst=min(mistakes, self.options.worst_images))

    def write_evaluation(self, folder: Path, report: dict[str, Any], model: Any) -> tuple[Path, Path]:
        from .report import write_detection_report

        return write_detection_report(folder, report)
