"""Which dtype inference (features, predict, eval) and training compute in.

``auto`` uses bfloat16 autocast where the hardware has native bf16 — a CUDA GPU
that supports it, or a CPU with AVX-512 BF16/AMX — and float32 elsewhere. On a
2-core AVX-512 BF16 CPU this runs EfficientNet-Lite0 2.3x faster with the same
ImageNet-probe accuracy; ``32`` forces float32 everywhere. Training's ``auto``
(:func:`training_precision`) differs: bf16-mixed pays on such a CPU for transformers,
not for convolutions.
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


def training_precision(requested: str, accelerator: str, convolutional: bool = True) -> str:
    """Lightning's precision for ``trainer.precision`` (``requested``), resolving ``auto``:

    * ``bf16-mixed`` on a CUDA GPU that supports bf16 (``accelerator`` auto/gpu/cuda);
    * ``bf16-mixed`` on a CPU with native bf16 (AVX-512 BF16 / AMX) for transformer models
      (``convolutional=False``): MiniLM-L6 fine-tuning measured 1.62x faster per step there and
      1.47x per run, at the same SST-2 accuracy (README, "Precision on CPUs");
    * ``32-true`` otherwise: convolutional backbones gained nothing in bf16 on such a CPU (1.03x
      for EfficientNet-Lite0), and float32 keeps their CPU results exact.

    Any other value is returned as given (Lightning validates it).
    """
    if requested != "auto":
        return requested
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("auto", "cpu") and not convolutional and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32-true"


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
