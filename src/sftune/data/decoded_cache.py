"""Training images decoded and resized once, kept in one memory-mapped uint8 file.

Full fine-tuning reads every training image every epoch; decoding a JPEG and
resizing a multi-megapixel photo costs more than the augmentation that follows.
Here each image is decoded once, its shorter side scaled down to what the
random-resized crop needs (``input_size / crop_pct``, e.g. 256 px for 224), and
appended to a flat ``uint8`` file; epochs then read ``(h, w, 3)`` slices of a
memory map and augment from there. The page cache holds what fits, the rest
streams from disk, so memory grows with the batch, not with the dataset.

Keyed like the feature cache: file content hashes in order, the target short
side and the format version; entries live under ``$SFTUNE_CACHE/decoded/``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .feature_cache import cache_root
from .images import load_rgb
from .sources import Sample

FORMAT = "sftune-decoded-1"


def decoded_key(digests: list[str], short_side: int) -> str:
    h = hashlib.sha256(f"{FORMAT}|short={short_side}".encode())
    for digest in digests:
        h.update(digest.encode())
    return h.hexdigest()


class DecodedImages:
    """Image ``i`` as a PIL RGB image, read from the memory map (opened lazily per process)."""

    def __init__(self, data_path: Path, index: np.ndarray) -> None:
        self.data_path = data_path
        self.index = index  # (N, 3) int64: byte offset, height, width
        self._map: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn get the path, not a copy of the mapped bytes.
        return {"data_path": self.data_path, "index": self.index, "_map": None}

    def __getitem__(self, i: int) -> Image.Image:
        if self._map is None:
            self._map = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        offset, h, w = (int(x) for x in self.index[i])
        pixels = np.asarray(self._map[offset : offset + h * w * 3]).reshape(h, w, 3)
        return Image.fromarray(pixels, mode="RGB")


def _decode(path: Path, short_side: int) -> np.ndarray:
    image = load_rgb(path)
    w, h = image.size
    scale = short_side / min(w, h)
    if scale < 1:  # only ever shrink: upscaling here would add nothing the crop cannot do
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def decoded_images(samples: list[Sample], digests: list[str], short_side: int, workers: int = 4) -> tuple[DecodedImages, bool]:
    """The decoded cache for ``samples`` (built now if missing) and whether it already existed."""
    key = decoded_key(digests, short_side)
    folder = cache_root() / "decoded"
    data_path, index_path = folder / f"{key}.u8", folder / f"{key}.index.npy"
    if data_path.is_file() and index_path.is_file():
        index = np.load(index_path)
        if len(index) == len(samples):
            return DecodedImages(data_path, index), True
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_data = tempfile.mkstemp(dir=folder, suffix=".u8.tmp")
    index = np.zeros((len(samples), 3), dtype=np.int64)
    try:
        with os.fdopen(fd, "wb") as out, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            offset = 0
            # map() keeps order and decodes ahead on the pool threads (PIL releases the GIL).
            for i, pixels in enumerate(pool.map(lambda s: _decode(s.path, short_side), samples)):
                h, w, _ = pixels.shape
                index[i] = (offset, h, w)
                out.write(pixels.tobytes())
                offset += pixels.nbytes
        os.replace(tmp_data, data_path)
        # The index is written last: its presence marks a complete entry.
        tmp_index = index_path.with_suffix(".tmp.npy")
        np.save(tmp_index, index)
        os.replace(tmp_index, index_path)
    except BaseException:
        Path(tmp_data).unlink(missing_ok=True)
        raise
    return DecodedImages(data_path, index), False
