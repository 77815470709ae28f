"""Audio datasets and batches: decoded waveforms in memory, one random window per clip for
training, every window of a clip for evaluation.

Training items are ``(waveform (N,), class index)``, N = the window length in samples: a
random crop of a long clip or a short clip at a random offset in silence, drawn from
``(seed, epoch, index)`` alone (exact resume, as images). Evaluation items are
``(windows (W, N), class index)``; :func:`collate_audio` pads them to ``{"windows": (B, W, N),
"mask": (B, W)}``, which :class:`~sftune.backbones.audio.AudioBackbone` averages per clip.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import SftuneError
from .audio import AudioError, load_mono, random_window, window_starts, windows
from .datamodule import _EpochAware, _mix
from .sources import Sample


def decode_all(samples: list[Sample], rate: int, workers: int = 4) -> list[np.ndarray]:
    """Every sample's file decoded, downmixed and resampled to ``rate`` Hz, in order (threads).
    Raises SftuneError naming a file that stopped being readable since it was checked."""

    def one(sample: Sample) -> np.ndarray:
        try:
            return load_mono(sample.path, rate)
        except AudioError as e:
            raise SftuneError(f"{sample.path}: {e} (it was readable when the data was checked)") from None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, samples))


class AudioDataset(Dataset):
    """Decoded clips with class indices (-1: unknown); see the module docstring for the items."""

    def __init__(self, waves: list[np.ndarray], targets: list[int], length: int, hop: int, train: bool,
                 seed: int = 0, samples: list[Sample] | None = None) -> None:
        self.waves = waves
        self.targets = targets
        self.length = length
        self.hop = hop
        self.train = train
        self.seed = seed
        self.samples = samples or []

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        wave = self.waves[index]
        if self.train:
            rng = np.random.default_rng(_mix(self.seed, epoch, index))
            return torch.from_numpy(np.ascontiguousarray(random_window(wave, self.length, rng))), self.targets[index]
        return torch.from_numpy(windows(wave, self.length, self.hop)), self.targets[index]


def collate_audio(batch: list[tuple[torch.Tensor, int]]) -> tuple[Any, torch.Tensor]:
    """Training items -> ``(waveforms (B, N), targets (B,))``; evaluation items -> ``({"windows":
    (B, W_max, N), "mask": (B, W_max)}, targets)`` with missing windows zero and masked out."""
    targets = torch.tensor([t for _, t in batch])
    if batch[0][0].ndim == 1:
        return torch.stack([x for x, _ in batch]), targets
    most = max(x.shape[0] for x, _ in batch)
    n = batch[0][0].shape[1]
    out = torch.zeros(len(batch), most, n)
    mask = torch.zeros(len(batch), most, dtype=torch.bool)
    for i, (x, _) in enumerate(batch):
        out[i, :x.shape[0]] = x
        mask[i, :x.shape[0]] = True
    return {"windows": out, "mask": mask}, targets


class AudioClassificationData(_EpochAware):
    """Train on one random window per clip, validate on every window of each clip."""

    collate_fn: Callable = staticmethod(collate_audio)
    drop_single_last = True  # a last batch of one clip: BatchNorm cannot train on it (when the backbone trains)

    def __init__(self, train: AudioDataset, val: AudioDataset, batch_size: int, seed: int) -> None:
        super().__init__()
        self.train_set = train
        self.val_set = val
        self.batch_size = batch_size
        self.num_workers = 0  # waveforms are in memory; the spectrogram is computed in the model
        self.seed = seed

    def val_batch_size(self) -> int:
        """64 clips (or the training batch) per batch, fewer when clips are long: at most about
        1,024 windows in a padded (B, W, N) batch."""
        val = self.val_set
        most = max((len(window_starts(len(w), val.length, val.hop)) for w in val.waves), default=1)
        return max(1, min(max(64, self.batch_size), 1024 // most))


def clip_batches(waves: list[np.ndarray], length: int, hop: int, max_windows: int) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of clips whose windows together stay within ``max_windows``
    (at least one clip each): evaluation batches of bounded size whatever the clip lengths."""
    ranges, start, count = [], 0, 0
    for i, w in enumerate(waves):
        n = 1 if len(w) <= length else len(range(0, len(w) - length + 1, hop)) + 1
        if i > start and count + n > max_windows:
            ranges.append((start, i))
            start, count = i, 0
        count += n
    if start < len(waves):
        ranges.append((start, len(waves)))
    return ranges
