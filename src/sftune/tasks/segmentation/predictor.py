"""A fine-tuned segmentation model loaded from its bundle: per-pixel predictions at each
image's original size, and streamed evaluation (a confusion matrix per image, never logits).

The bundle: ``config.yaml`` (task options: decoder, ignore_index, classes), ``labels.json``
(classes, mask format, colours, the network's config), ``model.safetensors`` (``backbone.*``
= the encoder under timm's own key names, ``head.*`` = decoder + segmentation head).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ... import bundle as B
from ...errors import SftuneError
from ...predictors_base import BundlePredictor, CliInputs
from .data import MaskReader, MaskSample, find_labeled_masks, find_unlabeled_samples
from .metrics import ConfusionStream
from .model import rebuild_segmentation_model
from .outputs import SegmentationOutputs
from .transforms import SegmentationDataset, build_joint_transforms, pad_collate


@dataclass
class SegmentationPrediction:
    """One image's prediction: ``mask`` (H, W) uint8 class indices at the image's own size."""

    path: str
    mask: np.ndarray
    class_fractions: dict[str, float]
    mask_file: str | None = None  # the index PNG written with --out-dir
    overlay_file: str | None = None
    skipped: str | None = None  # why this file got no prediction (unreadable, ...)

    def json_records(self) -> list[dict[str, Any]]:
        """What ``sftune predict --json`` prints for this input."""
        return [self.to_dict()]

    def to_dict(self) -> dict[str, Any]:
        if self.skipped:
            return {"path": self.path, "skipped": self.skipped}
        out: dict[str, Any] = {"path": self.path, "size": [int(self.mask.shape[0]), int(self.mask.shape[1])],
                               "class_fractions": self.class_fractions}
        if self.mask_file:
            out["mask"] = self.mask_file
            out["overlay"] = self.overlay_file
        return out

    table_columns = ("image", "largest classes (pixel share)", "mask file")

    def table_row(self) -> tuple[str, str, str]:
        """`sftune predict`'s table row: the three largest classes and where the mask went."""
        if self.skipped:
            return self.path, f"skipped: {self.skipped}", "-"
        top = sorted(self.class_fractions.items(), key=lambda kv: -kv[1])[:3]
        return self.path, ", ".join(f"{name} {share:.0%}" for name, share in top if share > 0), self.mask_file or "-"


