"""A fine-tuned text classifier loaded from its bundle: predict and evaluate, nothing else needed.

The bundle's ``encoder/`` folder holds the encoder config and tokenizer, model.safetensors the
weights, labels.json the classes (and, multi-label, the per-class decision thresholds).
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from . import bundle as B
from .data.text_batches import TextCollator, TextDataset
from .data.texts import TextSample, read_labeled_texts
from .errors import SftuneError
from .eval.outputs import Outputs, describe_item, gather
from .heads import ClassifierHead
from .predictors_base import BundlePredictor, CliInputs


@dataclass
class TextPrediction:
    text: str
    label: str | list[str]  # multi-label: every class over its threshold
    score: float  # probability of ``label`` (multi-label: of the most likely class)
    top_k: list[tuple[str, float]] = field(default_factory=list)
    text_pair: str | None = None  # sentence-pair models: the second text

    def json_records(self) -> list[dict[str, Any]]:
        """What ``sftune predict --json`` prints for this input."""
        return [self.to_dict()]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        if self.text_pair is not None:
            out["text_pair"] = self.text_pair
        return {**out, "label": self.label, "score": round(self.score, 6),
                "top_k": [{"label": lbl, "score": round(s, 6)} for lbl, s in self.top_k]}


class FineTunedTextModel(BundlePredictor):
    """A text classifier: the encoder rebuilt from the bundle's ``encoder/`` folder, its weights and head."""

    modality = "text"
    items_are_files = False  # a report shows its examples as text snippets
    convolutional = False

    def __init__(self, path: str | Path, device: str | None = None, precision: str = "auto") -> None:
        super().__init__(path, device, precision)
        labels = self.labels
        self.multi_label: bool = self.config.data.multi_label
        self.thresholds: list[float] = labels.get("thresholds") or [0.5] * len(self.classes)
        self.backbone, head_state = B.read_bundle_model(self.path, self.config.model.arch, self.config.model.name,
                                                        pooling=self.config.model.pooling)
        self.head = ClassifierHead(self.backbone.num_features, len(self.classes))
        self.head.load_state_dict(head_state)
        self.model = torch.nn.Sequential(self.backbone, self.head).to(self.device).eval()
        self.collator = TextCollator(self.backbone.tokenizer, self.config.data.max_length, self.config.data.truncation_side)

    def __repr__(self) -> str:
        return f"FineTunedTextModel({str(self.path)!r}, encoder={self.backbone.arch!r}, classes={len(self.classes)})"

    def logits(self, samples: list[TextSample], batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(logits (B, C), targets)`` batches in sample order; multi-label logits are shifted so
        that 0 is each class's threshold (sigmoid 0.5 == the tuned threshold).

        Texts are encoded in length-sorted batches exactly as training's feature pass does, so a
        linear probe's metrics.json and ``sftune eval`` on the same texts agree to the bit."""
        for logits, targets, _ in self._batches(samples, batch_size, features=False):
            yield logits, targets

    @torch.inference_mode()
    def _batches(self, samples: list[TextSample], batch_size: int, features: bool):
        """``(logits (B, C), targets, pooled features (B, F) or None)`` per batch, in sample order."""
        from .pipelines.text import encode

        dataset = TextDataset(samples, {c: i for i, c in enumerate(self.classes)}, self.multi_label)
        pooled = encode(self.backbone, dataset, self.collator, batch_size, self.device, "bf16" if self.bf16 else "32")
        shift = torch.tensor([math.log(t / (1 - t)) for t in self.thresholds]) if self.multi_label else None
        for start in range(0, len(dataset), batch_size):
            index = range(start, min(start + batch_size, len(dataset)))
            batch = pooled[start:index.stop].to(self.device)
            logits = self.head(batch).float().cpu()
            targets = torch.stack([torch.as_tensor(dataset[i][2]) for i in index])
            yield (logits - shift if shift is not None else logits), targets, batch.float().cpu() if features else None

    @property
    def takes_pairs(self) -> bool:
        """True for a model trained on sentence pairs: predict() wants (text, text_pair) tuples."""
        return self.config.data.text_pair_column is not None

    def run_cli(self, given: CliInputs) -> list["TextPrediction"]:
        """``sftune predict``: --text (with --pair for sentence pairs) and --file; other bundles' inputs
        and flags are refused in one line."""
        if given.paths:
            raise SftuneError(f"'{self.path}' classifies texts: pass them with --text \"...\" or --file FILE, not as paths")
        given.refuse(self.path, "classifies texts", **{"--out-dir": given.out_dir, "--draw": given.draw,
                                                       "--min-score": given.min_score, "--windows": given.windows})
        texts, pairs = given.texts, given.pairs
        if pairs and len(pairs) != len(texts):
            raise SftuneError(f"--pair given {len(pairs)} times for {len(texts)} --text; give one --pair per --text")
        inputs: list[Any] = list(zip(texts, pairs)) if pairs else list(texts)
        if given.text_file and self.takes_pairs:
            from .data.texts import read_text_pairs_for_prediction

            c = self.config.data
            inputs += read_text_pairs_for_prediction(given.text_file,
                                                     given.column if given.column is not None else c.text_column,
                                                     c.text_pair_column)
        elif given.text_file:
            from .data.texts import read_texts_for_prediction

            inputs += read_texts_for_prediction(given.text_file, given.column)
        if not inputs:
            raise SftuneError("nothing to classify: pass --text \"...\" (repeatable) or --file FILE")
        return self.predict(inputs, top_k=given.top_k, batch_size=given.batch_size)

    def predict(self, texts: list[str] | list[tuple[str, str]] | str, top_k: int = 1,
                batch_size: int = 64) -> list[TextPrediction]:
        """Classify texts, or (text, text_pair) tuples for a sentence-pair model."""
        items = [texts] if isinstance(texts, (str, tuple)) else list(texts)
        samples = [TextSample(t[0], "", t[1]) if isinstance(t, tuple) else TextSample(t, "") for t in items]
        empty = [i for i, s in enumerate(samples) if not s.text.strip() or (s.text_pair is not None and not s.text_pair.strip())]
        if empty:
            raise SftuneError(f"text {empty[0] + 1} of {len(samples)} is empty; give non-empty texts")
        with_pairs = sum(s.text_pair is not None for s in samples)
        if self.takes_pairs and with_pairs < len(samples):
            raise SftuneError("this model classifies sentence pairs: give (text, text_pair) tuples "
                              "(CLI: --text A --pair B, or --file with both columns)")
        if not self.takes_pairs and with_pairs:
            raise SftuneError("this model classifies single texts, not pairs; give plain strings")
        k = max(1, min(top_k, len(self.classes)))
        out: list[TextPrediction] = []
        for logits, _ in self.logits(samples, batch_size):
            probs = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
            scores, idx = probs.topk(k, dim=-1)
            for row, row_scores, row_idx in zip(probs, scores.tolist(), idx.tolist()):
                ranked = [(self.classes[i], s) for i, s in zip(row_idx, row_scores)]
                label: str | list[str] = ([self.classes[i] for i in (row >= 0.5).nonzero().flatten().tolist()]
                                          if self.multi_label else ranked[0][0])
                sample = samples[len(out)]
                out.append(TextPrediction(sample.text, label, ranked[0][1], ranked, sample.text_pair))
        return out

    def outputs(self, data: str | Path | list[TextSample], batch_size: int = 64, features: bool = False,
                **_: Any) -> Outputs:
        """Per-example scores (and pooled ``features``) on labeled texts: a table file, a folder's
        val file, a saved HF dataset's validation split, or samples."""
        c = self.config.data
        samples = data if isinstance(data, list) else read_labeled_texts(
            data, c.text_column, c.label_column, c.text_pair_column, c.multi_label, c.label_separator)
        # Labels spelled as a class of the model (Positive/positive, 1.0/1, NFD/NFC) are that class.
        from .data.labels import align_to_classes

        seen = {lbl for s in samples for lbl in ((s.label,) if isinstance(s.label, str) else s.label)}
        aligned = align_to_classes(seen, self.classes)

        def relabel(label: Any) -> Any:
            return aligned.get(label, label) if isinstance(label, str) else [aligned.get(x, x) for x in label]

        samples = [dataclasses.replace(s, label=relabel(s.label)) for s in samples]
        seen = {lbl for s in samples for lbl in ((s.label,) if isinstance(s.label, str) else s.label)}
        unknown = sorted(seen - set(self.classes))
        if unknown:
            raise SftuneError(f"evaluation data has labels the model was not trained on: {', '.join(unknown[:10])}; "
                              f"it knows: {', '.join(self.classes)}")
        if not samples:
            raise SftuneError(f"no labeled texts in '{data}'")
        return gather(self.classes, [describe_item(s) for s in samples], self._batches(samples, batch_size, features), multi_label=self.multi_label)



def tune_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per-class threshold maximizing that class's F1 on ``probs (N, C)`` vs multi-hot ``targets``;
    0.5 where a class has no positive example."""
    grid = torch.linspace(0.05, 0.95, 19)
    out = []
    for c in range(probs.shape[1]):
        y = targets[:, c].bool()
        if not y.any():
            out.append(0.5)
            continue
        pred = probs[:, c].unsqueeze(0) >= grid.unsqueeze(1)  # (G, N)
        tp = (pred & y).sum(1).float()
        f1 = 2 * tp / (pred.sum(1) + y.sum()).clamp(min=1)
        out.append(round(float(grid[int(f1.argmax())]), 2))
    return out
