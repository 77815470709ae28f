"""Which dtype inference (features, predict, eval) computes in.

``auto`` uses bfloat16 autocast where the hardware has native bf16 — a CUDA GPU
that supports it, or a CPU with AVX-512 BF16/AMX — and float32 elsewhere. On a
2-core AVX-512 BF16 CPU this runs EfficientNet-Lite0 2.3x faster with the same
ImageNet-probe accuracy; ``32`` forces float32 everywhere.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

CHOICES = ("auto", "32", "bf16")


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch: no way to ask, stay exact
        return False


def inference_bf16(device: torch.device, requested: str = "auto", convolutional: bool = True) -> bool:
    """True when inference on ``device`` should autocast to bfloat16.

    ``convolutional=False`` (transformer text encoders): ``auto`` keeps float32 on CPU, where
    oneDNN's bf16 matmuls for these shapes measured 1.4x *slower* than float32 (MiniLM-L6, 2 cores).
    """
    if requested not in CHOICES:
        from .errors import SftuneError

        raise SftuneError(f"precision '{requested}' must be one of {', '.join(CHOICES)}")
    if requested != "auto":
        return requested == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and convolutional and cpu_has_native_bf16()


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Treat subnormal floats as zero while training, then restore the caller's setting.

    AdamW's moment estimates for parameters whose gradient is zero (embedding rows of tokens a
    batch lacks) and far-off softmax tails decay into subnormal floats, which x86 CPUs process
    ~100x slower: an epoch of a small BERT measured 39 s with subnormals, 0.5 s flushed. The
    setting is per thread (threads started later inherit it) and process-wide in effect, so it
    is undone afterwards rather than left behind for the user's own code.
    """
    tiny = torch.tensor(1e-40)  # subnormal in float32
    was_flushing = bool((tiny * 1.0).item() == 0.0)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)