class FineTunedSegmenter(BundlePredictor):
    """Encoder + decoder + head rebuilt from the bundle; ``predict`` / ``outputs`` / ``evaluate``."""

    modality = "images"
    items_are_files = True

    def __init__(self, path: str | Path, device: str | None = None, precision: str = "auto") -> None:
        super().__init__(path, device, precision)
        labels = self.labels
        self.ignore_index: int = int(labels["ignore_index"])
        self.mask_format: str = labels.get("mask_format", "index")
        self.colormap = [tuple(c) for c in labels["colormap"]] if labels.get("colormap") else None
        self.net = rebuild_segmentation_model(labels["model"])
        backbone_state, head_state = B.split_weights(B.read_weights(self.path))
        self.net.encoder.load_weights(backbone_state, origin=str(self.path / B.WEIGHTS))
        missing = self.net.load_state_dict(head_state, strict=False).missing_keys
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing:
            raise SftuneError(f"{self.path / B.WEIGHTS}: decoder/head tensors missing (e.g. {missing[0]}); "
                              f"the bundle is damaged or from another model")
        self.net.to(self.device).eval().to(memory_format=torch.channels_last)
        cfg = self.net.encoder.data_config()
        _, self.transform = build_joint_transforms(cfg["mean"], cfg["std"], None, (1.0, 1.0), 0.0, self.ignore_index)

    def __repr__(self) -> str:
        return (f"FineTunedSegmenter({str(self.path)!r}, decoder={self.net.decoder_name!r}, "
                f"encoder={self.net.encoder.arch!r}, classes={len(self.classes)})")

    def reader(self) -> MaskReader:
        return MaskReader(self.mask_format, tuple(self.colormap) if self.colormap and self.mask_format == "rgb" else None,
                          self.ignore_index)

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def _batches(self, samples: list[MaskSample], batch_size: int, features: bool = False
                 ) -> Iterator[tuple[list[np.ndarray], list[np.ndarray | None], torch.Tensor | None]]:
        """Per batch: predicted masks (H_i, W_i) uint8, truth masks (or None), pooled encoder features (B, F)."""
        dataset = SegmentationDataset(samples, self.reader(), self.transform)
        for start in range(0, len(samples), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(samples)))]
            sizes = [tuple(image.shape[-2:]) for image, _ in items]
            images, _ = pad_collate(items, max(1, self.net.pad_to), self.ignore_index)
            images = images.to(self.device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                pyramid = self.net.encoder(images)
                logits = self.net.segmentation_head(self.net.decoder(pyramid))
            predicted = logits.argmax(1).to(torch.uint8).cpu().numpy()
            masks = [predicted[i, :h, :w] for i, (h, w) in enumerate(sizes)]
            truths = [mask.numpy() if samples[start + i].mask is not None else None for i, (_, mask) in enumerate(items)]
            pooled = pyramid[-1].float().mean(dim=(2, 3)).cpu() if features else None
            yield masks, truths, pooled

    def predict_mask(self, image: str | Path) -> np.ndarray:
        """(H, W) uint8 class indices of one image file, at its original size."""
        masks, _, _ = next(self._batches([MaskSample(Path(image), None)], 1))
        return masks[0]

    def predict(self, paths: list[str | Path] | str | Path, top_k: int = 1, batch_size: int = 8,
                out_dir: str | Path | None = None, skip_unreadable: bool = True) -> list[SegmentationPrediction]:
        """Segment image files (folders are searched for images). Unreadable files get a
        prediction with ``skipped`` set (never cost the other files). With ``out_dir``: a
        palette index PNG (``<stem>.png``: pixel value = class index) and an overlay
        (``<stem>_overlay.jpg``) per image. ``top_k`` is accepted for a common signature."""
        from ...data.images import inspect_image
        from .render import class_fractions, overlay, save_index_png

        samples = find_unlabeled_samples([paths] if isinstance(paths, (str, Path)) else list(paths))
        good, out = [], []
        for s in samples:
            _, problem = inspect_image(s.image)
            if problem:
                if not skip_unreadable:
                    raise SftuneError(f"{s.image}: {problem}")
                out.append(SegmentationPrediction(str(s.image), np.zeros((0, 0), np.uint8), {}, skipped=problem))
            else:
                good.append(s)
        folder = Path(out_dir) if out_dir else None
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
        index, used = 0, set()
        for masks, _, _ in self._batches(good, batch_size):
            for mask in masks:
                sample = good[index]
                index += 1
                pred = SegmentationPrediction(str(sample.image), mask, class_fractions(mask, self.classes))
                if folder:
                    stem = _unique_stem(used, sample.image)
                    pred.mask_file = str(save_index_png(mask, folder / f"{stem}.png", self.classes, self.colormap))
                    from ...data.images import load_rgb

                    picture = overlay(load_rgb(sample.image), mask, num_classes=len(self.classes), colors=self.colormap)
                    overlay_path = folder / f"{stem}_overlay.jpg"
                    _atomic_jpeg(picture, overlay_path)
                    pred.overlay_file = str(overlay_path)
                out.append(pred)
        order = {str(s.image): i for i, s in enumerate(samples)}
        return sorted(out, key=lambda p: order.get(p.path, 0))

    def run_cli(self, given: CliInputs) -> list[SegmentationPrediction]:
        """``sftune predict``: image files and folders, optionally --out-dir for masks and overlays."""
        given.refuse(self.path, "segments images (pass image files or folders)", **{
            "--text": given.texts, "--pair": given.pairs, "--file": given.text_file, "--column": given.column,
            "--draw": given.draw, "--min-score": given.min_score, "--windows": given.windows})
        if not given.paths:
            raise SftuneError("nothing to segment: pass image files or folders after the bundle")
        return self.predict(list(given.paths), batch_size=min(given.batch_size, 8), out_dir=given.out_dir)

    # ------------------------------------------------------------------ evaluation

    def labeled_samples(self, data: str | Path, strict: bool = False) -> tuple[list[MaskSample], list[tuple[str, str]]]:
        """The pairs to evaluate in ``data`` (its validation pairs when it has a split, else all),
        read with the bundle's classes, mask format and ignore index; and the skipped files."""
        labeled = find_labeled_masks(data, None, 0.5, 0, strict, ignore_index=self.ignore_index, classes=self.classes,
                                     colormap=self.colormap, log=lambda _: None)
        samples = labeled.val if labeled.split.get("method") == "given" and labeled.val else labeled.train + labeled.val
        return samples, list(labeled.skipped)

    def outputs(self, data: str | Path | list[MaskSample], batch_size: int = 8, num_workers: int = 0,
                strict: bool = False, features: bool = False) -> SegmentationOutputs:
        """Per-image confusion matrices (and pooled encoder ``features``) on labeled pairs."""
        if isinstance(data, list):
            samples, skipped = data, []
        else:
            samples, skipped = self.labeled_samples(data, strict)
        if not samples:
            raise SftuneError(f"no readable image/mask pairs in '{data}'")
        stream = ConfusionStream(len(self.classes), self.ignore_index)
        sizes, pooled = [], []
        for masks, truths, feats in self._batches(samples, min(batch_size, 8), features):
            for mask, truth in zip(masks, truths):
                stream.update(torch.from_numpy(mask.astype(np.int64))[None], torch.from_numpy(truth)[None])
                sizes.append(mask.shape)
            if feats is not None:
                pooled.append(feats)
        items = [{"image": str(s.image), "mask": str(s.mask)} for s in samples]
        return SegmentationOutputs.from_stream(stream, self.classes, items, skipped, sizes,
                                               torch.cat(pooled) if pooled else None)



def _unique_stem(used: set[str], image: Path) -> str:
    """``<stem>``, or ``<parent>_<stem>`` (then numbered) when two inputs of one call share a stem."""
    stem = image.stem if image.stem not in used else f"{image.parent.name}_{image.stem}"
    base, n = stem, 1
    while stem in used:
        n += 1
        stem = f"{base}_{n}"
    used.add(stem)
    return stem


def _atomic_jpeg(picture: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".jpg")
    os.close(fd)
    try:
        picture.convert("RGB").save(tmp, format="JPEG", quality=88)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
