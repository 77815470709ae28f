"""An audio classifier loaded from its bundle: the front end of ``config.yaml``'s ``data.audio``
in front of the fine-tuned backbone and head. Any file libsndfile reads, at any sample rate
(resampled), mono or not (downmixed); a recording longer than a window is split into windows
whose features are averaged (each window's own prediction is available too)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from . import bundle as B
from .backbones.audio import AudioBackbone, audio_backbone, window_samples
from .data.audio import AudioError, load_mono, window_starts, windows
from .data.audio_batches import clip_batches
from .data.audio_sources import check_audio, find_unlabeled_audio, labeled_audio_samples
from .data.sources import Sample
from .errors import SftuneError
from .eval.outputs import Outputs, describe_item, gather
from .heads import ClassifierHead
from .predictors_base import BundlePredictor, CliInputs


@dataclass
class AudioPrediction:
    """One file's prediction; ``windows`` (with ``--windows``): each window's start/end (s) and prediction."""

    path: str
    label: str | None  # None when the file was skipped
    score: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    windows: list[dict[str, Any]] | None = None
    skipped: str | None = None

    table_columns = ("audio", "seconds", "prediction", "score", "top-k / windows")

    def to_dict(self) -> dict[str, Any]:
        if self.skipped:
            return {"path": self.path, "label": None, "score": None, "skipped": self.skipped}
        out: dict[str, Any] = {"path": self.path, "label": self.label, "score": round(self.score, 6),
                               "seconds": round(self.seconds, 3),
                               "top_k": [{"label": lbl, "score": round(s, 6)} for lbl, s in self.top_k]}
        if self.windows is not None:
            out["windows"] = self.windows
        return out

    def json_records(self) -> list[dict[str, Any]]:
        return [self.to_dict()]

    def table_row(self) -> tuple[str, ...]:
        if self.skipped:
            return (self.path, "-", "[red]skipped[/red]", "-", self.skipped)
        if self.windows is not None:
            detail = "; ".join(f"{w['start']:.1f}-{w['end']:.1f} s {w['label']} {w['score']:.2f}" for w in self.windows)
        else:
            detail = ", ".join(f"{lbl} {s:.2f}" for lbl, s in self.top_k[1:])
        return (self.path, f"{self.seconds:.2f}", str(self.label), f"{self.score:.3f}", detail)


class FineTunedAudioModel(BundlePredictor):
    """An audio classifier (task audio_classification)."""

    modality = "audio"
    items_are_files = True

    def __init__(self, path: str | Path, device: str | None = None, precision: str = "auto") -> None:
        super().__init__(path, device, precision)
        audio = self.config.data.audio
        if audio.sample_rate is None:
            raise SftuneError(f"{self.path / B.CONFIG}: data.audio.sample_rate is missing; the bundle is incomplete")
        image_backbone, head_state = B.read_bundle_model(self.path, self.config.model.arch, source=self.config.model.name)
        self.backbone: AudioBackbone = audio_backbone(image_backbone, audio, audio.sample_rate)
        self.head = ClassifierHead(self.backbone.num_features, len(self.classes))
        self.head.load_state_dict(head_state)
        self.backbone.to(self.device).eval().to(memory_format=torch.channels_last)
        self.head.to(self.device).eval()
        self.rate = audio.sample_rate
        self.length, self.hop = window_samples(audio, self.rate)

    def __repr__(self) -> str:
        return f"FineTunedAudioModel({str(self.path)!r}, arch={self.backbone.arch!r}, classes={len(self.classes)}, rate={self.rate})"

    # ------------------------------------------------------------------ core loop

    def _decode(self, samples: list[Sample]) -> tuple[list[Sample], list[np.ndarray], list[tuple[str, str]]]:
        good, waves, skipped = [], [], []
        for s in samples:
            try:
                waves.append(load_mono(s.path, self.rate))
                good.append(s)
            except AudioError as e:
                skipped.append((str(s.path), str(e)))
        return good, waves, skipped

    @torch.inference_mode()
    def _window_features(self, waves: list[np.ndarray], batch_size: int) -> Iterator[list[torch.Tensor]]:
        """Per batch of clips: each clip's window features (W_i, F)."""
        for start, end in clip_batches(waves, self.length, self.hop, max(1, batch_size)):
            stacked = [torch.from_numpy(windows(w, self.length, self.hop)) for w in waves[start:end]]
            flat = torch.cat(stacked)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                feats = torch.cat([self.backbone(chunk.to(self.device)).float()
                                   for chunk in flat.split(max(1, batch_size))])  # long clips: bounded batches
            yield list(feats.split([len(x) for x in stacked]))

    @torch.inference_mode()
    def _batches(self, samples: list[Sample], batch_size: int = 64, num_workers: int = 0,
                 digests: dict[Path, str] | None = None, features: bool = False,
                 waves: list[np.ndarray] | None = None):
        """``(logits (B, C), labels (B,), pooled features (B, F) or None)`` per batch of clips, in
        order; a clip's features are the mean of its windows'. ``samples`` must be readable
        (decoded here unless ``waves`` are given)."""
        index = {c: i for i, c in enumerate(self.classes)}
        if waves is None:
            samples, waves, skipped = self._decode(samples)
            if skipped:
                raise SftuneError(f"{skipped[0][0]}: {skipped[0][1]}")
        done = 0
        for per_clip in self._window_features(waves, batch_size):
            pooled = torch.stack([f.mean(dim=0) for f in per_clip])
            labels = torch.tensor([index.get(s.label, -1) for s in samples[done:done + len(per_clip)]])
            done += len(per_clip)
            yield self.head(pooled).float().cpu(), labels, pooled.cpu() if features else None

    def logits(self, samples: list[Sample], batch_size: int = 64, num_workers: int = 0,
               digests: dict[Path, str] | None = None):
        """Yield ``(logits (B, C), labels (B,))`` batches; labels are -1 for unlabeled samples."""
        for logits, labels, _ in self._batches(samples, batch_size):
            yield logits, labels

    # ------------------------------------------------------------------ predict

    @torch.inference_mode()
    def predict(self, paths: list[str | Path] | str | Path, top_k: int = 1, batch_size: int = 64,
                windows: bool = False, strict: bool = False) -> list[AudioPrediction]:
        """Classify audio files (folders are searched), one prediction per file in input order.
        ``windows``: also each window's prediction with its start and end (seconds). A file
        that cannot be used (empty, corrupt, silent, ...) gets ``skipped`` set to the reason
        (``strict``: an error)."""
        unused: list[tuple[str, str]] = []
        files = find_unlabeled_audio([paths] if isinstance(paths, (str, Path)) else list(paths), unused)
        if strict and unused:
            raise SftuneError(f"{unused[0][0]}: {unused[0][1]}; remove it, or drop --strict to skip it")
        good, waves, skipped = self._decode([Sample(f, "") for f in files])
        if strict and skipped:
            raise SftuneError(f"{skipped[0][0]}: {skipped[0][1]}; fix or delete the file, or drop --strict to skip it")
        k = max(1, min(top_k, len(self.classes)))
        by_path = {p: AudioPrediction(p, None, 0.0, skipped=r) for p, r in unused + skipped}
        i = 0
        for per_clip in self._window_features(waves, batch_size):
            for feats in per_clip:
                sample, wave = good[i], waves[i]
                probs = self.head(feats.mean(dim=0, keepdim=True)).float().softmax(-1)[0]
                scores, idx = probs.topk(k)
                ranked = [(self.classes[j], float(s)) for j, s in zip(idx.tolist(), scores.tolist())]
                listed = None
                if windows:
                    per_window = self.head(feats).float().softmax(-1)
                    starts = window_starts(len(wave), self.length, self.hop)
                    listed = []
                    for start, p in zip(starts, per_window):
                        score, j = p.max(dim=0)
                        listed.append({"start": round(start / self.rate, 3),
                                       "end": round(min(len(wave), start + self.length) / self.rate, 3),
                                       "label": self.classes[int(j)], "score": round(float(score), 6)})
                by_path[str(sample.path)] = AudioPrediction(str(sample.path), ranked[0][0], ranked[0][1], ranked,
                                                            len(wave) / self.rate, listed)
                i += 1
        return [by_path[str(f)] for f in files] + [by_path[p] for p, _ in unused]

    def run_cli(self, given: CliInputs) -> list[AudioPrediction]:
        """``sftune predict``: audio files and folders (``--windows``: per-window predictions too)."""
        given.refuse(self.path, "classifies audio (pass audio files or folders)", **{
            "--text": given.texts, "--pair": given.pairs, "--file": given.text_file, "--column": given.column,
            "--out-dir": given.out_dir, "--draw": given.draw, "--min-score": given.min_score})
        if not given.paths:
            raise SftuneError("nothing to classify: pass audio files or folders after the bundle")
        return self.predict(list(given.paths), top_k=given.top_k, batch_size=given.batch_size,
                            windows=bool(getattr(given, "windows", False)))

    # ------------------------------------------------------------------ evaluate

    def outputs(self, data: str | Path | list[Sample], batch_size: int = 64, num_workers: int = 0,
                strict: bool = False, features: bool = False) -> Outputs:
        """Per-clip scores (and pooled ``features``) on labeled audio: a folder as training reads it
        (class folders, a train/val root's val/test, or names labeled by the bundle's
        data.label_pattern, its data.val_pattern picking the validation files), a manifest, or
        samples; unusable files are skipped (``strict``: fatal)."""
        skipped: list[tuple[str, str]] = []
        if isinstance(data, list):
            samples = data
        else:
            c = self.config.data
            samples = labeled_audio_samples(Path(data), c.label_pattern, c.val_pattern)
            samples, skipped, _, _, _ = check_audio(samples, strict)
        from .data.labels import align_to_classes

        aligned = align_to_classes([s.label for s in samples], self.classes)
        samples = [dataclasses.replace(s, label=aligned[s.label]) if s.label in aligned else s for s in samples]
        unknown = sorted({s.label for s in samples} - set(self.classes))
        if unknown:
            raise SftuneError(f"evaluation data has classes the model was not trained on: {', '.join(unknown)}; "
                              f"it knows: {', '.join(self.classes)}")
        good, waves, unreadable = self._decode(samples)
        if not good:
            raise SftuneError(f"no readable labeled audio in '{data}'")
        return gather(self.classes, [describe_item(s) for s in good],
                      self._batches(good, batch_size, features=features, waves=waves), skipped=skipped + unreadable)
