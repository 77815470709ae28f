"""Tiny generated audio: tones whose pitch is the class, written with soundfile (no downloads).

``write_tones`` names files as the Free Spoken Digit Dataset does, ``{digit}_{speaker}_{index}.wav``,
so the file-name pattern options are exercised exactly as on the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# A random tiny timm CNN, 32 mel bands x 26 frames (0.25 s windows at 8 kHz), no workers.
TINY_AUDIO = {
    "model.name": "timm:test_efficientnet",
    "model.pretrained": False,
    "data.num_workers": 0,
    "data.audio.n_mels": 32,
    "data.audio.clip_seconds": 0.25,
    "train.batch_size": 16,
    "train.epochs": 2,
    "trainer.progress_bar": False,
    "trainer.accelerator": "cpu",
    "report.bootstrap": 20,
    "report.mistakes": 4,
}
FSDD_PATTERNS = {"data.label_pattern": r"^(\d+)_", "data.group_pattern": r"^\d+_([a-z]+)_"}
SPEAKERS = ("ann", "bob", "cat", "dan")


def tone(digit: int, rate: int = 8000, seconds: float = 0.25, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A tone at 400 * (digit + 1) Hz with a little noise: (N,) or (N, channels) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 400 * (digit + 1) * t) + 0.02 * rng.standard_normal(len(t))
    wave = wave.astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, subtype: str | None = None) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


def write_tones(root: Path, digits: tuple[int, ...] = (0, 1, 2), speakers: tuple[str, ...] = SPEAKERS,
                per_speaker: int = 3, rate: int = 8000) -> Path:
    """A flat FSDD-like folder: root/{digit}_{speaker}_{index}.wav, clip lengths 0.15-0.35 s."""
    for d in digits:
        for si, speaker in enumerate(speakers):
            for i in range(per_speaker):
                seconds = 0.15 + 0.05 * ((i + si) % 5)
                write_wav(root / f"{d}_{speaker}_{i}.wav", tone(d, rate, seconds, seed=100 * d + 10 * si + i), rate)
    return root


def write_class_folders(root: Path, digits: tuple[int, ...] = (0, 1, 2), n: int = 8, rate: int = 8000) -> Path:
    """root/train/<digit>/*.wav and root/val/<digit>/*.wav (n train + 2 val per class)."""
    for d in digits:
        for i in range(n + 2):
            side = "val" if i >= n else "train"
            write_wav(root / side / str(d) / f"c{i}.wav", tone(d, rate, 0.2, seed=1000 + 10 * d + i), rate)
    return root


@pytest.fixture(scope="session")
def tones_dir(tmp_path_factory) -> Path:
    return write_tones(tmp_path_factory.mktemp("audio") / "recordings")


@pytest.fixture(scope="session")
def tone_folders(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("audio") / "folders")
