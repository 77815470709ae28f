"""A fine-tuned model loaded from its bundle: predict and evaluate, no training code needed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import bundle as B
from .config import load_yaml, validate
from .data import ImageDataset, Sample, build_transforms, find_unlabeled_images, make_loader
from .data.sources import check_images, scan_class_folders, read_manifest, VAL_DIR_NAMES
from .errors import SftuneError
from .eval.outputs import Outputs, describe_item, gather
from .heads import ClassifierHead
from .predictors_base import BundlePredictor, CliInputs

if TYPE_CHECKING:
    from .tasks import Task


@dataclass
class Prediction:
    path: str
    label: str | None  # None when the file was skipped
    score: float  # softmax probability of ``label``
    top_k: list[tuple[str, float]] = field(default_factory=list)
    skipped: str | None = None  # why this file got no prediction (not an image, unreadable, ...)

    def json_records(self) -> list[dict[str, Any]]:
        """What ``sftune predict --json`` prints for this input."""
        return [self.to_dict()]

    def to_dict(self) -> dict[str, Any]:
        if self.skipped:
            return {"path": self.path, "label": None, "score": None, "skipped": self.skipped}
        return {"path": self.path, "label": self.label, "score": round(self.score, 6),
                "top_k": [{"label": lbl, "score": round(s, 6)} for lbl, s in self.top_k]}


class FineTunedModel(BundlePredictor):
    """An image classifier: backbone + head rebuilt from ``config.yaml`` and ``model.safetensors``."""

    modality = "images"
    items_are_files = True  # a report shows its examples as thumbnails

    def __init__(self, path: str | Path, device: str | None = None, precision: str = "auto") -> None:
        super().__init__(path, device, precision)
        self.backbone, head_state = B.read_bundle_model(self.path, self.config.model.arch, source=self.config.model.name)
        self.head = ClassifierHead(self.backbone.num_features, len(self.classes))
        self.head.load_state_dict(head_state)
        # channels_last: oneDNN/cuDNN's fast convolution layout (~1.7x on CPU for EfficientNet-Lite0).
        self.model = torch.nn.Sequential(self.backbone, self.head).to(self.device).eval()
        self.model.to(memory_format=torch.channels_last)
        data_cfg = self.backbone.data_config(self.config.data.image_size)
        _, self.transform = build_transforms(data_cfg, self.config.data)

    def __repr__(self) -> str:
        return f"FineTunedModel({str(self.path)!r}, arch={self.backbone.arch!r}, classes={len(self.classes)})"

    def logits(self, samples: list[Sample], batch_size: int = 64, num_workers: int = 0,
               digests: dict[Path, str] | None = None):
        """Yield ``(logits (B, C), labels (B,))`` batches; labels are -1 for unlabeled samples.

        With the files' content ``digests``, features a training run cached for this very
        backbone (a linear probe's) are used instead of running the backbone again.
        """
        for logits, labels, _ in self._batches(samples, batch_size, num_workers, digests, features=False):
            yield logits, labels

    @torch.inference_mode()
    def _batches(self, samples: list[Sample], batch_size: int, num_workers: int, digests: dict[Path, str] | None,
                 features: bool):
        """``(logits (B, C), labels (B,), pooled features (B, F) or None)`` per batch, in sample order."""
        index = {c: i for i, c in enumerate(self.classes)}
        cached = self._cached_features(samples, digests) if digests else None
        if cached is not None:
            labels = torch.tensor([index.get(s.label, -1) for s in samples])
            for start in range(0, len(samples), batch_size):
                pooled = cached[start : start + batch_size].to(self.device)
                yield (self.head(pooled).float().cpu(), labels[start : start + batch_size],  # head is in eval mode
                       pooled.float().cpu() if features else None)
            return
        dataset = ImageDataset(samples, index, self.transform)
        for images, labels in make_loader(dataset, batch_size, num_workers):
            images = images.to(self.device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                pooled = self.backbone(images)
                logits = self.head(pooled)
            yield logits.float().cpu(), labels, pooled.float().cpu() if features else None

    def _cached_features(self, samples: list[Sample], digests: dict[Path, str]) -> torch.Tensor | None:
        from .data.feature_cache import cached_eval_features

        try:
            ordered = [digests[s.path] for s in samples]
        except KeyError:
            return None
        return cached_eval_features(self.backbone, self.transform, ordered, self.config.train.seed,
                                    "bf16" if self.bf16 else "32")

    def predict(self, paths: list[str | Path] | str | Path, top_k: int = 1, batch_size: int = 64, num_workers: int = 0,
                strict: bool = False) -> list[Prediction]:
        """Classify image files (folders are searched for images), one prediction per file in
        input order. A file that is not a readable image never costs the others: its
        prediction has ``label`` None and ``skipped`` set to the reason (``strict``: an error)."""
        unused: list[tuple[str, str]] = []  # files in the folders that are not images, looping links, ...
        files = find_unlabeled_images([paths] if isinstance(paths, (str, Path)) else list(paths), unused)
        if strict and unused:
            raise SftuneError(f"{unused[0][0]}: {unused[0][1]}; remove it, or drop --strict to skip it")
        good, skipped, digests = check_images([Sample(f, "") for f in files], strict=strict)
        skipped = unused + skipped
        k = max(1, min(top_k, len(self.classes)))
        by_path: dict[str, Prediction] = {path: Prediction(path, None, 0.0, skipped=reason) for path, reason in skipped}
        index = 0
        for logits, _ in self.logits(good, batch_size, num_workers, digests):
            probs = logits.softmax(dim=-1)
            scores, idx = probs.topk(k, dim=-1)
            for row_scores, row_idx in zip(scores.tolist(), idx.tolist()):
                ranked = [(self.classes[i], s) for i, s in zip(row_idx, row_scores)]
                path = str(good[index].path)
                by_path[path] = Prediction(path, ranked[0][0], ranked[0][1], ranked)
                index += 1
        return [by_path[str(f)] for f in files] + [by_path[path] for path, _ in unused]

    def run_cli(self, given: CliInputs) -> list[Prediction]:
        """``sftune predict``: image files and folders; other bundles' flags are refused in one line."""
        given.refuse(self.path, "classifies images (pass image files or folders)", **{
            "--text": given.texts, "--pair": given.pairs, "--file": given.text_file, "--column": given.column,
            "--out-dir": given.out_dir, "--draw": given.draw, "--min-score": given.min_score, "--windows": given.windows})
        if not given.paths:
            raise SftuneError("nothing to classify: pass image files or folders after the bundle")
        return self.predict(list(given.paths), top_k=given.top_k, batch_size=given.batch_size)

    def outputs(self, data: str | Path | list[Sample], batch_size: int = 64, num_workers: int = 0,
                strict: bool = False, features: bool = False) -> Outputs:
        """Per-example scores (and pooled ``features``) on labeled images: a class folder, a
        train/val root's val/, a CSV, or samples; unreadable files are skipped (``strict``: fatal)."""
        samples = data if isinstance(data, list) else labeled_eval_samples(Path(data))
        skipped: list[tuple[str, str]] = []
        digests: dict[Path, str] | None = None
        if not isinstance(data, list):
            samples, skipped, digests = check_images(samples, strict)
        # Labels spelled as a class of the model (Positive/positive, 1.0/1, NFD/NFC) are that class.
        from .data.labels import align_to_classes

        aligned = align_to_classes([s.label for s in samples], self.classes)
        samples = [dataclasses.replace(s, label=aligned[s.label]) if s.label in aligned else s for s in samples]
        unknown = sorted({s.label for s in samples} - set(self.classes))
        if unknown:
            raise SftuneError(
                f"evaluation data has classes the model was not trained on: {', '.join(unknown)}; "
                f"it knows: {', '.join(self.classes)}"
            )
        if not samples:
            raise SftuneError(f"no readable labeled images in '{data}'")
        return gather(self.classes, [describe_item(s) for s in samples],
                      self._batches(samples, batch_size, num_workers, digests, features), skipped=skipped)


def labeled_eval_samples(path: Path) -> list[Sample]:
    """Labeled images for ``eval``: a class folder, a CSV, or the val/ (else test/) of a train/val root."""
    path = path.expanduser()
    if not path.exists():
        raise SftuneError(f"evaluation data '{path}' does not exist; pass a folder of class sub-folders or a CSV manifest")
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".tsv"):
            raise SftuneError(f"'{path}' is a file but not a .csv/.tsv manifest")
        train, val = read_manifest(path)
        return val if val is not None else train
    for name in (*VAL_DIR_NAMES, "test"):
        if (path / "train").is_dir() and (path / name).is_dir():
            return scan_class_folders(path / name)
    return scan_class_folders(path)


