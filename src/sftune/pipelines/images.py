"""Images: folders or CSV manifests -> timm backbone -> transforms, decoded-image and feature caches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ..backbones import create_backbone
from ..data import FeatureData, ImageClassificationData, build_transforms, find_labeled_images
from ..data.feature_cache import cached_features, weights_hash
from ..precision import inference_bf16
from .base import Pipeline


class ImagePipeline(Pipeline):
    kind = "images"

    def load(self) -> None:
        config = self.config
        self.data = find_labeled_images(config.data.path, config.data.val_path, config.data.val_fraction,
                                        config.train.seed, config.data.strict, config.data.allow_outside_root)
        for line in self.data.split.get("notes", []):  # how the layout was read, where not the obvious way
            self.log(f"note: {line}")
        for path, reason in self.data.skipped[:5]:
            self.log(f"warning: skipped {path}: {reason}")
        if self.data.skipped:
            self.log(f"warning: skipped {len(self.data.skipped)} unreadable file(s) in total (use --strict to make this an error)")
        for where, problem in self.data.warnings[:5]:
            self.log(f"warning: {where}: {problem}")
        if self.data.warnings:
            self.log(f"warning: {len(self.data.warnings)} data problem(s) in total, listed in lineage.json "
                     f"(use --strict to make them an error)")
        self.backbone = create_backbone(config.model.name, config.model.pretrained, config.model.arch)
        config.model.arch = self.backbone.arch
        self.data_config = self.backbone.data_config(config.data.image_size)
        self.train_tf, self.eval_tf = build_transforms(self.data_config, config.data)

    def describe(self) -> str:
        d = self.data
        return f"{len(d.train)} train / {len(d.val)} val images, {len(d.classes)} classes ({d.split['method']} split)"

    def datamodule(self) -> L.LightningDataModule:
        config = self.config
        return ImageClassificationData(
            self.data.train, self.data.val, self.data.classes, self.train_tf, self.eval_tf, config.train.batch_size,
            self.workers, config.train.seed, decoded_train=self._decoded_train_images(),
        )

    def _decoded_train_images(self):
        """Training images decoded once into a memory-mapped cache (several epochs on images only)."""
        config, data = self.config, self.data
        if not config.data.decode_cache or config.train.epochs < 2:
            return None
        from ..data.decoded_cache import decoded_images

        # The random-resized crop needs no more than the eval resize (input_size / crop_pct, 256 px for 224).
        short_side = round(self.data_config["input_size"][-1] / self.data_config.get("crop_pct", 0.875))
        started = time.time()
        try:
            decoded, hit = decoded_images(data.train, [data.digests[s.path] for s in data.train], short_side, self.workers)
        except OSError as e:  # a read-only or full cache folder costs speed, never the run
            self.log(f"warning: decoded-image cache unavailable ({e}); reading the files every epoch")
            return None
        source = "from the cache" if hit else f"{time.time() - started:.1f} s"
        self.log(f"images: {len(data.train)} training images decoded once, short side at most {short_side} px ({source})")
        return decoded

    def _compute_features(self) -> FeatureData:
        """The frozen backbone runs once per image (or comes from the on-disk cache)."""
        config, data, backbone = self.config, self.data, self.backbone
        started = time.time()
        device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu")
        model_hash = weights_hash(backbone)
        precision = "bf16" if inference_bf16(device, config.trainer.inference_precision) else "32"
        common = dict(batch_size=max(64, config.train.batch_size), num_workers=self.workers, device=device, precision=precision)
        index = data.class_to_idx

        def features(samples, transform, views=0):
            digests = [data.digests[s.path] for s in samples]
            return cached_features(backbone, model_hash, samples, digests, transform, views=views, seed=config.train.seed, **common)

        train_x, hit_train = features(data.train, self.eval_tf)
        train_y = torch.tensor([index[s.label] for s in data.train])
        val_x, hit_val = features(data.val, self.eval_tf)
        val_y = torch.tensor([index[s.label] for s in data.val])
        hits = [hit_train, hit_val]
        if config.data.feature_views:
            views_x, hit_views = features(data.train, self.train_tf, views=config.data.feature_views)
            train_x, train_y = torch.cat([train_x, views_x]), torch.cat([train_y, train_y.repeat(config.data.feature_views)])
            hits.append(hit_views)
        source = "all from the cache" if all(hits) else f"{time.time() - started:.1f} s"
        self.log(f"features: frozen backbone run once over {len(data.train) + len(data.val)} images ({source}); the head trains on them")
        return FeatureData(train_x, train_y, val_x, val_y, config.train.batch_size, config.train.seed)

    def lineage(self) -> dict[str, Any]:
        config, data = self.config, self.data
        return {
            "path": str(Path(config.data.path).absolute()) if config.data.path else None,
            "fingerprint_sha256": data.fingerprint,
            "train_images": len(data.train),
            "val_images": len(data.val),
            "classes": data.classes,
            "skipped": [{"path": p, "reason": r} for p, r in data.skipped],
            "warnings": [{"path": p, "problem": r} for p, r in data.warnings],
            "split": data.split,
        }
