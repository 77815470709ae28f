"""A fine-tuned detector loaded from its bundle: boxes, labels and scores per image at the image's
own pixel coordinates, and COCO evaluation on labeled data.

The bundle: ``config.yaml`` (task options: detector, classes, min_score), ``labels.json``
(classes, COCO category ids, the network's config incl. anchors), ``model.safetensors``
(``backbone.*`` = the encoder under timm's own key names, ``head.*`` = FPN + detector heads).
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
from .data import BoxSample, find_labeled_boxes, find_unlabeled_samples
from .model import rebuild_detector
from .outputs import DetectionOutputs
from .transforms import DetectionDataset, build_box_transforms


@dataclass
class DetectionPrediction:
    """One image's detections: ``boxes`` (N, 4) float32 xyxy pixels, ``labels`` class names,
    ``scores`` (N,) float32, highest first."""

    path: str
    boxes: np.ndarray
    labels: list[str]
    scores: np.ndarray
    drawn: str | None = None  # the image with its boxes drawn (--draw)
    skipped: str | None = None  # why this file got no prediction

    def records(self) -> list[dict[str, Any]]:
        """COCO-results-style records, one per box: image, label, score, box [x1, y1, x2, y2] in pixels
        (``sftune predict --json``). An image without a box (or skipped) still gets one record, with
        null label/score/box (and the reason), so every input shows up."""
        if self.skipped:
            return [{"image": self.path, "label": None, "score": None, "box": None, "skipped": self.skipped}]
        records = [{"image": self.path, "label": label, "score": round(float(score), 6),
                    "box": [round(float(v), 2) for v in box]}
                   for box, label, score in zip(self.boxes, self.labels, self.scores)]
        return records or [{"image": self.path, "label": None, "score": None, "box": None}]

    def json_records(self) -> list[dict[str, Any]]:
        return [{**r, "drawn": self.drawn} if self.drawn else r for r in self.records()]

    def to_dict(self) -> dict[str, Any]:
        if self.skipped:
            return {"image": self.path, "skipped": self.skipped}
        out: dict[str, Any] = {"image": self.path, "detections": [
            {k: v for k, v in r.items() if k != "image"} for r in self.records()]}
        if self.drawn:
            out["drawn"] = self.drawn
        return out

    table_columns = ("image", "boxes", "largest counts (score >= threshold)")

    def table_row(self) -> tuple[str, str, str]:
        if self.skipped:
            return self.path, "skipped", self.skipped
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
        return self.path, str(len(self.labels)), ", ".join(f"{name} {n}" for name, n in top) or "-"


class FineTunedDetector(BundlePredictor):
    """Encoder + FPN + detector heads rebuilt from the bundle; ``predict`` / ``outputs`` / ``evaluate``."""

    modality = "images"
    items_are_files = True

    def __init__(self, path: str | Path, device: str | None = None, precision: str = "auto") -> None:
        super().__init__(path, device, precision)
        self.category_ids = self.labels.get("category_ids")
        self.min_score = float(self.config.task.options().get("min_score", 0.3))
        self.net = rebuild_detector(self.labels["model"])
        backbone_state, head_state = B.split_weights(B.read_weights(self.path))
        self.net.encoder.load_weights(backbone_state, origin=str(self.path / B.WEIGHTS))
        detector_state = {k[len("detector."):]: v for k, v in head_state.items() if k.startswith("detector.")}
        missing = self.net.detector.load_state_dict(detector_state, strict=False).missing_keys
        missing = [k for k in missing if not k.startswith("backbone.encoder.")]  # the encoder came above
        if missing:
            raise SftuneError(f"{self.path / B.WEIGHTS}: detector tensors missing (e.g. {missing[0]}); "
                              f"the bundle is damaged or from another model")
        self.net.to(self.device).eval()
        # Detection runs in float32: torchvision's box ops and NMS are not bf16-safe (score ties).
        self.bf16 = False
        _, self.transform = build_box_transforms()

    def __repr__(self) -> str:
        return (f"FineTunedDetector({str(self.path)!r}, detector={self.net.detector_name!r}, "
                f"encoder={self.net.encoder.arch!r}, classes={len(self.classes)})")

    @torch.inference_mode()
    def _batches(self, samples: list[BoxSample], batch_size: int, features: bool = False
                 ) -> Iterator[tuple[list[dict[str, torch.Tensor]], list[dict[str, Any]], torch.Tensor | None,
                                     list[tuple[int, int]]]]:
        """Per batch: predictions (0-based labels, all scores), truths (empty for unlabeled), pooled
        features, and each image's (height, width) in pixels."""
        dataset = DetectionDataset(samples, self.transform)
        for start in range(0, len(samples), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(samples)))]
            images = [image.to(self.device) for image, _ in items]
            predictions = [{k: v.cpu() for k, v in p.items()} for p in self.net(images)]
            pooled = self.net.pooled(images).float().cpu() if features else None
            # The eval transform changes no geometry: each tensor's size is the image's as displayed.
            sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image, _ in items]
            yield predictions, [t for _, t in items], pooled, sizes

    def predict(self, paths: list[str | Path] | str | Path, top_k: int = 1, batch_size: int = 4,
                min_score: float | None = None, draw: str | Path | None = None) -> list[DetectionPrediction]:
        """Detect objects in image files (folders are searched for images), one prediction per file
        in input order; boxes scoring below ``min_score`` (default: the bundle's task.min_score) are
        left out. Unreadable files get a prediction with ``skipped`` set. ``draw``: a folder for
        each image with its boxes drawn (``<stem>.jpg``)."""
        from ...data.images import inspect_image, load_rgb
        from .render import draw_boxes

        threshold = self.min_score if min_score is None else float(min_score)
        samples = find_unlabeled_samples([paths] if isinstance(paths, (str, Path)) else list(paths))
        good, out = [], {}
        for s in samples:
            _, problem = inspect_image(s.image)
            if problem:
                out[str(s.image)] = DetectionPrediction(str(s.image), np.zeros((0, 4), np.float32), [],
                                                        np.zeros(0, np.float32), skipped=problem)
            else:
                good.append(s)
        folder = Path(draw) if draw else None
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
        index, used = 0, set()
        for predictions, _, _, _ in self._batches(good, batch_size):
            for p in predictions:
                sample = good[index]
                index += 1
                keep = p["scores"] >= threshold
                boxes, scores, labels = p["boxes"][keep].numpy(), p["scores"][keep].numpy(), p["labels"][keep]
                pred = DetectionPrediction(str(sample.image), boxes.astype(np.float32),
                                           [self.classes[int(i)] for i in labels], scores.astype(np.float32))
                if folder:
                    stem = sample.image.stem if sample.image.stem not in used else f"{sample.image.parent.name}_{sample.image.stem}"
                    used.add(stem)
                    picture = draw_boxes(load_rgb(sample.image), boxes, labels.numpy(), scores, self.classes)
                    pred.drawn = str(_atomic_jpeg(picture, folder / f"{stem}.jpg"))
                out[str(sample.image)] = pred
        return [out[str(s.image)] for s in samples]

    def run_cli(self, given: CliInputs) -> list[DetectionPrediction]:
        """``sftune predict``: image files and folders; --draw and --min-score."""
        given.refuse(self.path, "detects objects in images (pass image files or folders)", **{
            "--text": given.texts, "--pair": given.pairs, "--file": given.text_file, "--column": given.column,
            "--out-dir (use --draw)": given.out_dir, "--windows": given.windows})
        if not given.paths:
            raise SftuneError("nothing to detect: pass image files or folders after the bundle")
        return self.predict(list(given.paths), batch_size=min(given.batch_size, 4), min_score=given.min_score,
                            draw=given.draw)

    # ------------------------------------------------------------------ evaluation

    def labeled_samples(self, data: str | Path, strict: bool = False) -> tuple[list[BoxSample], list[tuple[str, str]]]:
        """The images to evaluate in ``data`` (its validation split when it has one, else all),
        read with the bundle's classes; and the skipped files."""
        labeled = find_labeled_boxes(data, None, 0.5, 0, strict, classes=self.classes, log=lambda _: None)
        samples = labeled.val if labeled.split.get("method") == "given" and labeled.val else labeled.train + labeled.val
        return samples, list(labeled.skipped)

    def outputs(self, data: str | Path | list[BoxSample], batch_size: int = 4, num_workers: int = 0,
                strict: bool = False, features: bool = False) -> DetectionOutputs:
        """Per-image predictions and truths (and pooled encoder ``features``) on labeled images."""
        if isinstance(data, list):
            samples, skipped = data, []
        else:
            samples, skipped = self.labeled_samples(data, strict)
        if not samples:
            raise SftuneError(f"no readable labeled images in '{data}'")
        predictions, truths, sizes, pooled = [], [], [], []
        for preds, targets, feats, shapes in self._batches(samples, min(batch_size, 4), features):
            predictions += preds
            truths += [{k: t[k] for k in ("boxes", "labels", "difficult", "iscrowd")} for t in targets]
            sizes += shapes
            if feats is not None:
                pooled.append(feats)
        return DetectionOutputs(self.classes, predictions, truths, [str(s.image) for s in samples], skipped, sizes,
                                torch.cat(pooled) if pooled else None)


def _atomic_jpeg(picture: Any, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".jpg")
    os.close(fd)
    try:
        picture.convert("RGB").save(tmp, format="JPEG", quality=88)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
