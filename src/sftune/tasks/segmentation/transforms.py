"""Image + mask together: joint transforms, the dataset, decode-once and padded batches.

Geometry goes through torchvision's ``transforms.v2`` with ``tv_tensors.Image`` and
``tv_tensors.Mask``, so one random draw moves image and mask alike and masks are always
resampled nearest-neighbour (no invented class values between two regions). Randomness
is per sample, from ``(seed, epoch, index)`` as in ``data/datamodule.py``: augmentation
does not depend on worker count and a resumed run sees what the uninterrupted one saw.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ...data.datamodule import keyed
from ...data.images import load_rgb
from ...errors import SftuneError
from .data import MaskReader, MaskSample

# ----------------------------------------------------------------------------- transforms


class RandomScale(v2.Transform):
    """Scale image and mask by one random factor in ``scale`` (aspect ratio kept).

    Relative to the image's own size, because evaluation runs on the full image at its
    original size: training scales then bracket the evaluation scale (factor 1)."""

    def __init__(self, scale: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi:
            raise SftuneError(f"scale range {scale} must be 0 < low <= high, e.g. (0.5, 2.0)")
        self.scale = (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = next(F.get_size(x) for x in flat_inputs if isinstance(x, (tv_tensors.Image, tv_tensors.Mask)))
        factor = float(torch.empty(()).uniform_(*self.scale))  # the torch RNG: seeded per sample by the dataset
        return {"size": [max(1, round(h * factor)), max(1, round(w * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            # Nearest-neighbour (no invented classes), the 'exact' kind: plain NEAREST takes
            # floor(dst * scale) and shifts the mask up to a pixel up-left of the bilinear
            # image (pixel centres); NEAREST_EXACT samples at the centres, as bilinear does.
            return self._call_kernel(F.resize, inpt, params["size"], interpolation=F.InterpolationMode.NEAREST_EXACT)
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=F.InterpolationMode.BILINEAR,
                                 antialias=True)

    # torchvision < 0.21 calls these private names.
    _get_params = make_params
    _transform = transform


def build_joint_transforms(
    mean: Sequence[float],
    std: Sequence[float],
    crop_size: int | None,
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: float = 0.5,
    ignore_index: int = 255,
) -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms, each ``(Image uint8 (3, H, W), Mask int64 (H, W)) ->
    (float32 (3, H', W') normalized, int64 (H', W'))``.

    Train: random scale of the whole image by a factor in ``scale``; then, with a
    ``crop_size``, pad to at least the crop (image with 0, mask with ``ignore_index``, so
    padding never trains) and a random ``crop_size`` square; horizontal flip with
    probability ``hflip``. Eval: no geometry change at all (full image, original size),
    only the conversion to float and the normalization.
    """
    normalize = [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),  # uint8 -> [0, 1]; masks untouched
        v2.Normalize(list(mean), list(std)),  # applies to Image only
        v2.ToPureTensor(),
    ]
    steps: list[Callable] = []
    if tuple(scale) != (1.0, 1.0):
        steps.append(RandomScale(scale))
    if crop_size is not None:
        if crop_size < 1:
            raise SftuneError(f"crop size {crop_size} must be a positive number of pixels")
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True,
                                   fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    return v2.Compose(steps + normalize), v2.Compose(list(normalize))


# ----------------------------------------------------------------------------- decode once


class DecodedPairs:
    """Images (uint8 RGB) and masks (class indices) decoded once, held in two flat arrays.

    Two flat arrays rather than a list of arrays: DataLoader workers forked from the main
    process share the pages (no per-object reference counts touched), and a spawned worker
    receives two buffers. CamVid's 62 train pairs at 480x360: 32 MB of image + 11 MB of mask.
    """

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        self.pixels = pixels  # flat uint8: image i is pixels[o : o + h * w * 3] as (h, w, 3)
        self.labels = labels  # flat ints (the smallest dtype holding every value): mask i as (h, w)
        self.index = index  # (N, 4) int64: pixel offset, label offset, height, width

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes + self.labels.nbytes + self.index.nbytes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image (H, W, 3) uint8, mask (H, W) int64)``: copies, so a transform may change them."""
        po, lo, h, w = (int(x) for x in self.index[i])
        image = self.pixels[po: po + h * w * 3].reshape(h, w, 3).copy()
        mask = self.labels[lo: lo + h * w].reshape(h, w).astype(np.int64)
        return image, mask


def _read_pair(sample: MaskSample, reader: MaskReader) -> tuple[np.ndarray, np.ndarray]:
    """``(image (H, W, 3) uint8, mask (H, W) int64)``; an unlabeled sample's mask is all ignore_index."""
    try:
        image = np.array(load_rgb(sample.image), dtype=np.uint8)
    except SftuneError:
        raise
    except Exception as e:
        raise SftuneError(f"{sample.image}: could not be read ({type(e).__name__}: {e}); fix or remove it") from None
    if sample.mask is None:
        return image, np.full(image.shape[:2], reader.ignore_index, dtype=np.int64)
    mask = reader(sample.mask)
    if mask.shape != image.shape[:2]:
        raise SftuneError(f"{sample.image} + {sample.mask}: image is {image.shape[1]}x{image.shape[0]} but the mask is "
                          f"{mask.shape[1]}x{mask.shape[0]}; the mask must have the image's size")
    return image, mask


