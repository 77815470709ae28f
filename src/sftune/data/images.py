"""Reading one image file into an RGB PIL image, whatever its mode.

Handles EXIF rotation, grayscale, palette and alpha (composited on white),
CMYK, and 16/32-bit integer images (rescaled to 8 bits). Animated files give
their first frame.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Refuse images past ~ 16k x 16k: beyond that a single decode can exhaust memory.
MAX_PIXELS = 16_384 * 16_384

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# PIL warns between 1x and 2x its limit and raises beyond; we refuse everything past the limit
# ourselves with a message naming the file, so the warning would only be noise (set once, here:
# warnings.catch_warnings is not thread-safe and the scan runs on threads).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def to_rgb(im: Image.Image) -> Image.Image:
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit sources span 0..65535 whatever their content; 1/257 maps 65535 -> 255 exactly.
        arr = np.asarray(im, dtype=np.float64) / 257.0
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    elif im.mode in ("I", "F"):
        # 32-bit int / float: the range is unknown; rescale only values that do not fit 8 bits.
        arr = np.asarray(im, dtype=np.float64)
        if arr.max(initial=0) > 255:
            arr = arr * (255.0 / arr.max())
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as im:
        if im.width * im.height > MAX_PIXELS:  # the same limit inspect_image applies
            raise Image.DecompressionBombError(f"{path}: {im.width}x{im.height} px is over the limit of {MAX_PIXELS:,} px")
        im.seek(0)
        return to_rgb(im)


def inspect_image(path: Path) -> tuple[str | None, str | None]:
    """Check that a file decodes; return ``(content_sha256, None)`` or ``(None, reason)``.

    The file is read once: its bytes are hashed (for the data fingerprint) and
    decoded at reduced size (JPEG draft mode) so a scan stays cheap.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # a manifest row naming a missing file, or a dangling symlink
        return None, "file not found; fix its path or remove it from the data"
    except OSError as e:  # permissions, symlink loops, a folder named like an image, I/O errors
        return None, f"cannot read ({e.strerror or e}); fix its permissions or remove it"
    if not data:
        return None, "empty file (0 bytes)"
    digest = hashlib.sha256(data).hexdigest()
    # Size is checked from the header before decoding (no warnings filter: this runs on many threads).
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                return None, f"too large ({w}x{h} px, limit {MAX_PIXELS:,} px); resize it or remove it"
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except Image.DecompressionBombError as e:
        return None, f"refused as a decompression bomb ({e})"
    except Exception as e:  # PIL raises many types for broken files
        return None, f"not a readable image ({type(e).__name__}: {str(e)[:80]})"
    return digest, None


@dataclass(frozen=True)
class ImageScan:
    """What a dataset scan needs to know about one image file without decoding it for training."""

    digest: str  # sha256 of the file's bytes (duplicates, fingerprints)
    size: tuple[int, int]  # (width, height) in pixels as load_rgb gives it (EXIF orientation applied)
    stored_size: tuple[int, int]  # (width, height) as stored in the file
    orientation: int  # EXIF orientation 1-8 (1 = upright; 5-8 turn the image by 90 degrees)


def scan_image(path: Path) -> ImageScan | str:
    """The :class:`ImageScan` of ``path``, or the reason it cannot be used (one line, for the skip list)."""
    digest, reason = inspect_image(path)
    if reason is not None:
        return reason
    try:
        with Image.open(path) as im:
            w, h = im.size
            # PIL decodes a whole PNG to look for an eXIf chunk after the pixels; only pay that
            # when the file has one (rare), else the scan would decode every PNG twice.
            if im.format != "PNG" or "exif" in im.info or b"eXIf" in path.read_bytes():
                orientation = int(im.getexif().get(0x0112, 1) or 1)
            else:
                orientation = 1
    except Exception as e:
        return f"not a readable image ({type(e).__name__}: {str(e)[:80]})"
    orientation = orientation if 1 <= orientation <= 8 else 1
    upright = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    assert digest is not None
    return ImageScan(digest, upright, (w, h), orientation)
