"""Segmentation fixtures: tiny generated image/mask folders in every layout and mask format.

Each image is a flat background with coloured rectangles; the colour of a pixel in the
image names its class (``IMAGE_COLOURS[c]``), so a test can recover the true mask from
the image alone (:func:`classes_from_image`) and check that image and mask stay aligned.
Import the helpers with ``from .conftest import write_seg_folder``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA

CAMVID = SHARED_DATA / "CamVid_subset" / "CamVid"
CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
                  "pedestrian", "bicyclist"]

# Colour of class c in the *image* (far apart, so interpolated edges never look like another class).
IMAGE_COLOURS = np.array([(10, 10, 10), (240, 30, 30), (30, 230, 30), (30, 30, 240), (240, 240, 30),
                          (240, 30, 240), (30, 240, 240), (140, 140, 140)], dtype=np.uint8)
# Colour of class c in RGB masks and palette entries: deliberately not (c, c, c), so a reader
# that used colours instead of palette indices would get other values.
MASK_COLOURS = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
                (64, 64, 64)]
MASK_FORMATS = ("index", "palette", "binary", "16bit", "rgb")
LAYOUTS = ("camvid", "images_masks", "images_masks_split", "csv")


def draw_labels(i: int, size: tuple[int, int] = (40, 30), classes: int = 3) -> np.ndarray:
    """Class indices (H, W) uint8 of example ``i``: background 0 and off-centre rectangles of
    classes 1..classes-1 (which ones and where depends on ``i``)."""
    w, h = size
    labels = np.zeros((h, w), dtype=np.uint8)
    first = 1 + i % (classes - 1)
    x0, y0 = 2 + (3 * i) % max(1, w // 4), 2 + (2 * i) % max(1, h // 4)
    labels[y0: y0 + h // 2, x0: x0 + w // 3] = first
    if classes > 2:
        second = 1 + (i + 1) % (classes - 1)
        labels[h // 2: h - 2, w // 2 + 2: w - 3] = second
    return labels


def classes_from_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB (any numeric type, 0-255) -> (H, W) int64: the nearest IMAGE_COLOURS class."""
    diff = image[:, :, None, :].astype(np.float64) - IMAGE_COLOURS[None, None].astype(np.float64)
    return np.argmin((diff ** 2).sum(-1), axis=-1).astype(np.int64)


