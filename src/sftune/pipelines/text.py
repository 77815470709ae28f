"""Text: CSV/TSV/JSONL/Parquet/HF datasets -> transformers encoder -> dynamic-padding batches.

A frozen encoder's sentence features are computed once and cached on disk like image
features (key: encoder weights, pooling, max length, truncation side, every text).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ..backbones.text import TextBackbone, create_text_backbone
from ..data import FeatureData
from ..data.datamodule import EpochShuffle, LengthGroupedShuffle, _EpochAware
from ..data.feature_cache import FORMAT, cache_root, lookup_features, store_features, weights_hash
from ..data.text_batches import TextCollator, TextDataset
from ..data.texts import LabeledTexts, TextSample, find_labeled_texts
from ..precision import inference_bf16
from .base import Pipeline


class TextClassificationData(_EpochAware):
    def __init__(self, train: list[TextSample], val: list[TextSample], classes: list[str], collator: TextCollator,
                 batch_size: int, num_workers: int, seed: int, multi_label: bool) -> None:
        super().__init__()
        class_to_idx = {c: i for i, c in enumerate(classes)}
        self.train_set = TextDataset(train, class_to_idx, multi_label)
        self.val_set = TextDataset(val, class_to_idx, multi_label)
        self.collate_fn = collator
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def train_sampler(self) -> EpochShuffle:
        lengths = [len(s.text) + len(s.text_pair or "") for s in self.train_set.samples]  # characters ~ tokens
        return LengthGroupedShuffle(len(self.train_set), self.seed, lengths, self.batch_size)

    def val_batch_size(self) -> int:
        return max(64, self.batch_size)


class TextPipeline(Pipeline):
    kind = "text"
    convolutional = False
    items_are_files = False
    data: LabeledTexts
    backbone: TextBackbone

    def load(self) -> None:
        c = self.config.data
        self.data = find_labeled_texts(c.path, c.val_path, c.val_fraction, self.config.train.seed, c.text_column,
                                       c.label_column, c.text_pair_column, c.multi_label, c.label_separator,
                                       strict=c.strict)
        for line in self.data.split.get("notes", []):  # how the data was read, where not the obvious way
            self.log(f"note: {line}")
        for where, problem in self.data.warnings[:5]:
            self.log(f"warning: {where}: {problem}")
        if self.data.warnings:
            self.log(f"warning: {len(self.data.warnings)} data problem(s) in total, listed in lineage.json "
                     f"(use --strict to make them an error)")
        # The columns found are saved in config.yaml: eval and predict read the same ones.
        c.text_column = c.text_column if c.text_column is not None else self.data.columns["text"]
        c.label_column = c.label_column if c.label_column is not None else self.data.columns["label"]
        c.text_pair_column = c.text_pair_column if c.text_pair_column is not None else self.data.columns.get("text_pair")
        pooling = None if self.config.model.pooling == "auto" else self.config.model.pooling
        name = self.config.model.name
        if name.startswith("file:"):  # a text bundle's fine-tuned encoder, reused
            from .. import bundle as B

            self.backbone = B.read_bundle_backbone(Path(name[len("file:"):]).expanduser())
            self.backbone.pooling = pooling or self.backbone.pooling
        else:
            self.backbone = create_text_backbone(name, self.config.model.pretrained, pooling)
        self.config.model.arch = self.backbone.arch
        self.config.model.pooling = self.backbone.pooling  # saved resolved: the bundle rebuilds the same encoder
        # Tokenizing happens in the main process per batch (fast tokenizers are Rust, batch-parallel):
        # worker processes would only add start-up time and a tokenizer copy each.
        self.workers = 0
        self.collator = TextCollator(self.backbone.tokenizer, c.max_length, c.truncation_side)
        self.truncated = self._count_long()

    def _count_long(self) -> dict[str, int]:
        """Training and validation texts longer than max_length tokens (truncated), said in one line."""
        c, d = self.config.data, self.data
        counts = {side: sum(self.collator.too_long([s.text for s in samples], [s.text_pair for s in samples]))
                  for side, samples in (("train", d.train), ("val", d.val))}
        if counts["train"] or counts["val"]:
            cut = "end" if c.truncation_side == "right" else "start"
            self.log(f"warning: {counts['train']} of {len(d.train)} training and {counts['val']} of {len(d.val)} "
                     f"validation texts are longer than --max-length {c.max_length} tokens and are truncated (their "
                     f"{cut} is not read); raise --max-length, or eval/predict with --long-texts windows")
        return counts

    def describe(self) -> str:
        d = self.data
        kind = "multi-label " if d.multi_label else ""
        pairs = " sentence pairs" if d.columns.get("text_pair") else " texts"
        return (f"{len(d.train)} train / {len(d.val)} val{pairs}, {len(d.classes)} {kind}classes "
                f"({d.split['method']} split)")

    def datamodule(self) -> L.LightningDataModule:
        return TextClassificationData(self.data.train, self.data.val, self.data.classes, self.collator,
                                      self.config.train.batch_size, self.workers, self.config.train.seed,
                                      self.data.multi_label)

    def _compute_features(self) -> FeatureData:
        started = time.time()
        config = self.config
        device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu")
        precision = "bf16" if inference_bf16(device, config.trainer.inference_precision, convolutional=False) else "32"
        model_hash = weights_hash(self.backbone)
        dm = self.datamodule()
        hits = []

        def features(dataset: TextDataset) -> torch.Tensor:
            path = self._entry(model_hash, dataset.samples, precision)
            found = lookup_features(path)
            hits.append(found is not None)
            if found is not None:
                return found
            out = encode(self.backbone, dataset, self.collator, max(64, config.train.batch_size), device, precision)
            store_features(path, out)
            return out

        train_x, val_x = features(dm.train_set), features(dm.val_set)
        train_y = torch.stack([torch.as_tensor(dm.train_set[i][2]) for i in range(len(dm.train_set))])
        val_y = torch.stack([torch.as_tensor(dm.val_set[i][2]) for i in range(len(dm.val_set))])
        source = "all from the cache" if all(hits) else f"{time.time() - started:.1f} s"
        self.log(f"features: frozen encoder run once over {len(train_x) + len(val_x)} texts ({source}); the head trains on them")
        return FeatureData(train_x, train_y, val_x, val_y, config.train.batch_size, config.train.seed)

    def _entry(self, model_hash: str, samples: list[TextSample], precision: str) -> Path:
        c = self.config.data
        h = hashlib.sha256(f"{FORMAT}|text|{model_hash}|{self.backbone.pooling}|{c.max_length}|{c.truncation_side}|{precision}".encode())
        for s in samples:
            h.update(s.text.encode())
            h.update(b"\x00" + (s.text_pair or "").encode() + b"\x01")
        key = h.hexdigest()
        return cache_root() / "features" / key[:2] / f"{key}.safetensors"

    def save_inputs_spec(self, work: Path) -> None:
        from .. import bundle as B

        self.backbone.save_pretrained(work / B.ENCODER)  # encoder config + tokenizer: the bundle stands alone

    def lineage(self) -> dict[str, Any]:
        config, data = self.config, self.data
        return {
            "path": str(Path(config.data.path).absolute()) if config.data.path else None,
            "val_path": str(Path(config.data.val_path).absolute()) if config.data.val_path else None,
            "fingerprint_sha256": data.fingerprint,
            "train_texts": len(data.train),
            "val_texts": len(data.val),
            "classes": data.classes,
            "multi_label": data.multi_label,
            "columns": data.columns,
            "warnings": [{"path": w, "problem": p} for w, p in data.warnings],
            "split": data.split,
            "truncated": {**self.truncated, "max_length": config.data.max_length},
        }


@torch.no_grad()  # not inference_mode: the features feed autograd later (LP-FT probe)
def encode(backbone: TextBackbone, dataset: TextDataset, collator: TextCollator, batch_size: int,
           device: torch.device, precision: str) -> torch.Tensor:
    """Pooled sentence features ``(len(dataset), F)`` in float32, encoder in eval mode.

    Texts are encoded in length order (less padding per batch) and put back in dataset order.
    """
    was_training = backbone.training
    model = backbone.eval().to(device)
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.samples[i].text) + len(dataset.samples[i].text_pair or ""))
    out = torch.empty(len(dataset), backbone.num_features)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        inputs, _ = collator([dataset[i] for i in index])
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out[index] = model(inputs).float().cpu()
    backbone.train(was_training)
    return out


@torch.no_grad()
def encode_windows(backbone: TextBackbone, texts: list[str], collator: TextCollator, batch_size: int,
                   device: torch.device, precision: str) -> torch.Tensor:
    """Pooled features ``(len(texts), F)`` in float32, each the mean over its text's windows of
    ``max_length`` tokens (:meth:`TextCollator.windows`): every part of a long text counts, where
    :func:`encode` reads only its first (or last) ``max_length`` tokens. The classification head
    is linear, so its logits on the mean are the mean of the windows' logits."""
    was_training = backbone.training
    model = backbone.eval().to(device)
    total = torch.zeros(len(texts), backbone.num_features)
    count = torch.zeros(len(texts))
    for start in range(0, len(texts), batch_size):
        inputs, owner = collator.windows(texts[start:start + batch_size])
        for w in range(0, len(owner), batch_size):
            part = {k: v[w:w + batch_size].to(device) for k, v in inputs.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                pooled = model(part).float().cpu()
            index = owner[w:w + batch_size] + start
            total.index_add_(0, index, pooled)
            count.index_add_(0, index, torch.ones(len(index)))
    backbone.train(was_training)
    return total / count.clamp_min(1).unsqueeze(1)
