"""Detection data: VOC / COCO / YOLO / CSV boxes (data.py) -> joint box transforms (transforms.py)
-> per-image target lists. The detector is built here too: its head size is the number of
classes found, and its anchors come from the training boxes' sizes (anchors.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ...data.datamodule import _EpochAware
from ...errors import SftuneError
from ...pipelines.base import Pipeline
from .anchors import anchors_from_boxes, input_scale
from .data import LabeledBoxes, find_labeled_boxes
from .model import DetectionNet, build_detector
from .transforms import DetectionDataset, build_box_transforms, decode_images, detection_collate


class DetectionData(_EpochAware):
    """Lists of images (each its own size: the detector resizes) and per-image target dicts."""

    def __init__(self, train: DetectionDataset, val: DetectionDataset, batch_size: int, num_workers: int,
                 seed: int) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.collate_fn = detection_collate


class DetectionPipeline(Pipeline):
    kind = "images"
    data: LabeledBoxes
    net: DetectionNet

    def __init__(self, config: Any, workers: int, log: Any, options: Any) -> None:
        super().__init__(config, workers, log)
        self.options = options  # the task's typed options (task.py DetectionOptions)

    def load(self) -> None:
        c, o = self.config, self.options
        self.data = find_labeled_boxes(c.data.path, c.data.val_path, c.data.val_fraction, c.train.seed, c.data.strict,
                                       format=None if o.format == "auto" else o.format, classes=o.classes,
                                       allow_outside_root=c.data.allow_outside_root, log=self.log)
        if not self.data.val:
            raise SftuneError(f"'{c.data.path}': no validation images (need a val split, e.g. ImageSets/Main/val.txt, "
                              f"or enough images for data.val_fraction)")
        o.classes = list(self.data.classes)
        c.task.classes = list(self.data.classes)  # saved in config.yaml: the bundle knows its classes without the data
        sizes, ratios = None, None
        if o.detector != "fcos" and o.anchors == "auto":  # FCOS is anchor-free
            stats = self.data.box_stats
            scale = np.array([input_scale(h, w, o.min_size, o.max_size) for h, w in stats.image_sizes]) \
                if len(stats.image_sizes) else 1.0
            plan = anchors_from_boxes(stats.widths, stats.heights, labels=stats.labels, scale=scale,
                                      per_level=3 if o.detector == "retinanet" else 1)
            self.log(plan.summary())
            sizes, ratios = plan.sizes, plan.aspect_ratios
        self.net = build_detector(o.detector, c.model.name, self.data.num_classes, c.model.pretrained, c.model.arch,
                                  anchor_sizes=sizes, aspect_ratios=ratios, min_size=o.min_size, max_size=o.max_size,
                                  options=detector_options(o))
        self.backbone = self.net.encoder
        c.model.arch = self.backbone.arch
        self.train_tf, self.eval_tf = build_box_transforms(hflip=c.data.hflip, iou_crop=o.iou_crop)

    def describe(self) -> str:
        d = self.data
        boxes = sum(sum(v) for v in d.box_stats.class_boxes.values()) if d.box_stats.class_boxes else 0
        return (f"{len(d.train)} train / {len(d.val)} val images, {boxes} boxes, {d.num_classes} classes "
                f"({d.format}, {d.split.get('method', 'given')} split)")

    def datamodule(self) -> DetectionData:
        c, d = self.config, self.data
        decoded = None
        if c.data.decode_cache and c.train.epochs > 1:
            started = time.time()
            decoded = decode_images(d.train, workers=max(1, self.workers))
            self.log(f"images: {len(d.train)} training images decoded once ({time.time() - started:.1f} s)")
        train = DetectionDataset(d.train, self.train_tf, seed=c.train.seed, decoded=decoded)
        val = DetectionDataset(d.val, self.eval_tf, seed=c.train.seed)
        return DetectionData(train, val, c.train.batch_size, self.workers, c.train.seed)

    def _compute_features(self) -> Any:
        raise SftuneError("object detection trains its heads on feature maps, not cached pooled features")

    def lineage(self) -> dict[str, Any]:
        c, d = self.config, self.data
        return {
            "path": str(Path(c.data.path).absolute()) if c.data.path else None,
            "val_path": str(Path(c.data.val_path).absolute()) if c.data.val_path else None,
            "fingerprint_sha256": d.fingerprint,
            "format": d.format,
            "train_images": len(d.train),
            "val_images": len(d.val),
            "classes": d.classes,
            "category_ids": d.category_ids,
            "boxes": d.box_stats.summary(),
            "skipped": [{"path": p, "reason": r} for p, r in d.skipped],
            "warnings": [{"path": p, "problem": r} for p, r in d.warnings],
            "split": d.split,
        }


def detector_options(options: Any) -> dict[str, Any]:
    """torchvision keyword arguments from the task options: Faster R-CNN's RoIs sampled per
    training image (``box_batch_size_per_image``) and RPN proposals kept per image at inference
    (``rpn_post_nms_top_n_test``), stored in the bundle's model config. The defaults are
    torchvision's (512 and 1000): on BCCD (10 epochs, frozen encoder) the CPU-saving 128/300
    trained 2.3x faster per epoch but levelled off at mAP50 0.898 against 0.914 (README,
    "Detection: sftune vs the torchvision tutorial loop"). ``task.torchvision`` keys are passed
    as given and win over both."""
    chosen: dict[str, Any] = {}
    if options.detector == "faster_rcnn":
        chosen = {"box_batch_size_per_image": int(options.rois_per_image),
                  "rpn_post_nms_top_n_test": int(options.test_proposals)}
    return {**chosen, **dict(options.torchvision)}
