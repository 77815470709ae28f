"""Detection fixtures: tiny generated datasets in every annotation format.

Each image is a dark background with coloured rectangles; the colour of a rectangle names
its class (``CLASS_COLOURS[c]``) and its box is exactly the rectangle's pixels, so a test
can check from the pixels alone that a box (after any transform) still sits on its object
(:func:`box_colour_class`). Every writer draws the same scenes (:func:`scene`), so every
format must read to the same boxes and classes. Import with ``from .conftest import ...``.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA

BCCD = SHARED_DATA / "BCCD" / "BCCD"
CLASSES = ["apple", "banana", "cherry"]  # sorted: the class order every format reads
BACKGROUND = (10, 10, 10)
CLASS_COLOURS = np.array([(240, 30, 30), (30, 230, 30), (30, 30, 240), (240, 240, 30)], dtype=np.uint8)
FORMATS = ("voc", "coco", "yolo", "csv")
SIZE = (64, 48)  # (width, height) of every generated image


def scene(i: int, size: tuple[int, int] = SIZE, n_classes: int = 3) -> list[tuple[tuple[int, int, int, int], int]]:
    """The objects of example ``i``: ``[((x0, y0, x1, y1), class), ...]``, 1-3 non-overlapping
    rectangles (x ranges 20 px apart) whose boxes are continuous pixel coordinates."""
    w, h = size
    out = []
    for k in range(1 + i % 3):
        x0 = 4 + 20 * k + i % 3
        y0 = 4 + (5 * i + 7 * k) % max(1, h - 28)
        bw, bh = 12 + (i + k) % 5, 10 + (2 * i + k) % 8
        out.append(((x0, y0, min(w, x0 + bw), min(h, y0 + bh)), (i + k) % n_classes))
    return out


def draw(objects, size: tuple[int, int] = SIZE) -> np.ndarray:
    """(H, W, 3) uint8: the background with each object's box filled in its class colour."""
    w, h = size
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for (x0, y0, x1, y1), c in objects:
        image[y0:y1, x0:x1] = CLASS_COLOURS[c]
    return image


