"""Masks as pictures: the class colours, index PNGs, overlays and the report's triptychs.

Colours are Pascal VOC's colour map (each class index's bits interleaved into R, G and B from
the most significant bit down): the field's standard, so a mask written here looks like a VOC
``SegmentationClass`` PNG in any viewer, and neighbouring indices get very different colours.
Class 0 is black (VOC's background); void/ignore pixels (index 255) are VOC's cream
(224, 224, 192) in index PNGs, and are left uncoloured (the image shows through) in overlays.
Where a data set brings its own class colours (RGB colour masks such as CamVid's, a classes.json,
a palette PNG), every function here takes them as ``colors`` and uses them instead.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VOID_INDEX = 255  # VOC's void label, and the usual ignore_index
PANEL_PX = 360  # the longest side of one triptych panel: three side by side fit the report's width at 1:1
TITLE_PX = 18  # the band above each panel that holds its title

# A mask's classes: their names, or just how many there are.
Classes = Sequence[str] | int
# Class colours, entry i = RGB of class i: an (C, 3) array or a list of triples; None = VOC's.
Colors = Sequence[Sequence[int]] | np.ndarray | None


def voc_colormap(n: int = 256) -> np.ndarray:
    """The first ``n`` colours of Pascal VOC's bit-interleaved colour map, (n, 3) uint8."""
    index = np.arange(n, dtype=np.int64)
    colours = np.zeros((n, 3), dtype=np.int64)
    c = index.copy()
    for shift in range(7, -1, -1):  # the index's bit triples fill the colour bits from the top
        for channel in range(3):
            colours[:, channel] |= ((c >> channel) & 1) << shift
        c >>= 3
    return colours.astype(np.uint8)


VOID_COLOR = tuple(int(v) for v in voc_colormap(256)[VOID_INDEX])  # (224, 224, 192)


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8: class i's colour (VOC's colour map; class 0 black). Void/ignore
    pixels are not a class: ``VOID_COLOR`` in index PNGs, uncoloured in overlays."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return voc_colormap(num_classes)


def _count(classes: Classes) -> int:
    return classes if isinstance(classes, int) else len(classes)