def decode_pairs(samples: list[MaskSample], reader: MaskReader, workers: int = 4) -> DecodedPairs:
    """Decode every pair once (threads; PIL releases the GIL) into a :class:`DecodedPairs`.

    Memory is about ``H * W * 4`` bytes per pair (3 for the image, 1 for an 8-bit mask):
    meant for data that fits in memory (hundreds to a few thousand pairs)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pairs = list(pool.map(lambda s: _read_pair(s, reader), samples))
    low = min([reader.ignore_index] + [int(m.min()) for _, m in pairs if m.size])
    high = max([reader.ignore_index] + [int(m.max()) for _, m in pairs if m.size])
    dtype = next(t for t in (np.uint8, np.int16, np.int32, np.int64)
                 if np.iinfo(t).min <= low and high <= np.iinfo(t).max)
    index = np.zeros((len(pairs), 4), dtype=np.int64)
    po = lo = 0
    for i, (image, mask) in enumerate(pairs):
        h, w = mask.shape
        index[i] = (po, lo, h, w)
        po += image.size
        lo += mask.size
    pixels = np.concatenate([image.ravel() for image, _ in pairs]) if pairs else np.zeros(0, np.uint8)
    labels = np.concatenate([mask.ravel().astype(dtype) for _, mask in pairs]) if pairs else np.zeros(0, dtype)
    return DecodedPairs(pixels, labels, index)


# ----------------------------------------------------------------------------- dataset


class SegmentationDataset(Dataset):
    """``(image float32 (3, H, W), mask int64 (H, W))`` pairs; unlabeled images give an all-ignore mask.

    Indexed with an int (evaluation) or with ``(index, epoch)`` from ``EpochShuffle``
    (training), which seeds the augmentation of that sample in that epoch.
    """

    def __init__(self, samples: list[MaskSample], reader: MaskReader, transform: Callable, seed: int = 0,
                 decoded: DecodedPairs | None = None) -> None:
        if decoded is not None and len(decoded) != len(samples):
            raise ValueError(f"decoded holds {len(decoded)} pairs for {len(samples)} samples")
        self.samples = samples
        self.reader = reader
        self.transform = transform
        self.seed = seed
        self.decoded = decoded  # pairs decoded once (decode_pairs), else files are read each time

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seeded = keyed(key, self.seed)  # v2 transforms draw from torch
        image, mask = self.decoded[index] if self.decoded is not None else _read_pair(self.samples[index], self.reader)
        with seeded:
            return self.transform(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                                  tv_tensors.Mask(torch.from_numpy(mask)))


# ----------------------------------------------------------------------------- batching


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor]], stride: int = 32,
                ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image (3, h, w), mask (h, w))`` items of different sizes into ``(B, 3, H, W), (B, H, W)``.

    Each item keeps its top-left corner; H and W are the batch's largest height and width
    rounded up to a multiple of ``stride`` (encoders that downsample 32x need it). Images
    pad with 0 (after normalization: the mean colour), masks with ``ignore_index``, so
    padded pixels never enter the loss or the metrics.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    images, masks = zip(*batch)
    height = math.ceil(max(x.shape[-2] for x in images) / stride) * stride
    width = math.ceil(max(x.shape[-1] for x in images) / stride) * stride
    out_images = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    out_masks = torch.full((len(masks), height, width), ignore_index, dtype=masks[0].dtype)
    for i, (image, mask) in enumerate(zip(images, masks)):
        h, w = image.shape[-2:]
        out_images[i, :, :h, :w] = image
        out_masks[i, :h, :w] = mask
    return out_images, out_masks