def box_colour_class(image: np.ndarray, box, margin: float = 0.25) -> int:
    """The class whose colour is most common in the middle of ``box`` (``margin`` of each side
    left out, where resampling blurs edges) of an (H, W, 3) image with values 0-255; -1 when
    the middle is mostly background."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    xa, xb = int(np.floor(x0 + dx)), int(np.ceil(x1 - dx))
    ya, yb = int(np.floor(y0 + dy)), int(np.ceil(y1 - dy))
    patch = image[max(0, ya): max(ya + 1, yb), max(0, xa): max(xa + 1, xb)].reshape(-1, 3).astype(np.float64)
    palette = np.vstack([CLASS_COLOURS, [BACKGROUND]]).astype(np.float64)
    nearest = np.argmin(((patch[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=len(palette))
    best = int(np.argmax(counts))
    return -1 if best == len(CLASS_COLOURS) else best


def save_png(objects, path: Path, size: tuple[int, int] = SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw(objects, size), mode="RGB").save(path)
    return path


def _examples(n: int, n_val: int, negatives: int, size: tuple[int, int], classes: list[str]):
    """``[(name, split, objects)]``: the last ``n_val`` are val; the first ``negatives`` have no objects."""
    out = []
    for i in range(n):
        objects = [] if i < negatives else scene(i, size, len(classes))
        out.append((f"img_{i:03d}", "val" if i >= n - n_val else "train", objects))
    return out


def voc_xml(name: str, image_name: str, objects, classes: list[str], size: tuple[int, int] = SIZE,
            difficult: set[int] = frozenset()) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = image_name
    s = ET.SubElement(root, "size")
    ET.SubElement(s, "width").text = str(size[0])
    ET.SubElement(s, "height").text = str(size[1])
    ET.SubElement(s, "depth").text = "3"
    for k, (box, c) in enumerate(objects):
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = classes[c] if isinstance(c, int) else c
        ET.SubElement(o, "difficult").text = "1" if k in difficult else "0"
        b = ET.SubElement(o, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(b, tag).text = f"{v:g}"
    return ET.tostring(root, encoding="unicode")


def add_voc_object(xml_path: Path, name: str, box) -> None:
    """Append an object to a VOC file (to make a fault)."""
    tree = ET.parse(xml_path)
    o = ET.SubElement(tree.getroot(), "object")
    ET.SubElement(o, "name").text = name
    b = ET.SubElement(o, "bndbox")
    for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
        ET.SubElement(b, tag).text = f"{v:g}"
    tree.write(xml_path)


def write_detection(
    root: Path,
    fmt: str = "voc",
    n: int = 6,
    n_val: int = 2,
    negatives: int = 0,
    size: tuple[int, int] = SIZE,
    classes: list[str] | None = None,
    split: bool = True,
    category_ids: list[int] | None = None,
    names: str = "yaml",
    layout: str = "",
) -> Path:
    """A tiny detection dataset under ``root`` in ``fmt``; returns the path to pass as ``--data``.

    ``split``: write the train/val split (VOC ImageSets, COCO train/val files, YOLO
    images/{train,val}, a CSV split column); else none (a random split). ``negatives``:
    the first examples have no object (VOC: an XML without objects; COCO: an image without
    annotations; YOLO: an empty label file; CSV: a row with empty box fields).
    ``category_ids``: COCO ids of the classes (default 1..C). ``names``: YOLO class names
    from "yaml" (list), "yaml_dict", "classes.txt" or "none". ``layout``: YOLO "roboflow"
    (train/images + train/labels + valid/...).
    """
    classes = list(classes or CLASSES)
    root.mkdir(parents=True, exist_ok=True)
    examples = _examples(n, n_val, negatives, size, classes)
    if fmt == "voc":
        for name, _, objects in examples:
            save_png(objects, root / "JPEGImages" / f"{name}.png", size)
            (root / "Annotations").mkdir(exist_ok=True)
            (root / "Annotations" / f"{name}.xml").write_text(voc_xml(name, f"{name}.png", objects, classes, size))
        if split:
            sets = root / "ImageSets" / "Main"
            sets.mkdir(parents=True)
            for side in ("train", "val"):
                (sets / f"{side}.txt").write_text("".join(f"{nm}\n" for nm, s, _ in examples if s == side))
        return root
    if fmt == "coco":
        ids = category_ids or list(range(1, len(classes) + 1))
        cats = [{"id": ids[c], "name": classes[c], "supercategory": "thing"} for c in range(len(classes))]
        sides = ("train", "val") if split else ("all",)
        ann_id = 1
        for side in sides:
            images, anns = [], []
            for k, (name, s, objects) in enumerate(examples):
                if split and s != side:
                    continue
                folder = f"{side}2017" if split else "images"
                save_png(objects, root / folder / f"{name}.png", size)
                image_id = 100 + k
                images.append({"id": image_id, "file_name": f"{name}.png", "width": size[0], "height": size[1]})
                for (x0, y0, x1, y1), c in objects:
                    anns.append({"id": ann_id, "image_id": image_id, "category_id": ids[c],
                                 "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
                    ann_id += 1
            (root / "annotations").mkdir(exist_ok=True)
            file = f"instances_{side}2017.json" if split else "instances_all.json"
            (root / "annotations" / file).write_text(json.dumps({"images": images, "annotations": anns,
                                                                  "categories": cats}))
        return root
    if fmt == "yolo":
        w, h = size
        for name, s, objects in examples:
            if layout == "roboflow":
                side = {"train": "train", "val": "valid"}[s] if split else "train"
                image_dir, label_dir = root / side / "images", root / side / "labels"
            else:
                image_dir = root / "images" / (s if split else "")
                label_dir = root / "labels" / (s if split else "")
            save_png(objects, image_dir / f"{name}.png", size)
            label_dir.mkdir(parents=True, exist_ok=True)
            lines = [f"{c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
                     for (x0, y0, x1, y1), c in objects]
            (label_dir / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
        if names == "yaml":
            (root / "data.yaml").write_text(f"nc: {len(classes)}\nnames: {json.dumps(classes)}\n")
        elif names == "yaml_dict":
            (root / "data.yaml").write_text("names:\n" + "".join(f"  {i}: {c}\n" for i, c in enumerate(classes)))
        elif names == "classes.txt":
            (root / "classes.txt").write_text("\n".join(classes) + "\n")
        return root
    if fmt == "csv":
        rows = []
        for name, s, objects in examples:
            save_png(objects, root / "img" / f"{name}.png", size)
            for box, c in objects or [(("", "", "", ""), None)]:
                rows.append([f"img/{name}.png", *box, classes[c] if c is not None else ""] + ([s] if split else []))
        with (root / "boxes.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "xmin", "ymin", "xmax", "ymax", "label"] + (["split"] if split else []))
            writer.writerows(rows)
        return root / "boxes.csv"
    raise ValueError(fmt)


def truth(name: str, negatives: int = 0, size: tuple[int, int] = SIZE, n_classes: int = 3):
    """The objects drawn into fixture image ``img_{i:03d}``."""
    i = int(name.split("_")[1])
    return [] if i < negatives else scene(i, size, n_classes)


def needs_bccd():
    return pytest.mark.skipif(not (BCCD / "Annotations").is_dir(), reason=f"real BCCD data not found at {BCCD}")
