"""Image + boxes together: joint transforms, the dataset, decode-once and per-image target lists.

Geometry goes through torchvision's ``transforms.v2`` with ``tv_tensors.BoundingBoxes``
(``XYXY``, ``canvas_size=(H, W)``): one random draw moves image and boxes alike, and v2's
own box kernels do the flips, crops and resizes (no box arithmetic of ours).
``SanitizeBoundingBoxes`` then drops boxes a crop left (under 1 px, or centre outside the
crop) together with their label, difficult and iscrowd entries.

Normalisation and resizing belong to the detector: torchvision's detectors (Faster R-CNN,
RetinaNet, FCOS) run every input through ``GeneralizedRCNNTransform``, which normalises
with its ``image_mean``/``image_std`` and resizes so the shorter side is ``min_size`` (at most
``max_size`` on the longer), and maps predicted boxes back to the size it was given. So
the images leave here as float32 in [0, 1], *unnormalised*, each at its own size
(a list, not a stacked batch), and evaluation changes no geometry: predictions come back
in the input image's pixels, the pixels the annotations and ``predict`` use.

Because that resize always brings the shorter side to ``min_size``, a scale jitter here
would be undone: multi-scale training belongs to the detector (torchvision picks one of a
tuple of ``min_size`` values per image in training). What the detector cannot do is done
here: horizontal (and optionally vertical) flips, ``RandomIoUCrop`` (zoom in: a crop that
keeps at least one box well covered, then the detector enlarges it), ``RandomZoomOut``
(objects smaller), photometric jitter. ``min_size``/``max_size`` add ``RandomShortestSize``
for a detector built without its own resize (or to shrink huge photos before batching).

Randomness is per sample, from ``(seed, epoch, index)`` as in ``data/datamodule.py``:
augmentation does not depend on worker count and a resumed run sees what the
uninterrupted one saw.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ...data.datamodule import keyed
from ...data.images import load_rgb
from ...errors import SftuneError
from .data import BoxSample, BoxTarget

# ImageNet mean as uint8: the colour RandomZoomOut fills the new canvas with (0 after normalisation).
FILL = (124, 116, 104)
TARGET_FIELDS = ("labels", "difficult", "iscrowd")  # per-box entries that follow the boxes


# ----------------------------------------------------------------------------- transforms


def _box_fields(inputs: Any) -> tuple[torch.Tensor, ...]:
    """SanitizeBoundingBoxes' labels_getter: every per-box entry of the target dict (a module
    function, not a lambda, so the transform pickles into DataLoader workers)."""
    items = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    target = next((x for x in items if isinstance(x, dict)), None)
    if target is None:
        raise TypeError("detection transforms take (image, target dict)")
    return tuple(target[k] for k in TARGET_FIELDS if k in target)


def build_box_transforms(
    hflip: float = 0.5,
    vflip: float = 0.0,
    iou_crop: float = 0.3,
    zoom_out: float = 0.0,
    zoom_out_max: float = 2.0,
    photometric: float = 0.0,
    min_size: int | Sequence[int] | None = None,
    max_size: int | None = None,
) -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms, each ``(Image uint8 (3, H, W), target dict with "boxes":
    BoundingBoxes XYXY and per-box "labels"/"difficult"/"iscrowd") -> (float32 (3, H', W')
    in [0, 1], the target with plain tensors)``. No normalisation: the detector does it.

    Train, in order: photometric jitter with probability ``photometric``; ``RandomZoomOut``
    (canvas up to ``zoom_out_max`` times larger, filled with the ImageNet mean) with
    probability ``zoom_out``; ``RandomIoUCrop`` with probability ``iou_crop`` (skipped on an
    image without boxes); ``RandomShortestSize(min_size, max_size)`` when ``min_size`` is
    given; flips with probabilities ``hflip``/``vflip``; then boxes are clamped to the image
    and ``SanitizeBoundingBoxes`` drops those under 1 px with their per-box entries.
    Eval: no geometry change at all, only the conversion to float.
    """
    for name, p in (("hflip", hflip), ("vflip", vflip), ("iou_crop", iou_crop), ("zoom_out", zoom_out),
                    ("photometric", photometric)):
        if not 0.0 <= p <= 1.0:
            raise SftuneError(f"{name} is a probability: {p} is not in [0, 1]")
    if zoom_out_max < 1.0:
        raise SftuneError(f"zoom_out_max {zoom_out_max} must be >= 1 (how much larger the canvas gets)")
    to_float = [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.ToPureTensor()]
    steps: list[Callable] = []
    if photometric > 0:
        steps.append(v2.RandomPhotometricDistort(p=photometric))
    if zoom_out > 0 and zoom_out_max > 1.0:
        steps.append(v2.RandomZoomOut(fill={tv_tensors.Image: FILL, "others": 0}, side_range=(1.0, zoom_out_max),
                                      p=zoom_out))
    if iou_crop > 0:
        steps += [v2.RandomApply([IoUCropIfBoxes()], p=iou_crop)]
    if min_size is not None:
        sizes = [int(min_size)] if isinstance(min_size, (int, np.integer)) else [int(s) for s in min_size]
        if not sizes or min(sizes) < 1 or (max_size is not None and max_size < max(sizes)):
            raise SftuneError(f"min_size {min_size} must be positive pixel sizes no larger than max_size {max_size}")
        steps.append(v2.RandomShortestSize(min_size=sizes, max_size=max_size))
    elif max_size is not None:
        raise SftuneError("max_size caps the longer side of RandomShortestSize: give min_size too")
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    if vflip > 0:
        steps.append(v2.RandomVerticalFlip(p=vflip))
    if steps:
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_box_fields)]
    return v2.Compose(steps + to_float), v2.Compose(list(to_float))


