"""Audio: class folders, CSV manifests or file-name patterns -> log-mel front end + image
backbone -> windowed waveform batches; decoded clips kept in memory, frozen-backbone features
cached on disk like image features (key: backbone weights, front end, every file's content).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..backbones import create_backbone
from ..backbones.audio import AudioBackbone, audio_backbone, window_samples
from ..data import FeatureData
from ..data.audio import windows
from ..data.audio_batches import AudioClassificationData, AudioDataset, clip_batches, collate_audio, decode_all
from ..data.audio_sources import LabeledAudio, find_labeled_audio
from ..data.feature_cache import FORMAT, cache_root, lookup_features, store_features, weights_hash
from ..errors import SftuneError
from ..precision import inference_bf16
from .base import Pipeline


class AudioPipeline(Pipeline):
    kind = "audio"
    data: LabeledAudio
    backbone: AudioBackbone

    def load(self) -> None:
        config, c = self.config, self.config.data
        if config.train.cutmix > 0:
            raise SftuneError("train.cutmix cuts image patches and is not for audio; use train.mixup (mixes waveforms) "
                              "and SpecAugment (data.audio.freq_masks / time_masks)")
        self.data = find_labeled_audio(c.path, c.val_path, c.val_fraction, config.train.seed, c.strict,
                                       c.allow_outside_root, c.label_pattern, c.group_pattern, c.val_pattern)
        for path, reason in self.data.skipped[:5]:
            self.log(f"warning: skipped {path}: {reason}")
        if self.data.skipped:
            self.log(f"warning: skipped {len(self.data.skipped)} unusable audio file(s) in total "
                     f"(use --strict to make this an error)")
        for where, problem in self.data.warnings[:5]:
            self.log(f"warning: {where}: {problem}")
        if self.data.warnings:
            self.log(f"warning: {len(self.data.warnings)} data problem(s) in total, listed in lineage.json "
                     f"(use --strict to make them an error)")
        stereo = self.data.multichannel()
        if stereo:
            self.log(f"audio: {stereo} file(s) with several channels are downmixed to mono (channels averaged)")
        if c.audio.sample_rate is None:  # saved resolved: predict and eval resample to the same rate
            c.audio.sample_rate = self.data.common_rate()
        rate = c.audio.sample_rate
        others = sorted({r for r in self.data.rates.values() if r != rate})
        if others:
            self.log(f"audio: files at {', '.join(map(str, others))} Hz are resampled to {rate} Hz")
        name = config.model.name
        image_backbone = create_backbone(name, config.model.pretrained, config.model.arch)
        self.backbone = audio_backbone(image_backbone, c.audio, rate)
        config.model.arch = self.backbone.arch
        self.length, self.hop = window_samples(c.audio, rate)
        started = time.time()
        self.train_waves = decode_all(self.data.train, rate, max(1, self.workers))
        self.val_waves = decode_all(self.data.val, rate, max(1, self.workers))
        seconds = sum(len(w) for w in self.train_waves + self.val_waves) / rate
        self.log(f"audio: {len(self.train_waves) + len(self.val_waves)} clips ({seconds / 60:.1f} min) decoded at "
                 f"{rate} Hz in {time.time() - started:.1f} s; {c.audio.clip_seconds:g} s windows, "
                 f"{c.audio.n_mels} mel bands x {self.backbone.frontend.frames(self.length)} frames")

    def describe(self) -> str:
        d = self.data
        return f"{len(d.train)} train / {len(d.val)} val clips, {len(d.classes)} classes ({d.split['method']} split)"

    def _targets(self, samples: list) -> list[int]:
        index = self.data.class_to_idx
        return [index[s.label] for s in samples]

    def datamodule(self) -> L.LightningDataModule:
        seed = self.config.train.seed
        train = AudioDataset(self.train_waves, self._targets(self.data.train), self.length, self.hop, True, seed,
                             self.data.train)
        val = AudioDataset(self.val_waves, self._targets(self.data.val), self.length, self.hop, False, seed,
                           self.data.val)
        return AudioClassificationData(train, val, self.config.train.batch_size, seed)

    def _compute_features(self) -> FeatureData:
        """The frozen backbone runs once over every window of every clip (or comes from the
        on-disk cache); a clip's features are the mean over its windows."""
        config, data = self.config, self.data
        started = time.time()
        device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu")
        precision = "bf16" if inference_bf16(device, config.trainer.inference_precision) else "32"
        model_hash = weights_hash(self.backbone)
        hits = []

        def features(samples: list, waves: list[np.ndarray]) -> torch.Tensor:
            path = self._entry(model_hash, [data.digests[s.path] for s in samples], precision)
            found = lookup_features(path)
            hits.append(found is not None)
            if found is not None:
                return found
            out = encode_clips(self.backbone, waves, self.length, self.hop, device, precision)
            store_features(path, out)
            return out

        train_x = features(data.train, self.train_waves)
        val_x = features(data.val, self.val_waves)
        train_y, val_y = torch.tensor(self._targets(data.train)), torch.tensor(self._targets(data.val))
        source = "all from the cache" if all(hits) else f"{time.time() - started:.1f} s"
        self.log(f"features: frozen backbone run once over {len(train_x) + len(val_x)} clips ({source}); the head trains on them")
        return FeatureData(train_x, train_y, val_x, val_y, config.train.batch_size, config.train.seed)

    def _entry(self, model_hash: str, digests: list[str], precision: str) -> Path:
        h = hashlib.sha256(f"{FORMAT}|audio|{model_hash}|{self.backbone.preprocessing()}|{self.length}|{self.hop}|"
                           f"{precision}".encode())
        for d in digests:
            h.update(d.encode())
        key = h.hexdigest()
        return cache_root() / "features" / key[:2] / f"{key}.safetensors"

    def lineage(self) -> dict[str, Any]:
        config, data = self.config, self.data
        return {
            "path": str(Path(config.data.path).absolute()) if config.data.path else None,
            "fingerprint_sha256": data.fingerprint,
            "train_clips": len(data.train),
            "val_clips": len(data.val),
            "classes": data.classes,
            "sample_rate": config.data.audio.sample_rate,
            "skipped": [{"path": p, "reason": r} for p, r in data.skipped],
            "warnings": [{"path": p, "problem": r} for p, r in data.warnings],
            "split": data.split,
        }


@torch.no_grad()  # not inference_mode: the features feed autograd later (LP-FT probe)
def encode_clips(backbone: AudioBackbone, waves: list[np.ndarray], length: int, hop: int, device: torch.device,
                 precision: str, max_windows: int = 128) -> torch.Tensor:
    """Pooled features (len(waves), F) in float32, backbone in eval mode: each clip's mean over
    its windows (batches of at most ``max_windows`` windows)."""
    was_training = backbone.training
    model = backbone.eval().to(device)
    out = []
    for start, end in clip_batches(waves, length, hop, max_windows):
        batch = [(torch.from_numpy(windows(w, length, hop)), -1) for w in waves[start:end]]
        inputs, _ = collate_audio(batch)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out.append(model(inputs).float().cpu())
    backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0, backbone.num_features)
