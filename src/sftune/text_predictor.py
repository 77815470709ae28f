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


LONG_TEXTS = ("truncate", "windows")


@dataclass
class TextPrediction:
    text: str
    label: str | list[str] | None  # multi-label: every class over its threshold; None: skipped
    score: float | None  # probability of ``label`` (multi-label: of the most likely class); None: skipped
    top_k: list[tuple[str, float]] = field(default_factory=list)
    text_pair: str | None = None  # sentence-pair models: the second text
    index: int | None = None  # 1-based position among the inputs (``sftune predict``)
    line: int | None = None  # line number in the --file it came from
    skipped: str | None = None  # why this input got no prediction (an empty text)
    truncated: bool = False  # longer than the model's max_length: only part of it was read

    @property
    def path(self) -> str:
        """Where the input came from, for messages: "line 7" of the file, or "text 3"."""
        return f"line {self.line}" if self.line is not None else f"text {self.index or '?'}"

    def json_records(self) -> list[dict[str, Any]]:
        """What ``sftune predict --json`` prints for this input."""
        return [self.to_dict()]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in (("index", self.index), ("line", self.line)) if v is not None}
        out["text"] = self.text
        if self.text_pair is not None:
            out["text_pair"] = self.text_pair
        if self.skipped:
            return {**out, "label": None, "score": None, "top_k": [], "skipped": self.skipped}
        return {**out, "label": self.label, "score": round(self.score or 0.0, 6),
                "top_k": [{"label": lbl, "score": round(s, 6)} for lbl, s in self.top_k],
                **({"truncated": True} if self.truncated else {})}


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
        self.long_texts = "truncate"  # or "windows": the mean over windows of max_length tokens (use_inputs)
        self.columns: dict[str, Any] = {"text": None, "label": None, "text_pair": None}  # the command line's

    def __repr__(self) -> str:
        return f"FineTunedTextModel({str(self.path)!r}, encoder={self.backbone.arch!r}, classes={len(self.classes)})"

    def logits(self, samples: list[TextSample], batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(logits (B, C), targets)`` batches in sample order; multi-label logits are shifted so
        that 0 is each class's threshold (sigmoid 0.5 == the tuned threshold).

        Texts are encoded in length-sorted batches exactly as training's feature pass does, so a
        linear probe's metrics.json and ``sftune eval`` on the same texts agree to the bit."""
        for logits, targets, _ in self._batches(samples, batch_size, features=False):
            yield logits, targets

    def use_inputs(self, given: CliInputs) -> None:
        """``--text-column``/``--label-column``/``--text-pair-column`` (found as in training when not
        given) and ``--long-texts`` of ``sftune eval`` and ``predict``."""
        self.columns = {"text": given.column, "label": given.label_column, "text_pair": given.text_pair_column}
        if given.long_texts is not None:
            if given.long_texts not in LONG_TEXTS:
                raise SftuneError(f"--long-texts must be one of {', '.join(LONG_TEXTS)} (got {given.long_texts!r})")
            self.long_texts = given.long_texts

    def _windows_apply(self, samples: list[TextSample]) -> bool:
        """Whether long texts are read in windows: asked for, single texts, a fast tokenizer."""
        return (self.long_texts == "windows" and not any(s.text_pair is not None for s in samples)
                and bool(getattr(self.backbone.tokenizer, "is_fast", False)))

    def _note_long(self, samples: list[TextSample]) -> list[bool]:
        """Which samples exceed max_length; sets :attr:`notes` to the one-line account of them."""
        long = self.collator.too_long([s.text for s in samples], [s.text_pair for s in samples])
        n, limit = sum(long), self.collator.max_length
        self.notes = []
        if n and self._windows_apply(samples):
            self.notes.append(f"{n} of {len(samples)} texts are longer than max_length {limit} tokens: each is read "
                              f"as overlapping windows of {limit} tokens, its scores the mean over them")
        elif n:
            cut = "end" if self.collator.truncation_side == "right" else "start"
            why = (" (--long-texts windows reads single texts only, with a fast tokenizer)"
                   if self.long_texts == "windows" else "; --long-texts windows averages over windows instead")
            self.notes.append(f"{n} of {len(samples)} texts are longer than max_length {limit} tokens and were "
                              f"truncated (their {cut} not read){why}")
        return long

    @torch.inference_mode()
    def _batches(self, samples: list[TextSample], batch_size: int, features: bool):
        """``(logits (B, C), targets, pooled features (B, F) or None)`` per batch, in sample order."""
        from .pipelines.text import encode, encode_windows

        dataset = TextDataset(samples, {c: i for i, c in enumerate(self.classes)}, self.multi_label)
        precision = "bf16" if self.bf16 else "32"
        if self._windows_apply(samples):
            pooled = encode_windows(self.backbone, [s.text for s in samples], self.collator, batch_size, self.device,
                                    precision)
        else:
            pooled = encode(self.backbone, dataset, self.collator, batch_size, self.device, precision)
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
        and flags are refused in one line. One prediction per input, in order: an empty text or a
        blank line of --file gets a null prediction with the reason (``skipped``), never an abort."""
        if given.paths:
            raise SftuneError(f"'{self.path}' classifies texts: pass them with --text \"...\" or --file FILE, not as paths")
        given.refuse(self.path, "classifies texts", **{"--out-dir": given.out_dir, "--draw": given.draw,
                                                       "--min-score": given.min_score, "--windows": given.windows,
                                                       "--label-column": given.label_column})
        self.use_inputs(given)
        texts, pairs = given.texts, given.pairs
        if pairs and len(pairs) != len(texts):
            raise SftuneError(f"--pair given {len(pairs)} times for {len(texts)} --text; give one --pair per --text")
        inputs: list[Any] = list(zip(texts, pairs)) if pairs else list(texts)
        lines: list[int | None] = [None] * len(inputs)
        if given.text_file:
            from .data.texts import read_prediction_inputs

            c = self.config.data
            # The flags' columns, else the ones the model was trained on when the file has them, else the usual names.
            found = read_prediction_inputs(given.text_file, self.columns["text"], self.columns["text_pair"],
                                           pairs=self.takes_pairs, trained=(c.text_column, c.text_pair_column))
            inputs += [(i.text, i.text_pair) if self.takes_pairs else i.text for i in found]
            lines += [i.line for i in found]
        if not inputs:
            raise SftuneError("nothing to classify: pass --text \"...\" (repeatable) or --file FILE")
        out = self.predict(inputs, top_k=given.top_k, batch_size=given.batch_size)
        for n, (p, line) in enumerate(zip(out, lines), 1):
            p.index, p.line = n, line
        return out

    def predict(self, texts: list[str] | list[tuple[str, str]] | str, top_k: int = 1,
                batch_size: int = 64, long_texts: str | None = None) -> list[TextPrediction]:
        """Classify texts, or (text, text_pair) tuples for a sentence-pair model: one prediction per
        input, in order. An empty text (or second text) gets ``label``/``score`` None and
        ``skipped`` = the reason. ``long_texts`` "windows" reads texts longer than max_length as
        windows and averages (default: this model's setting, "truncate"); :attr:`notes` says
        how many were longer. Raises SftuneError when single texts and pairs are mixed up."""
        if long_texts is not None:
            if long_texts not in LONG_TEXTS:
                raise SftuneError(f"long_texts must be one of {', '.join(LONG_TEXTS)} (got {long_texts!r})")
            self.long_texts = long_texts
        items = [texts] if isinstance(texts, (str, tuple)) else list(texts)
        samples = [TextSample(t[0], "", t[1]) if isinstance(t, tuple) else TextSample(t, "") for t in items]
        with_pairs = sum(s.text_pair is not None for s in samples)
        if self.takes_pairs and with_pairs < len(samples):
            raise SftuneError("this model classifies sentence pairs: give (text, text_pair) tuples "
                              "(CLI: --text A --pair B, or --file with both columns)")
        if not self.takes_pairs and with_pairs:
            raise SftuneError("this model classifies single texts, not pairs; give plain strings")
        out: list[TextPrediction | None] = [None] * len(samples)
        keep: list[int] = []
        for i, s in enumerate(samples):
            reason = ("empty text" if not s.text.strip() else
                      "empty second text" if s.text_pair is not None and not s.text_pair.strip() else None)
            if reason:
                out[i] = TextPrediction(s.text, None, None, [], s.text_pair, skipped=f"{reason}: nothing to classify")
            else:
                keep.append(i)
        kept = [samples[i] for i in keep]
        long = self._note_long(kept)
        k = max(1, min(top_k, len(self.classes)))
        n = 0
        for logits, _ in self.logits(kept, batch_size) if kept else ():
            probs = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
            scores, idx = probs.topk(k, dim=-1)
            for row, row_scores, row_idx in zip(probs, scores.tolist(), idx.tolist()):
                ranked = [(self.classes[i], s) for i, s in zip(row_idx, row_scores)]
                label: str | list[str] = ([self.classes[i] for i in (row >= 0.5).nonzero().flatten().tolist()]
                                          if self.multi_label else ranked[0][0])
                sample = kept[n]
                out[keep[n]] = TextPrediction(sample.text, label, ranked[0][1], ranked, sample.text_pair,
                                              truncated=long[n] and not self._windows_apply(kept))
                n += 1
        return [p for p in out if p is not None]

    def outputs(self, data: str | Path | list[TextSample], batch_size: int = 64, features: bool = False,
                **_: Any) -> Outputs:
        """Per-example scores (and pooled ``features``) on labeled texts: a table file, a folder's
        val file, a saved HF dataset's validation split, or samples."""
        c = self.config.data
        samples = data if isinstance(data, list) else read_labeled_texts(
            data, self.columns["text"], self.columns["label"], self.columns["text_pair"], c.multi_label,
            c.label_separator, trained=(c.text_column, c.label_column, c.text_pair_column))
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
        long = self._note_long(samples)
        out = gather(self.classes, [describe_item(s) for s in samples], self._batches(samples, batch_size, features),
                     multi_label=self.multi_label)
        out.notes, out.truncated = list(self.notes), sum(long)
        return out



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