def class_colors(num_classes: int, colors: Colors = None) -> np.ndarray:
    """(num_classes, 3) uint8: ``colors`` when given (a data set's own), else :func:`palette`.
    Raises ValueError when ``colors`` has fewer entries than classes or is not RGB."""
    if colors is None:
        return palette(num_classes)
    table = np.asarray(colors, dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 3 or len(table) < num_classes:
        raise ValueError(f"class colours must be {num_classes} RGB triples, got shape {table.shape}")
    return np.clip(table[:num_classes], 0, 255).astype(np.uint8)


def index_png(mask: Any, classes: Classes, colors: Colors = None) -> Image.Image:
    """The mask as an image whose pixel values are the class indices.

    Up to 256 classes: mode "P" with VOC's 256-colour palette (class i is palette entry i, void
    255 is cream; ``colors`` replace the classes' entries), so a viewer shows colours while
    readers get the indices back unchanged.
    More than 256 classes do not fit a palette: the image is then 16-bit greyscale ("I;16",
    values 0..65535, no colours; a PNG viewer shows it nearly black).
    """
    values = np.asarray(mask)
    if values.ndim != 2:
        raise ValueError(f"a mask is (H, W); got shape {values.shape}")
    if values.dtype.kind not in "iub":
        raise ValueError(f"a mask holds integer class indices; got dtype {values.dtype}")
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if _count(classes) <= 256:
        if low < 0 or high > 255:
            raise ValueError(f"mask values {low}..{high} do not fit an 8-bit index PNG (0..255)")
        image = Image.frombytes("P", (values.shape[1], values.shape[0]), np.ascontiguousarray(values, dtype=np.uint8).tobytes())
        table = voc_colormap(256)
        if colors is not None:
            count = min(_count(classes), 256)
            table[:count] = class_colors(count, colors)
        image.putpalette(table.flatten().tolist())
        return image
    if low < 0 or high > 65535:
        raise ValueError(f"mask values {low}..{high} do not fit a 16-bit index PNG (0..65535)")
    return Image.frombytes("I;16", (values.shape[1], values.shape[0]), np.ascontiguousarray(values, dtype="<u2").tobytes())


def save_index_png(mask: Any, path: str | Path, classes: Classes | None = None, colors: Colors = None) -> Path:
    """Write ``index_png(mask, classes, colors)`` to ``path`` atomically (temp file in the same folder,
    then os.replace: a reader never sees half a PNG). Without ``classes`` the mode follows the
    values: "P" when they fit 0..255, else 16-bit "I;16"."""
    path = Path(path)
    if classes is None:
        values = np.asarray(mask)
        classes = 256 if values.size == 0 or int(values.max()) <= 255 else 257
    image = index_png(mask, classes, colors)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_index_png(path: str | Path) -> np.ndarray:
    """The class indices of an index PNG (P, L or 16-bit), as (H, W) int64 (no palette mapping)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            raise ValueError(f"{path}: a {image.mode} image is not an index mask (expected P, L or 16-bit)")
        return np.asarray(image).astype(np.int64)


def _rgb(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"an image is (H, W, 3) RGB; got shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array[..., :3].astype(np.uint8)))


def _fit_mask(mask: Any, size: tuple[int, int]) -> np.ndarray:
    """The mask as (H, W) int64 at ``size`` (W, H): nearest neighbour, so indices stay indices."""
    values = np.asarray(mask).astype(np.int64)
    if values.ndim != 2:
        raise ValueError(f"a mask is (H, W); got shape {values.shape}")
    if (values.shape[1], values.shape[0]) == size:
        return values
    shifted = values - values.min()  # mode "I" holds int32; the shift keeps negative ignore values
    resized = np.asarray(Image.fromarray(shifted.astype(np.int32)).resize(size, Image.NEAREST))
    return resized.astype(np.int64) + values.min()


def overlay(image: Any, mask: Any, alpha: float = 0.5, num_classes: int | None = None,
            ignore_index: int | None = VOID_INDEX, colors: Colors = None) -> Image.Image:
    """The image with each pixel's class colour blended in (``alpha`` = weight of the colour).

    Pixels equal to ``ignore_index``, negative, or not below ``num_classes`` (when given) are
    left uncoloured. A mask of another size is resized (nearest) to the image's size.
    """
    base = _rgb(image)
    values = _fit_mask(mask, base.size)
    valid = values >= 0
    if ignore_index is not None:
        valid &= values != ignore_index
    if num_classes is not None:
        valid &= values < num_classes
    count = num_classes if num_classes is not None else int(values[valid].max()) + 1 if valid.any() else 1
    colours = class_colors(max(count, 1), colors).astype(np.float32)
    pixels = np.asarray(base).astype(np.float32)
    painted = colours[np.where(valid, values, 0)]
    blended = np.where(valid[..., None], (1 - alpha) * pixels + alpha * painted, pixels)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def _panel(image: Image.Image, title: str, width: int, height: int) -> Image.Image:
    panel = Image.new("RGB", (width, height + TITLE_PX), "white")
    panel.paste(image, (0, TITLE_PX))
    ImageDraw.Draw(panel).text((2, 3), title, fill=(29, 35, 48), font=ImageFont.load_default())
    return panel


def triptych(image: Any, truth: Any, prediction: Any, classes: Classes, ignore_index: int | None = VOID_INDEX,
             panel_px: int = PANEL_PX, alpha: float = 0.5,
             titles: tuple[str, str, str] = ("image", "truth", "prediction"), colors: Colors = None) -> Image.Image:
    """image | truth overlay | prediction overlay, side by side, each under a small title.

    Each panel is the image scaled to fit ``panel_px`` on its longer side (never enlarged);
    void pixels (``ignore_index``) stay uncoloured. The masks are resized (nearest) to the image.
    """
    base = _rgb(image)
    c = _count(classes)
    panels = [base, overlay(base, truth, alpha, c, ignore_index, colors),
              overlay(base, prediction, alpha, c, ignore_index, colors)]
    scale = min(1.0, panel_px / max(base.size))
    size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
    gap = 6
    sheet = Image.new("RGB", (3 * size[0] + 2 * gap, size[1] + TITLE_PX), "white")
    for i, (picture, title) in enumerate(zip(panels, titles)):
        resample = Image.BILINEAR if i == 0 else Image.NEAREST  # overlays keep crisp class borders
        sheet.paste(_panel(picture.resize(size, resample), title, *size), (i * (size[0] + gap), 0))
    return sheet


def hex_colour(colour: Sequence[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in colour)


def legend_html(classes: Sequence[str], void: bool = True, colors: Colors = None) -> str:
    """The class colours as HTML swatches (inline styles, no script), plus "void" when ``void``."""
    swatch = ("<span style=\"display:inline-flex;align-items:center;margin:2px 12px 2px 0\">"
              "<span style=\"display:inline-block;width:14px;height:14px;margin-right:5px;border:1px solid #8c8c8c;"
              "background:{colour}\"></span>{name}</span>")
    items = [swatch.format(colour=hex_colour(c), name=html.escape(str(name))) for name, c in zip(classes, class_colors(len(classes), colors))]
    if void:
        items.append(swatch.format(colour="transparent", name="void / ignored (uncoloured)"))
    return f"<div class=\"legend\">{''.join(items)}</div>"


def class_fractions(mask: Any, classes: Sequence[str], ignore_index: int | None = None) -> dict[str, float]:
    """Each class's share of the mask's pixels, every class listed (0.0 when absent), in class order.

    Pixels equal to ``ignore_index`` or outside 0..C-1 are left out of the total.
    """
    values = np.asarray(mask).astype(np.int64).ravel()
    c = len(classes)
    keep = (values >= 0) & (values < c)
    if ignore_index is not None:
        keep &= values != ignore_index
    counts = np.bincount(values[keep], minlength=c)[:c]
    total = int(counts.sum())
    return {str(name): (round(float(n) / total, 6) if total else 0.0) for name, n in zip(classes, counts)}