def load(path: str | Path, device: str | None = None, precision: str = "auto") -> Any:
    """Load a bundle written by ``sftune train`` / :func:`sftune.finetune` as its task's predictor
    (an image or text classifier, a segmentation model, ...: the task named in its config.yaml).

    ``precision``: ``auto`` (bfloat16 where the CPU/GPU has native bf16), ``32`` or ``bf16``.
    """
    task, folder = bundle_task(path)
    return task.load_predictor(folder, device, precision)


def bundle_task(path: str | Path) -> "tuple[Task, Path]":
    """The task (with its saved options) of the bundle at ``path``, and the bundle folder."""
    from .tasks import create_task

    folder = B.check_bundle(path)
    config = validate(load_yaml(folder / B.CONFIG), source=str(folder / B.CONFIG))
    return create_task(config.task.name, config.task.options()), folder


def require_continual(path: str | Path, command: str) -> None:
    """One line instead of a deep failure when ``sftune drift``/``update`` meets a bundle whose
    task has no drift reference or update gate (Task.continual False)."""
    task, folder = bundle_task(path)
    if not task.continual:
        raise SftuneError(f"sftune {command} is not available for {task.name} bundles yet ('{folder}'): drift statistics "
                          f"and the update gate exist for classification only; evaluate new labeled data with "
                          f"sftune eval {folder} --data NEW_DATA")
