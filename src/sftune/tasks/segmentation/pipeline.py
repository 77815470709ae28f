"""Segmentation data: image/mask pairs (data.py) -> joint transforms (transforms.py) -> padded batches.

The model is built here too, because its head size is the number of classes found in the
masks: an smp decoder on a timm encoder (model.py) whose encoder is the ``backbone``.
Pooled-feature caches do not apply (the decoder needs full feature maps every step); the
decode-once cache keeps every training image and mask in memory after the first read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...data.datamodule import _EpochAware
from ...errors import SftuneError
from ...pipelines.base import Pipeline
from .data import LabeledMasks, find_labeled_masks
from .model import SegmentationNet, build_segmentation_model
from .transforms import SegmentationDataset, build_joint_transforms, decode_pairs, pad_collate


class SegmentationData(_EpochAware):
    """Train batches: random scale/crop/flip of (image, mask); val batches: whole images, padded
    to the batch's largest size (pad = ignore_index, never scored)."""

    def __init__(self, train: SegmentationDataset, val: SegmentationDataset, batch_size: int, num_workers: int,
                 seed: int, stride: int, ignore_index: int, val_batch_size: int) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self._val_batch_size = val_batch_size
        self.collate_fn = _Collate(stride, ignore_index)
        self.drop_single_last = True

    def val_batch_size(self) -> int:
        return self._val_batch_size


class _Collate:
    """pad_collate with its settings bound (picklable for DataLoader workers)."""

    def __init__(self, stride: int, ignore_index: int) -> None:
        self.stride, self.ignore_index = stride, ignore_index

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_collate(batch, self.stride, self.ignore_index)


class SegmentationPipeline(Pipeline):
    kind = "images"
    data: LabeledMasks
    net: SegmentationNet

    def __init__(self, config: Any, workers: int, log: Any, options: Any) -> None:
        super().__init__(config, workers, log)
        self.options = options  # the task's typed options (task.py SegmentationOptions)

    def load(self) -> None:
        c, o = self.config, self.options
        self.data = find_labeled_masks(c.data.path, c.data.val_path, c.data.val_fraction, c.train.seed, c.data.strict,
                                       ignore_index=o.ignore_index, classes=o.classes, colormap=o.colormap,
                                       allow_outside_root=c.data.allow_outside_root, log=self.log)
        if not self.data.val:
            raise SftuneError(f"'{c.data.path}': no validation pairs (need val/ + valannot/, a split column, "
                              f"or enough pairs for data.val_fraction)")
        # Saved in config.yaml: the bundle (and --resume) know the class names without the data.
        # The data's list, not the given one: a trailing 'void' name for ignore_index is dropped there.
        o.classes = list(self.data.classes)
        c.task.classes = list(self.data.classes)  # the task's options are a copy of config.task's
        self.net = build_segmentation_model(o.decoder, c.model.name, self.data.num_classes, c.model.pretrained,
                                            c.model.arch)
        self.backbone = self.net.encoder
        c.model.arch = self.backbone.arch
        self.data_config = self.backbone.data_config()
        self.train_tf, self.eval_tf = build_joint_transforms(
            self.data_config["mean"], self.data_config["std"], o.crop_size, tuple(o.scale), c.data.hflip, o.ignore_index)

    def describe(self) -> str:
        d = self.data
        return (f"{len(d.train)} train / {len(d.val)} val image/mask pairs, {d.num_classes} classes, "
                f"{d.mask_format} masks, ignore index {d.ignore_index} ({d.split.get('method', 'given')} split)")

    def datamodule(self) -> SegmentationData:
        c, d = self.config, self.data
        reader = d.reader()
        decoded = None
        if c.data.decode_cache and c.train.epochs > 1:
            started = time.time()
            decoded = decode_pairs(d.train, reader, workers=max(1, self.workers))
            self.log(f"images: {len(d.train)} training image/mask pairs decoded once "
                     f"({decoded.nbytes / 2**20:.0f} MiB in memory, {time.time() - started:.1f} s)")
        train = SegmentationDataset(d.train, reader, self.train_tf, seed=c.train.seed, decoded=decoded)
        val = SegmentationDataset(d.val, reader, self.eval_tf, seed=c.train.seed)
        # Whole validation images are large next to training crops: a few per batch.
        return SegmentationData(train, val, c.train.batch_size, self.workers, c.train.seed, self.net.pad_to,
                                d.ignore_index, val_batch_size=max(1, min(8, c.train.batch_size)))

    def _compute_features(self) -> Any:
        raise SftuneError("semantic segmentation trains its decoder on feature maps, not cached pooled features")

    def class_pixel_weights(self) -> torch.Tensor:
        """Median-frequency class weights (Eigen & Fergus 2015, as SegNet trains on CamVid):
        weight_c = median(freq) / freq_c over the training pixels; 0 for classes never seen."""
        counts = torch.tensor(self.data.class_pixels.get("train") or [1] * self.data.num_classes, dtype=torch.float64)
        freq = counts / counts.sum().clamp(min=1)
        present = freq > 0
        weights = torch.zeros_like(freq)
        weights[present] = freq[present].median() / freq[present]
        return weights.float()

    def lineage(self) -> dict[str, Any]:
        c, d = self.config, self.data
        return {
            "path": str(Path(c.data.path).absolute()) if c.data.path else None,
            "val_path": str(Path(c.data.val_path).absolute()) if c.data.val_path else None,
            "fingerprint_sha256": d.fingerprint,
            "train_images": len(d.train),
            "val_images": len(d.val),
            "classes": d.classes,
            "ignore_index": d.ignore_index,
            "mask_format": d.mask_format,
            "class_pixels": d.class_pixels,
            "skipped": [{"path": p, "reason": r} for p, r in d.skipped],
            "warnings": [{"path": p, "problem": r} for p, r in d.warnings],
            "split": d.split,
        }