def save_mask(labels: np.ndarray, path: Path, mask_format: str = "index") -> Path:
    """Write class indices (H, W) as a mask file in ``mask_format`` (the extension picks PNG/JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask_format == "index":
        im = Image.fromarray(labels.astype(np.uint8), mode="L")
    elif mask_format == "palette":
        im = Image.fromarray(labels.astype(np.uint8), mode="P")
        palette = [v for c in MASK_COLOURS for v in c]
        im.putpalette(palette + [255, 255, 255] * (256 - len(MASK_COLOURS)))
    elif mask_format == "binary":
        im = Image.fromarray((labels > 0).astype(np.uint8) * 255, mode="L")
    elif mask_format == "16bit":
        im = Image.fromarray(labels.astype(np.uint16))  # mode I;16
    elif mask_format == "rgb":
        table = np.array(MASK_COLOURS + [(255, 255, 255)] * (256 - len(MASK_COLOURS)), dtype=np.uint8)
        im = Image.fromarray(table[labels.astype(np.int64)], mode="RGB")
    else:
        raise ValueError(mask_format)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=90)
    else:
        im.save(path)
    return path


def save_image(labels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(IMAGE_COLOURS[labels.astype(np.int64) % len(IMAGE_COLOURS)], mode="RGB").save(path)
    return path


def write_seg_folder(
    root: Path,
    layout: str = "camvid",
    n: int = 8,
    size: tuple[int, int] = (40, 30),
    classes: int = 3,
    mask_format: str = "index",
    n_val: int | None = None,
    image_ext: str = "png",
    mask_ext: str = "png",
    void: int | None = None,
    class_names: list[str] | None = None,
    table: str | None = None,
) -> Path:
    """A tiny segmentation dataset under ``root``; returns the path to pass as ``--data``.

    layout: "camvid" (train/ trainannot/ val/ valannot/), "images_masks" (images/ masks/, no
    split), "images_masks_split" (images/{train,val} masks/{train,val}), "csv" (files under
    img/ and ann/, and root/data.csv with image,mask,split: the returned path).
    size: (width, height). classes: number of classes (binary format: 2). n_val: validation
    pairs for layouts with a split (default n // 4). void: paint a strip of this value
    (the ignore_index) into every index-like mask. class_names: written to classes.txt.
    table: for rgb masks, the colour table to write: "classes.json" (list of {name, color}),
    "classes_dict.json" (written as classes.json, {name: [r, g, b]}) or "labelmap.txt".
    """
    if mask_format == "binary" and classes != 2:
        raise ValueError("binary masks have 2 classes")
    n_val = max(1, n // 4) if n_val is None else n_val
    rows = []
    for i in range(n):
        split = "val" if i >= n - n_val else "train"
        labels = draw_labels(i, size, classes)
        if void is not None:
            labels[-2:, :] = void  # a void strip along the bottom
        name = f"img_{i:03d}"
        if layout == "camvid":
            image_path = root / split / f"{name}.{image_ext}"
            mask_path = root / f"{split}annot" / f"{name}.{mask_ext}"
        elif layout == "images_masks":
            image_path = root / "images" / f"{name}.{image_ext}"
            mask_path = root / "masks" / f"{name}.{mask_ext}"
        elif layout == "images_masks_split":
            image_path = root / "images" / split / f"{name}.{image_ext}"
            mask_path = root / "masks" / split / f"{name}.{mask_ext}"
        elif layout == "csv":
            image_path = root / "img" / f"{name}.{image_ext}"
            mask_path = root / "ann" / f"{name}.{mask_ext}"
        else:
            raise ValueError(layout)
        image_labels = labels.copy()
        if void is not None:
            image_labels[labels == void] = 0  # void pixels look like background in the image
        save_image(image_labels, image_path)
        save_mask(labels, mask_path, mask_format)
        rows.append((image_path.relative_to(root).as_posix(), mask_path.relative_to(root).as_posix(), split))
    if class_names is not None:
        (root / "classes.txt").write_text("\n".join(class_names) + "\n")
    names = class_names or [f"c{k}" for k in range(classes)]
    if table == "classes.json":
        (root / "classes.json").write_text(json.dumps(
            [{"name": names[k], "color": list(MASK_COLOURS[k])} for k in range(classes)]))
    elif table == "classes_dict.json":
        (root / "classes.json").write_text(json.dumps({names[k]: list(MASK_COLOURS[k]) for k in range(classes)}))
    elif table == "labelmap.txt":
        lines = ["# label:color_rgb:parts:actions"] + [f"{names[k]}:{','.join(map(str, MASK_COLOURS[k]))}::"
                                                        for k in range(classes)]
        (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    if layout == "csv":
        with (root / "data.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "mask", "split"])
            writer.writerows(rows)
        return root / "data.csv"
    return root


@pytest.fixture
def seg_camvid(tmp_path) -> Path:
    """A fresh CamVid-layout folder: 6 train + 2 val pairs, 40x30 px, 3 classes, 8-bit index masks."""
    return write_seg_folder(tmp_path / "camvid")


@pytest.fixture
def seg_images_masks(tmp_path) -> Path:
    """A fresh images/ + masks/ folder of 8 pairs without a split, 3 classes, 8-bit index masks."""
    return write_seg_folder(tmp_path / "flat", layout="images_masks")


def needs_camvid():
    return pytest.mark.skipif(not (CAMVID / "trainannot").is_dir(), reason=f"real CamVid subset not found at {CAMVID}")
