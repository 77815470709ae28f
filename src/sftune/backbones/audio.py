"""The audio front end: waveforms -> log-mel spectrograms -> any image backbone.

ImageNet CNNs transfer well to spectrograms (e.g. Palanisamy et al. 2020, "Rethinking CNN
models for audio classification"), so an audio model here is :class:`LogMel` (no weights:
STFT, an HTK mel filterbank, dB relative to each clip's peak) feeding the same timm backbone
images use, with the spectrogram replicated to the 3 channels ImageNet weights expect and
normalised with the backbone's own mean/std. During training :class:`SpecAugment` masks
random frequency bands and time spans (Park et al. 2019, "SpecAugment: A Simple Data
Augmentation Method for Automatic Speech Recognition"); mixup (Zhang et al. 2018) mixes
waveforms in the classification module (``train.mixup``).

The front end is parameter-free, so a bundle's ``model.safetensors`` holds the plain timm
weights and ``config.yaml``'s ``data.audio`` section rebuilds the front end exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone

if TYPE_CHECKING:
    from ..config import AudioConfig


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Triangular HTK mel filters (n_freqs, n_mels) over the rfft bins 0 .. sample_rate / 2 (Hz),
    unnormalised (peak 1), as torchaudio's ``melscale_fbanks(norm=None, mel_scale="htk")``."""
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    points = mel_to_hz(torch.linspace(float(hz_to_mel(fmin)), float(hz_to_mel(fmax)), n_mels + 2, dtype=torch.float64))
    low, centre, high = points[:-2], points[1:-1], points[2:]
    up = (freqs[:, None] - low[None]) / (centre - low).clamp_min(1e-9)[None]
    down = (high[None] - freqs[:, None]) / (high - centre).clamp_min(1e-9)[None]
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


class LogMel(nn.Module):
    """Waveforms (B, N) at ``sample_rate`` Hz -> log-mel spectrograms (B, 1, n_mels, T) in [0, 1].

    STFT with a Hann window of ``win_ms`` ms (FFT size: the next power of two), hop ``hop_ms``
    ms, centred frames (T = 1 + N // hop); power spectrum -> ``n_mels`` HTK mel bands between
    ``fmin`` and ``fmax`` Hz -> 10 log10, clipped at ``top_db`` dB below the clip's peak and
    scaled so the peak is 1 and ``-top_db`` (and below) is 0. Always computed in float32.
    """

    def __init__(self, sample_rate: int, win_ms: float = 25.0, hop_ms: float = 10.0, n_mels: int = 64,
                 fmin: float = 0.0, fmax: float | None = None, top_db: float = 80.0) -> None:
        super().__init__()
        fmax = sample_rate / 2 if fmax is None else min(float(fmax), sample_rate / 2)
        if not 0 <= fmin < fmax:
            from ..errors import SftuneError

            raise SftuneError(f"data.audio.fmin ({fmin:g} Hz) must be below fmax ({fmax:g} Hz, at most half the "
                              f"sample rate {sample_rate} Hz)")
        self.sample_rate = int(sample_rate)
        self.win_length = max(2, round(sample_rate * win_ms / 1000))
        self.hop_length = max(1, round(sample_rate * hop_ms / 1000))
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        self.n_mels = n_mels
        self.top_db = float(top_db)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("filters", mel_filterbank(self.n_fft // 2 + 1, sample_rate, n_mels, fmin, fmax),
                             persistent=False)
        self.fmin, self.fmax = float(fmin), float(fmax)

    def extra_repr(self) -> str:  # part of the feature-cache key: every number that changes the output
        return (f"sample_rate={self.sample_rate}, win_length={self.win_length}, hop_length={self.hop_length}, "
                f"n_fft={self.n_fft}, n_mels={self.n_mels}, fmin={self.fmin:g}, fmax={self.fmax:g}, top_db={self.top_db:g}")

    def frames(self, samples: int) -> int:
        """Spectrogram columns T for a window of ``samples`` samples."""
        return 1 + samples // self.hop_length

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        with torch.autocast(waveforms.device.type, enabled=False):
            x = waveforms.float()
            spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                              pad_mode="constant", return_complex=True)
            power = spec.real.square() + spec.imag.square()  # (B, n_fft/2 + 1, T)
            mel = torch.einsum("bft,fm->bmt", power, self.filters)
            db = 10.0 * torch.log10(mel.clamp_min(1e-10))
            peak = db.amax(dim=(1, 2), keepdim=True)
            db = torch.maximum(db, peak - self.top_db)
            return ((db - peak) / self.top_db + 1.0).unsqueeze(1)  # (B, 1, n_mels, T) in [0, 1]


