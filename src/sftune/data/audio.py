"""Reading audio files: decode with soundfile (libsndfile: wav, flac, ogg, aiff, mp3 where
libsndfile has it; no ffmpeg), downmix to mono, resample, and cut into fixed-length windows.

Every fault a file can have becomes a one-line reason (``inspect_audio``) instead of a
traceback: an empty (0-byte) file, a file libsndfile cannot decode (corrupt, unsupported, not
audio), a file with no samples, non-finite samples, or a silent file (every sample below
``SILENCE``, about -80 dBFS). Callers skip such files with a counted warning, or stop with
``--strict``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")
SILENCE = 1e-4  # peak amplitude (full scale 1.0) below which a file counts as silent: -80 dBFS


class AudioError(Exception):
    """A file that cannot be used as audio; the message is the one-line reason."""


@dataclass(frozen=True)
class Audio:
    """A decoded recording: ``samples`` (N,) float32 mono at ``rate`` Hz; ``channels`` as stored."""

    samples: np.ndarray
    rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def read_audio(path: str | Path) -> Audio:
    """Decode ``path`` to mono float32 in [-1, 1] (channels averaged).

    Raises :class:`AudioError` with a one-line reason: empty, undecodable, no samples,
    non-finite samples, silent."""
    import soundfile as sf

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioError(f"cannot be read ({e.strerror or e})") from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError... for bad files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise AudioError(f"not readable audio ({first})") from None
    if data.shape[0] == 0:
        raise AudioError("holds no samples (zero length)")
    if not np.isfinite(data).all():
        raise AudioError("holds non-finite samples (NaN or infinity)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if float(np.abs(mono).max()) < SILENCE:
        raise AudioError(f"silent (every sample below {SILENCE:g} of full scale)")
    return Audio(np.ascontiguousarray(mono, dtype=np.float32), int(rate), int(data.shape[1]))


def inspect_audio(path: Path) -> tuple[str | None, str | None, int, int]:
    """``(sha256 of the file, reason it cannot be used or None, sample rate, channels)``."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})", 0, 0
    try:
        audio = read_audio(path)
    except AudioError as e:
        return digest, str(e), 0, 0
    return digest, None, audio.rate, audio.channels


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` (N,) at ``rate`` Hz -> (round(N * target / rate),) at ``target`` Hz, by
    polyphase filtering (scipy's ``resample_poly``, a Kaiser-windowed low-pass: no aliasing)."""
    if rate == target:
        return samples
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def load_mono(path: str | Path, rate: int) -> np.ndarray:
    """``path`` decoded, downmixed and resampled to ``rate`` Hz: (N,) float32. Raises AudioError."""
    audio = read_audio(path)
    return resample(audio.samples, audio.rate, rate)


def window_starts(n: int, length: int, hop: int) -> list[int]:
    """Start samples of the windows covering a recording of ``n`` samples: 0, hop, 2 hop, ...
    and a last window ending at the recording's end (so no window is mostly padding); one
    window at 0 when the recording is not longer than a window."""
    if n <= length:
        return [0]
    starts = list(range(0, n - length + 1, hop))
    if starts[-1] != n - length:
        starts.append(n - length)
    return starts


def windows(samples: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(W, length) windows of ``samples`` (:func:`window_starts`); a short clip is zero-padded at the end."""
    if len(samples) < length:
        return np.pad(samples, (0, length - len(samples)))[None]
    return np.stack([samples[s:s + length] for s in window_starts(len(samples), length, hop)])


def random_window(samples: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One (length,) window for training: a random crop of a long clip, or a short clip placed at a
    random offset in zeros (the usual time-shift augmentation)."""
    n = len(samples)
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return samples[start:start + length]
    out = np.zeros(length, dtype=np.float32)
    offset = int(rng.integers(0, length - n + 1))
    out[offset:offset + n] = samples
    return out
