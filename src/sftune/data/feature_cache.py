"""Backbone features computed once, kept on disk, reused while the backbone stays frozen.

A linear probe runs the same frozen backbone over the same images every epoch;
here each image goes through it once (eval mode, eval transform, no
augmentation — or a fixed number of augmented views when asked) and the head
trains on the stored ``(N, F)`` features for as many epochs as it likes.

The cache key covers everything that changes the numbers: the backbone's
architecture and a hash of its weights, the exact preprocessing (the eval
transform's repr: size, crop, interpolation, mean/std), the content hash of
every image in order, the number of augmented views and their seed, the
compute precision. Any change gives a new key, so a stale entry is never read.
Entries are safetensors files written atomically under ``$SFTUNE_CACHE``
(default ``~/.cache/sftune``)/features/.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..backbones import Backbone
from .datamodule import ImageDataset, make_loader
from .sources import Sample

FORMAT = "sftune-features-1"


def cache_root() -> Path:
    return Path(os.environ.get("SFTUNE_CACHE") or Path.home() / ".cache" / "sftune")


def weights_hash(backbone: Backbone) -> str:
    h = hashlib.sha256(backbone.arch.encode())
    for name, tensor in sorted(backbone.weights().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def feature_key(model_hash: str, transform: Callable, digests: list[str], views: int, seed: int, precision: str) -> str:
    h = hashlib.sha256(f"{FORMAT}|{model_hash}|{transform!r}|views={views}|seed={seed}|{precision}".encode())
    for digest in digests:
        h.update(digest.encode())
    return h.hexdigest()


@torch.no_grad()  # not inference_mode: the features feed autograd later (LP-FT probe)
def extract_features(
    backbone: Backbone, samples: list[Sample], transform: Callable, batch_size: int, num_workers: int,
    device: torch.device, precision: str = "32", view: int | None = None, seed: int = 0,
) -> torch.Tensor:
    """Pooled features ``(len(samples), num_features)`` in float32, backbone in eval mode.

    channels_last lets oneDNN/cuDNN pick their fast convolution kernels (about
    1.7x on a 2-core AVX-512 CPU for EfficientNet-Lite0); bf16 autocast doubles
    that again where the CPU or GPU supports it.
    """
    was_training = backbone.training
    model = backbone.eval().to(device).to(memory_format=torch.channels_last)
    dataset = ImageDataset(samples, {}, transform, seed=seed)
    # An augmented view v draws its randomness from (seed, v, index): same key, same numbers.
    order = None if view is None else [(i, view) for i in range(len(samples))]
    out: list[torch.Tensor] = []
    use_bf16 = precision == "bf16"  # resolved by the caller (sftune.precision), never "auto" here
    for images, _ in make_loader(dataset, batch_size, num_workers, order):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out.append(model(images).float().cpu())
    backbone.to(memory_format=torch.contiguous_format)
    backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0, backbone.num_features)


def cached_features(
    backbone: Backbone, model_hash: str, samples: list[Sample], digests: list[str], transform: Callable,
    batch_size: int, num_workers: int, device: torch.device, precision: str = "32", views: int = 0, seed: int = 0,
) -> tuple[torch.Tensor, bool]:
    """Features of ``samples`` (``views`` > 0: that many augmented passes, stacked) and whether they were cached."""
    path = _entry(model_hash, transform, digests, views, seed, precision)
    found = lookup_features(path)
    if found is not None:
        return found, True
    if views:
        passes = [extract_features(backbone, samples, transform, batch_size, num_workers, device, precision, view=v, seed=seed)
                  for v in range(views)]
        features = torch.cat(passes)
    else:
        features = extract_features(backbone, samples, transform, batch_size, num_workers, device, precision)
    store_features(path, features)
    return features, False


def _entry(model_hash: str, transform: Callable, digests: list[str], views: int, seed: int, precision: str) -> Path:
    key = feature_key(model_hash, transform, digests, views, seed, precision)
    return cache_root() / "features" / key[:2] / f"{key}.safetensors"


def lookup_features(path: Path) -> torch.Tensor | None:
    """The stored ``(N, F)`` features of an entry, or None (absent, or unreadable and then removed)."""
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["features"]
    except Exception:
        path.unlink(missing_ok=True)  # e.g. disk full when it was written: it will be recomputed
        return None


def cached_eval_features(backbone: Backbone, transform: Callable, digests: list[str], seed: int, precision: str) -> torch.Tensor | None:
    """Clean (eval-transform) features a training run already stored for exactly these files, or None.

    This is how ``sftune eval``/``predict`` on a linear-probe bundle skip the backbone:
    its backbone is the frozen one the features were computed with.
    """
    return lookup_features(_entry(weights_hash(backbone), transform, digests, 0, seed, precision))


def store_features(path: Path, features: torch.Tensor) -> None:
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        save_file({"features": features.contiguous()}, tmp, metadata={"format": FORMAT})
        os.replace(tmp, path)
    except OSError:
        # A read-only or full cache folder costs speed next time, never the run.
        Path(locals().get("tmp", path.with_suffix(".tmp"))).unlink(missing_ok=True)