class SpecAugment(nn.Module):
    """Frequency and time masking on spectrograms (B, 1, M, T), training only (Park et al. 2019).

    Each example gets ``freq_masks`` masks of 0..``freq_width`` mel bands and ``time_masks``
    masks of 0..``time_width`` frames at uniform positions, set to 0 (the floor: ``top_db``
    below the peak). Randomness comes from torch's global generator, which the training
    loop seeds per epoch (exact resume)."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2, time_width: int = 10) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def extra_repr(self) -> str:
        return f"freq={self.freq_masks}x{self.freq_width}, time={self.time_masks}x{self.time_width}"

    @staticmethod
    def _masks(batch: int, size: int, count: int, width: int, device: torch.device) -> torch.Tensor:
        """(B, size) bool: True where any of ``count`` random spans of at most ``width`` covers."""
        if count == 0 or width == 0:
            return torch.zeros(batch, size, dtype=torch.bool, device=device)
        widths = torch.randint(0, min(width, size) + 1, (batch, count, 1), device=device)
        starts = (torch.rand(batch, count, 1, device=device) * (size - widths + 1)).floor()
        pos = torch.arange(size, device=device)[None, None]
        return ((pos >= starts) & (pos < starts + widths)).any(dim=1)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        b, _, m, t = spec.shape
        freq = self._masks(b, m, self.freq_masks, self.freq_width, spec.device)[:, None, :, None]
        time = self._masks(b, t, self.time_masks, self.time_width, spec.device)[:, None, None, :]
        return spec.masked_fill(freq | time, 0.0)


class AudioBackbone(Backbone):
    """:class:`LogMel` (+ :class:`SpecAugment` in training) in front of an image backbone.

    Input: waveforms (B, N) (one window each), or ``{"windows": (B, W, N), "mask": (B, W)}``
    (several windows per clip, padded; the clip's features are the mean of its real windows').
    Output: pooled features (B, num_features). ``self.model`` is the timm network, so every
    strategy (layer groups, LoRA, BitFit) sees exactly what it sees for images.
    """

    def __init__(self, image_backbone: Backbone, frontend: LogMel, augment: SpecAugment | None = None,
                 image_height: int | None = None) -> None:
        super().__init__(image_backbone.model, arch=image_backbone.arch, source=image_backbone.source)
        self.frontend = frontend
        self.augment = augment
        self.image_height = image_height
        self.chunk = 256  # windows through the CNN at once when a batch holds several per clip
        cfg = image_backbone.data_config()
        channels = int(cfg["input_size"][0])
        mean = torch.tensor(cfg.get("mean", (0.5,) * channels), dtype=torch.float32)[:channels]
        std = torch.tensor(cfg.get("std", (0.5,) * channels), dtype=torch.float32)[:channels]
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def preprocessing(self) -> str:
        """Everything besides the weights that changes the features (the feature-cache key)."""
        return f"{self.frontend!r}|height={self.image_height}|mean={self.mean.flatten().tolist()}|std={self.std.flatten().tolist()}"

    def spectrogram(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, N) -> the backbone's input (B, C, H, W): log-mel, SpecAugment when training,
        resized to ``image_height`` rows (keeping the aspect ratio) if set, channels replicated
        and normalised with the backbone's mean/std."""
        spec = self.frontend(waveforms)
        if self.training and self.augment is not None:
            spec = self.augment(spec)
        if self.image_height and self.image_height != spec.shape[2]:
            width = max(1, round(spec.shape[3] * self.image_height / spec.shape[2]))
            spec = F.interpolate(spec, size=(self.image_height, width), mode="bilinear", align_corners=False)
        image = (spec - self.mean) / self.std  # (B, C, H, W): the one channel broadcast to C
        return image.contiguous(memory_format=torch.channels_last)

    def forward(self, inputs: Any) -> torch.Tensor:
        if isinstance(inputs, dict):
            windows, mask = inputs["windows"], inputs["mask"]
            b, w, n = windows.shape
            flat = windows.reshape(b * w, n)  # in chunks: an hour-long clip is thousands of windows
            features = torch.cat([self.model(self.spectrogram(chunk)) for chunk in flat.split(self.chunk)]).view(b, w, -1)
            weights = mask.to(features.dtype).unsqueeze(-1)
            return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return self.model(self.spectrogram(inputs))

    def data_config(self, image_size: int | None = None) -> dict[str, Any]:
        cfg = super().data_config(image_size)
        cfg["frontend"] = repr(self.frontend)
        return cfg


def audio_backbone(image_backbone: Backbone, audio: "AudioConfig", sample_rate: int) -> AudioBackbone:
    """The front end that ``data.audio`` describes, at ``sample_rate`` Hz, in front of ``image_backbone``."""
    frontend = LogMel(sample_rate, audio.win_ms, audio.hop_ms, audio.n_mels, audio.fmin, audio.fmax, audio.top_db)
    augment = None
    if (audio.freq_masks and audio.freq_mask_bands) or (audio.time_masks and audio.time_mask_frames):
        augment = SpecAugment(audio.freq_masks, audio.freq_mask_bands, audio.time_masks, audio.time_mask_frames)
    return AudioBackbone(image_backbone, frontend, augment, audio.image_height)


def window_samples(audio: "AudioConfig", sample_rate: int) -> tuple[int, int]:
    """(window length, hop between windows of a long recording) in samples."""
    length = max(1, round(audio.clip_seconds * sample_rate))
    hop_s = audio.window_hop_seconds if audio.window_hop_seconds is not None else audio.clip_seconds / 2
    return length, max(1, round(hop_s * sample_rate))


__all__ = ["AudioBackbone", "LogMel", "SpecAugment", "audio_backbone", "mel_filterbank", "window_samples"]