class IoUCropIfBoxes(v2.RandomIoUCrop):
    """``RandomIoUCrop`` (SSD's crop: every crop keeps some box covered by IoU >= a drawn
    threshold; boxes whose centre leaves the crop are zeroed for SanitizeBoundingBoxes), left
    out for an image without boxes, where no crop can satisfy it (torchvision would redraw
    until it picks 'no crop')."""

    def forward(self, *inputs: Any) -> Any:
        flat = inputs if len(inputs) > 1 else inputs[0]
        boxes = next((x["boxes"] for x in (flat if isinstance(flat, (tuple, list)) else (flat,))
                      if isinstance(x, dict) and "boxes" in x), None)
        if boxes is not None and len(boxes) == 0:
            return flat
        return super().forward(*inputs)


# ----------------------------------------------------------------------------- decode once


class DecodedImages:
    """Images (uint8 RGB, displayed orientation) decoded once, held in one flat array.

    One flat array rather than a list of arrays: DataLoader workers forked from the main
    process share its pages (no per-object reference counts touched), and a spawned worker
    receives one buffer. BCCD's 205 training images at 640x480: 189 MB."""

    def __init__(self, pixels: np.ndarray, index: np.ndarray) -> None:
        self.pixels = pixels  # flat uint8: image i is pixels[o : o + h * w * 3] as (h, w, 3)
        self.index = index  # (N, 3) int64: offset, height, width

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes + self.index.nbytes)

    def __getitem__(self, i: int) -> np.ndarray:
        """``(H, W, 3)`` uint8, a copy (a transform may change it)."""
        o, h, w = (int(x) for x in self.index[i])
        return self.pixels[o: o + h * w * 3].reshape(h, w, 3).copy()


def _read_image(sample: BoxSample) -> np.ndarray:
    try:
        return np.array(load_rgb(sample.image), dtype=np.uint8)
    except Exception as e:
        raise SftuneError(f"{sample.image}: could not be read ({type(e).__name__}: {e}); fix or remove it") from None


def decode_images(samples: list[BoxSample], workers: int = 4) -> DecodedImages:
    """Decode every image once (threads; PIL releases the GIL) into a :class:`DecodedImages`.

    Memory is ``H * W * 3`` bytes per image: meant for data that fits in memory (hundreds to
    a few thousand images)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        images = list(pool.map(_read_image, samples))
    index = np.zeros((len(images), 3), dtype=np.int64)
    offset = 0
    for i, image in enumerate(images):
        index[i] = (offset, image.shape[0], image.shape[1])
        offset += image.size
    pixels = np.concatenate([image.ravel() for image in images]) if images else np.zeros(0, np.uint8)
    return DecodedImages(pixels, index)


# ----------------------------------------------------------------------------- dataset


def _check_inside(sample: BoxSample, target: BoxTarget, height: int, width: int) -> None:
    if len(target) and (target.boxes[:, 2].max() > width + 1e-3 or target.boxes[:, 3].max() > height + 1e-3):
        raise SftuneError(f"{sample.image}: boxes reach {target.boxes[:, 2].max():.0f}x{target.boxes[:, 3].max():.0f} "
                          f"but the image is {width}x{height}; the file changed since the data was read")


class DetectionDataset(Dataset):
    """``(image float32 (3, H, W) in [0, 1], target)`` with ``target`` = ``{"boxes": (N, 4) float32
    xyxy px, "labels": (N,) int64 class indices 0..C-1 (no background: the model adds 1),
    "difficult": (N,) bool, "iscrowd": (N,) bool, "image_id": int (the index in ``samples``)}``.

    Images without boxes (and unlabeled samples) give ``(0, 4)`` boxes. Indexed with an int
    (evaluation) or with ``(index, epoch)`` from ``EpochShuffle`` (training), which seeds the
    augmentation of that sample in that epoch.
    """

    def __init__(self, samples: list[BoxSample], transform: Callable, seed: int = 0,
                 decoded: DecodedImages | None = None) -> None:
        if decoded is not None and len(decoded) != len(samples):
            raise ValueError(f"decoded holds {len(decoded)} images for {len(samples)} samples")
        self.samples = samples
        self.transform = transform
        self.seed = seed
        self.decoded = decoded  # images decoded once (decode_images), else files are read each time

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        index, seeded = keyed(key, self.seed)  # v2 transforms draw from torch
        sample = self.samples[index]
        image = self.decoded[index] if self.decoded is not None else _read_image(sample)
        h, w = image.shape[:2]
        target = sample.target if sample.target is not None else BoxTarget.empty()
        _check_inside(sample, target, h, w)
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(target.boxes.copy()), format="XYXY", canvas_size=(h, w))
        with seeded:
            out_image, out = self.transform(
                tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                {"boxes": boxes, "labels": torch.from_numpy(target.labels.copy()),
                 "difficult": torch.from_numpy(target.difficult.copy()),
                 "iscrowd": torch.from_numpy(target.iscrowd.copy())})
        out = dict(out)
        out["boxes"] = torch.as_tensor(out["boxes"], dtype=torch.float32).reshape(-1, 4)
        out["image_id"] = index
        return out_image, out


# ----------------------------------------------------------------------------- batching


def detection_collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """``[(image, target), ...]`` -> ``([image, ...], [target, ...])``: images of different sizes
    stay a list (the detector batches them itself) and each image keeps its own target dict,
    as torchvision's detectors take them."""
    if not batch:
        return [], []
    images, targets = zip(*batch)
    return list(images), list(targets)
