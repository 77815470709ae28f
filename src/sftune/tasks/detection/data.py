"""Find images and their boxes for object detection, in four annotation formats.

Formats, detected from the layout (one log line says which; ``format=`` forces one):

* ``voc`` — Pascal VOC: ``Annotations/*.xml`` + ``JPEGImages/`` (or ``images/``), or the
  ``.xml`` files beside their images in one folder (LabelImg's default). Splits from
  ``ImageSets/Main/train.txt`` + ``val.txt`` when both exist (``trainval.txt`` alone: a
  random split of it; ``test.txt`` is never used for training). An image is found by the
  XML file's name (``x.xml`` -> ``x.<ext>``), else by its ``<filename>``.
* ``coco`` — COCO JSON: ``annotations/instances_*.json`` (or ``instances_*.json``, or any
  ``*.json`` holding ``images`` + ``annotations``; Roboflow's ``train/_annotations.coco.json``
  + ``valid/...``; or the ``.json`` file itself). A file named ``*train*`` is the training
  set, ``*val*`` the validation set, ``*test*`` is not used. ``file_name`` resolves against
  the folder named like the file (``instances_train2017.json`` -> ``train2017/``), ``images/``,
  the data folder, or the JSON's folder. ``bbox`` is ``[x, y, width, height]`` and becomes
  ``xyxy``. Category ids may be any integers (3, 7, 42): the classes are the categories in
  ascending id order, index i <-> :attr:`LabeledBoxes.category_ids` [i] (stored in the bundle, so
  predictions can be written back with the original ids). Images without annotations are
  negatives. A category that has no box and is the ``supercategory`` of others (Roboflow
  exports one) is left out.
* ``yolo`` — YOLO txt: ``images/`` + ``labels/`` (flat, or ``images/train`` + ``labels/train``,
  ``images/val`` + ``labels/val``), or ``train/images`` + ``train/labels`` + ``valid/...``
  (Roboflow, Ultralytics). ``labels/x.txt`` holds ``cls cx cy w h`` per line, normalised to
  the image's displayed width and height (a polygon line ``cls x1 y1 x2 y2 ...`` becomes
  its bounding box, as Ultralytics reads it). Class names from ``data.yaml`` (``names:`` as a
  list or an ``{index: name}`` mapping) or ``classes.txt`` (root or labels folder), else
  ``class_0..``. An empty label file is an image without objects; a missing one too, with
  a warning (Ultralytics reads both so).
* ``csv`` — one row per box, ``path,xmin,ymin,xmax,ymax,label`` (``image``/``filename`` and
  ``class`` are accepted as the column names; optional ``split`` (train/val/test),
  ``width``/``height`` columns). A row with empty box fields is an image without boxes.
  Relative paths resolve against the CSV's folder and must stay inside it unless
  ``allow_outside_root``.

Coordinates (every format ends as ``xyxy`` float pixels, ``0 <= x0 < x1 <= W``):

* VOC corners are read as written, as continuous pixel coordinates. The VOC devkit counted
  pixels from 1 and detectron2 subtracts 1 from xmin/ymin; the tools that write VOC today
  (LabelImg, CVAT/Datumaro, Roboflow) write 0-based continuous coordinates (LabelImg clamps
  0 to 1), so reading them as is is right for the files people have. A corner equal to its
  opposite (xmin == xmax: a click, not a drag) is a zero-width box.
* A box more than 1 px outside the image is clipped to it with a warning; less (rounding,
  ``xmax == width + 1`` from 1-based tools) is clipped silently. A box with nothing left
  inside the image is dropped.

EXIF orientation (photos from phones): boxes refer to the image *as displayed*, with the
EXIF orientation applied — what :func:`~sftune.data.images.load_rgb` gives the model, and
what the labelling tools show the annotator: browsers (CVAT, Label Studio, Roboflow's
editor) draw images upright from the EXIF tag, CVAT and Roboflow's "auto-orient" bake the
rotation into the exported pixels, and Ultralytics YOLO reads images and sizes upright
(``exif_size``). The one detectable exception: an annotation that records the image's size
(VOC ``<size>``, COCO ``width``/``height``, CSV ``width``/``height``) equal to the *stored*
size of an image whose orientation turns it by 90 degrees (EXIF 5-8) was drawn on the stored
pixels (a tool that ignores EXIF): its boxes are turned with the image onto the displayed
pixels, with a warning. Flips and 180-degree turns (2-4) keep the size, so nothing tells;
their boxes are taken as displayed.

Faults, each kind counted in one log line naming its first files, listed in ``skipped``
(something left out) or ``warnings`` (kept), and the first one fatal with ``strict``
(one-line SftuneError saying "drop --strict to ..."):
degenerate boxes (zero/negative width or height: dropped), boxes outside the image
(clipped, or dropped when nothing is left), duplicate boxes (same class, IoU > 0.95:
the repeat is dropped), annotations whose image is missing (skipped), images whose
annotation is missing (VOC/YOLO: kept as images without objects), class names that
differ only by case or whitespace (merged by the one class-name rule of
:mod:`sftune.data.labels`), unknown classes (box dropped), unreadable annotation files and
images (skipped), boxes drawn on an EXIF-rotated image's stored pixels (turned), a recorded
image size that differs from the file (kept as is), and the same image content in train
and val (leakage).

VOC ``<difficult>1</difficult>`` objects are kept and flagged (``BoxTarget.difficult``): they
train (detectron2 keeps them too: they do not hurt) and the metrics leave them out of mAP,
as the VOC protocol does (a detection matching one is neither a hit nor a false alarm).
This is a property of VOC data, not a fault: a log line counts them.

Class indices: ``BoxTarget.labels`` are 0..C-1, index into :attr:`LabeledBoxes.classes`;
there is no background index here. torchvision's detectors reserve 0 for background and
take labels 1..C: the model layer adds 1 going in and subtracts 1 coming out.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import yaml

from ...data.checks import keep_copies_together, leakage_warnings
from ...data.images import ImageScan, is_image_file, scan_image
from ...data.labels import align_to_classes, class_key, class_name, merge_variants, variant_warnings
from ...data.sources import VAL_DIR_NAMES, Sample, _fingerprint, _inside, _walk_files
from ...data.tables import file_delimiter, manifest_path, missing_paths_hint
from ...errors import SftuneError

FORMATS = ("voc", "coco", "yolo", "csv")
FORMAT_NAMES = {"voc": "Pascal VOC", "coco": "COCO JSON", "yolo": "YOLO txt", "csv": "CSV"}
DUPLICATE_IOU = 0.95  # same class and IoU above this: the same object annotated twice
CLIP_TOLERANCE = 1.0  # px outside the image that are clipped without a warning (rounding, 1-based tools)
SHOWN_FILES = 3  # files named on each fault kind's log line; every fault is in skipped/warnings
TEST_NAMES = ("test", "testing")
LAYOUT_HELP = ("Pascal VOC (Annotations/*.xml + JPEGImages/), COCO JSON (annotations/instances_*.json + images), "
               "YOLO (images/ + labels/ with data.yaml or classes.txt), or a CSV with path,xmin,ymin,xmax,ymax,label")
_CSV_PATH = ("path", "image", "filename", "file", "image_path", "file_name")
_CSV_LABEL = ("label", "class", "category", "name", "class_name")
_CSV_BOX = ("xmin", "ymin", "xmax", "ymax")


# ----------------------------------------------------------------------------- results


@dataclass
class BoxTarget:
    """The objects of one image. ``boxes``: (N, 4) float32 ``x0, y0, x1, y1`` in pixels of the
    image *as displayed* (EXIF orientation applied, as ``load_rgb`` reads it); ``labels``:
    (N,) int64 class indices 0..C-1 (no background index: torchvision detectors take 1..C and
    the model layer adds 1); ``difficult``: (N,) bool, VOC difficult objects (trained on, left
    out of mAP); ``iscrowd``: (N,) bool, COCO crowd regions (not trained on, ignored by mAP)."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    iscrowd: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        self.difficult = (np.zeros(n, bool) if self.difficult is None
                          else np.asarray(self.difficult, dtype=bool).reshape(-1))
        self.iscrowd = np.zeros(n, bool) if self.iscrowd is None else np.asarray(self.iscrowd, dtype=bool).reshape(-1)
        if not (len(self.labels) == len(self.difficult) == len(self.iscrowd) == n):
            raise ValueError(f"BoxTarget: {n} boxes but {len(self.labels)} labels, {len(self.difficult)} difficult "
                             f"flags, {len(self.iscrowd)} iscrowd flags")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "BoxTarget":
        """An image without objects (a negative)."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool))

    def digest(self) -> str:
        """sha256 of the boxes (rounded to 1/100 px), labels and flags: part of the data fingerprint."""
        h = hashlib.sha256()
        h.update(np.round(self.boxes.astype(np.float64), 2).tobytes())
        for a in (self.labels, self.difficult.astype(np.uint8), self.iscrowd.astype(np.uint8)):
            h.update(a.tobytes())
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class BoxSample:
    """One image and its objects; ``target`` is None for an unlabeled image (prediction).

    Compared and hashed by identity (the arrays make value equality ill-defined); picklable
    for DataLoader workers."""

    image: Path
    target: BoxTarget | None = None


@dataclass
class BoxStats:
    """What the boxes look like, for anchor design and the report.

    ``widths``/``heights``/``labels``: every training box (crowd boxes aside) in pixels of the
    displayed image *before* any resize: a detector that resizes (torchvision's
    GeneralizedRCNNTransform: shorter side -> ``min_size``, longer at most ``max_size``) sees
    them scaled by its factor for each box's image, whose (height, width) ``image_sizes`` holds."""

    class_boxes: dict[str, list[int]]  # {"train": [boxes of class i], "val": [...]}
    negatives: dict[str, int]  # images without boxes, per side
    difficult: dict[str, int]  # VOC difficult boxes, per side
    crowd: dict[str, int]  # COCO crowd boxes, per side
    widths: np.ndarray  # float32, train boxes
    heights: np.ndarray
    labels: np.ndarray  # int64 class of each of those boxes
    image_sizes: np.ndarray  # (N, 2) int64 (height, width) of the image each of those boxes is in

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts and size quantiles (px) of the training boxes."""
        out: dict[str, Any] = {"class_boxes": self.class_boxes, "negatives": self.negatives,
                               "difficult": self.difficult, "crowd": self.crowd}
        if len(self.widths):
            qs = (0.05, 0.25, 0.5, 0.75, 0.95)
            out["width_px"] = {f"q{int(q * 100)}": round(float(np.quantile(self.widths, q)), 1) for q in qs}
            out["height_px"] = {f"q{int(q * 100)}": round(float(np.quantile(self.heights, q)), 1) for q in qs}
            ratio = self.heights / np.maximum(self.widths, 1e-6)
            out["aspect_h_over_w"] = {f"q{int(q * 100)}": round(float(np.quantile(ratio, q)), 2) for q in qs}
        return out


@dataclass
class LabeledBoxes:
    """Train/val images with their boxes, plus what was learned while reading them."""

    train: list[BoxSample]
    val: list[BoxSample]
    classes: list[str]
    format: str  # one of FORMATS
    # COCO: the original category id of each class (index i -> category_ids[i]; None where a class
    # given by the caller has no category in the file); None for the other formats.
    category_ids: list[int | None] | None = None
    split: dict = field(default_factory=dict)  # how val was obtained (recorded in the bundle)
    fingerprint: str = ""  # sha256 over (target, image content) of every image + the class list and format
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): an image or a box left out
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, problem): kept, possibly changed
    digests: dict[Path, str] = field(default_factory=dict)  # content sha256 of every image
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)  # image (height, width) as displayed
    box_stats: BoxStats | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------- faults


@dataclass
class _Fault:
    where: str  # a file (and line), or "image + annotation"
    reason: str
    kind: str  # counted by kind in the log
    skip: bool  # True: an image or box is left out; False: kept (perhaps changed), a warning


# What one log line says about each kind (the reasons name the details).
_KIND_NOTE = {
    "degenerate box": "zero or negative width/height, dropped",
    "box outside the image": "nothing left inside the image, dropped",
    "clipped box": "reaching outside the image, clipped to it",
    "duplicate box": f"same class and IoU > {DUPLICATE_IOU}, the repeat dropped",
    "missing image": "annotation whose image is missing, skipped",
    "missing annotation": "image without an annotation file, kept as an image without objects",
    "class name variants": "merged into one class",
    "unknown class": "box dropped",
    "bad annotation": "unreadable annotation, skipped",
    "unreadable image": "skipped",
    "EXIF orientation": "boxes drawn on the stored pixels, turned onto the displayed image",
    "size mismatch": "recorded image size differs from the file, boxes kept as written",
    "listed twice": "later entry skipped",
    "train/val leakage": "same image content in train and val",
}


# ----------------------------------------------------------------------------- raw annotations


@dataclass
class _Obj:
    name: str | None  # class name as written (through class_name); None: YOLO index not yet named
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in annotation pixels (YOLO: normalised)
    where: str  # file (and line) for messages
    difficult: bool = False
    iscrowd: bool = False
    index: int | None = None  # YOLO class index


@dataclass
class _Record:
    image: Path
    objects: list[_Obj]
    where: str  # the annotation file, for messages
    split: str | None = None  # "train" / "val" / None (not given)
    size: tuple[int, int] | None = None  # (width, height) recorded by the annotation
    normalised: bool = False  # YOLO: boxes are fractions of the displayed size


@dataclass
class _Source:
    records: list[_Record]
    faults: list[_Fault]
    format: str
    description: str  # the one log line's layout part
    given_split: bool
    declared: list[str] | None = None  # class names the files declare, in index order (COCO, YOLO, classes.txt)
    declared_source: str = ""
    category_ids: list[list[int]] | None = None  # COCO: ids of each declared name
    notes: list[str] = field(default_factory=list)  # extra log lines


# ----------------------------------------------------------------------------- layout detection


def _xml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and not p.name.startswith("."))


def _has(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and next(folder.glob(pattern), None) is not None


def _looks_coco(path: Path) -> bool:
    """A JSON file that starts like COCO (an ``images`` list and ``annotations``), from its first 1 MB."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return False
    if b'"images"' not in head:
        return False
    # A long images list can push "annotations"/"categories" past the first 1 MB; its entries name files.
    return b'"annotations"' in head or b'"categories"' in head or (len(head) == 1 << 20 and b'"file_name"' in head)


def _coco_files(root: Path) -> list[Path]:
    """COCO JSON files of a folder layout, train before val (test files included; the reader drops them)."""
    for folder in (root / "annotations", root):
        if folder.is_dir():
            named = sorted(folder.glob("instances_*.json"))
            if named:
                return named
    found = [p for p in sorted((root / "annotations").glob("*.json")) if _looks_coco(p)] \
        if (root / "annotations").is_dir() else []
    if found:
        return found
    # Roboflow: train/_annotations.coco.json, valid/..., test/...
    split_files = []
    for name in ("train", *VAL_DIR_NAMES):
        folder = root / name
        if folder.is_dir():
            split_files += [p for p in sorted(folder.glob("*.json")) if _looks_coco(p)]
    if split_files:
        return split_files
    return [p for p in sorted(root.glob("*.json")) if _looks_coco(p)] if root.is_dir() else []


def _yolo_dirs(root: Path) -> list[tuple[str | None, Path, Path]]:
    """``[(split, images dir, labels dir)]`` of a YOLO layout (split None: not given), or []."""
    out: list[tuple[str | None, Path, Path]] = []
    images, labels = root / "images", root / "labels"
    if images.is_dir() and labels.is_dir():
        if (images / "train").is_dir():
            out.append(("train", images / "train", labels / "train"))
            for name in VAL_DIR_NAMES:
                if (images / name).is_dir():
                    out.append(("val", images / name, labels / name))
                    break
            return out
        return [(None, images, labels)]
    if (root / "train" / "images").is_dir() and (root / "train" / "labels").is_dir():
        out.append(("train", root / "train" / "images", root / "train" / "labels"))
        for name in VAL_DIR_NAMES:
            if (root / name / "images").is_dir():
                out.append(("val", root / name / "images", root / name / "labels"))
                break
    return out


def _csv_header(path: Path) -> set[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return set()
    return {h.strip().lower() for h in next(csv.reader([first], delimiter=file_delimiter(path)), [])}


def _is_box_csv(path: Path) -> bool:
    header = _csv_header(path)
    return set(_CSV_BOX) <= header and bool(header & set(_CSV_PATH)) and bool(header & set(_CSV_LABEL))


def _detect_format(root: Path) -> str | None:
    """The format of ``root`` from its layout alone (no annotation parsed), or None."""
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix in (".csv", ".tsv"):
            return "csv" if _is_box_csv(root) else None
        if suffix == ".json":
            return "coco" if _looks_coco(root) else None
        if suffix in (".yaml", ".yml"):
            return "yolo" if _yolo_dirs(root.parent) else None
        return None
    if not root.is_dir():
        return None
    if _has(root / "Annotations", "*.xml"):
        return "voc"
    yolo = _yolo_dirs(root)
    if yolo and any(_has(lab, "**/*.txt") for _, _, lab in yolo):
        return "yolo"
    if _coco_files(root):
        return "coco"
    # images/ + labels/ without a .txt is not claimed: some segmentation sets keep PNG masks in labels/.
    if _has(root, "*.xml") and any(is_image_file(p) for p in root.iterdir()):
        return "voc"  # LabelImg's default: x.xml beside x.jpg
    csvs = [p for p in sorted(root.glob("*.csv")) + sorted(root.glob("*.tsv")) if _is_box_csv(p)]
    if len(csvs) == 1:
        return "csv"
    return None


def is_detection_data(path: str | Path) -> bool:
    """A cheap look at the layout (no image opened, no annotation parsed): picks the task automatically.

    ``images/`` + ``labels/`` is YOLO, ``images/`` + ``masks/`` is segmentation (not claimed);
    VOC needs ``Annotations/`` holding ``.xml`` files."""
    try:
        return _detect_format(Path(path).expanduser()) is not None
    except OSError:
        return False


# ----------------------------------------------------------------------------- readers


def _number(text: str | None) -> float:
    if text is None:
        raise ValueError("missing")
    value = float(text.strip())
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()} is not a finite number")
    return value


def _split_of(name: str) -> str | None:
    """'train' / 'val' / 'test' from a file or folder name (instances_val2017 -> val), else None."""
    low = name.lower()
    if "train" in low:
        return "train"
    if any(v in low for v in ("val", "valid")):
        return "val"
    if "test" in low:
        return "test"
    return None


def _find_images(folder: Path) -> dict[str, list[Path]]:
    """Images under ``folder`` by their path below it without the extension."""
    out: dict[str, list[Path]] = defaultdict(list)
    if folder.is_dir():
        for p in _walk_files(folder):
            if is_image_file(p):
                out[p.relative_to(folder).with_suffix("").as_posix()].append(p)
    return out


def _read_voc(root: Path) -> _Source:
    if (root / "Annotations").is_dir():
        ann_dir = root / "Annotations"
        image_dir = next((d for d in (root / "JPEGImages", root / "images") if d.is_dir()), root / "JPEGImages")
        where_images = f"{image_dir.name}/"
        layout = f"Annotations/*.xml + {where_images}"
    else:
        ann_dir = image_dir = root
        layout = ".xml files beside their images"
    if image_dir == root:  # only the folder itself: .xml and images side by side
        images: dict[str, list[Path]] = defaultdict(list)
        for p in sorted(root.iterdir()):
            if p.is_file() and is_image_file(p):
                images[p.stem].append(p)
    else:
        images = _find_images(image_dir)
    xmls = {p.stem: p for p in _xml_files(ann_dir)}
    faults: list[_Fault] = []
    sets = root / "ImageSets" / "Main"
    ids_by_split: dict[str, list[str]] = {}
    given = False
    notes: list[str] = []
    if (sets / "train.txt").is_file() and (sets / "val.txt").is_file():
        for split in ("train", "val"):
            ids_by_split[split] = _read_ids(sets / f"{split}.txt")
        given = True
        unused = [n for n in ("test.txt", "trainval.txt") if (sets / n).is_file()]
        layout += ", ImageSets/Main train.txt/val.txt" + (f" ({' and '.join(unused)} not used)" if unused else "")
    elif (sets / "trainval.txt").is_file():
        ids_by_split[""] = _read_ids(sets / "trainval.txt")
        layout += ", ImageSets/Main/trainval.txt"
    else:
        listed = sorted(set(xmls) | {k for k in images if "/" not in k})
        ids_by_split[""] = listed
    records: list[_Record] = []
    for split, ids in ids_by_split.items():
        for image_id in ids:
            xml = xmls.get(image_id)
            if xml is None:
                candidates = images.get(image_id, [])
                if candidates:
                    records.append(_Record(candidates[0], [], str(candidates[0]), split or None))
                    faults.append(_Fault(str(candidates[0]), f"no annotation (expected {ann_dir / image_id}.xml); "
                                                             f"read as an image without objects", "missing annotation",
                                         False))
                else:
                    faults.append(_Fault(str(sets / f"{split or 'trainval'}.txt"),
                                         f"'{image_id}' is listed but has neither {ann_dir.name}/{image_id}.xml nor an "
                                         f"image", "missing image", True))
                continue
            record = _parse_voc_xml(xml, image_id, images, image_dir, faults)
            if record is not None:
                record.split = split or None
                records.append(record)
    return _Source(records, faults, "voc", layout, given, notes=notes)


def _read_ids(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if parts and not (len(parts) == 2 and parts[1] == "-1"):  # class files: "id -1" = absent
            out.append(parts[0])
    return list(dict.fromkeys(out))


def _parse_voc_xml(xml: Path, image_id: str, images: dict[str, list[Path]], image_dir: Path,
                   faults: list[_Fault]) -> _Record | None:
    try:
        tree = ET.parse(xml).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as e:
        faults.append(_Fault(str(xml), f"not a readable VOC XML file ({type(e).__name__}: {str(e)[:80]}); its image "
                                       f"is skipped", "bad annotation", True))
        return None
    if tree.tag != "annotation":
        faults.append(_Fault(str(xml), f"root element is <{tree.tag}>, not a VOC <annotation>; skipped",
                             "bad annotation", True))
        return None
    candidates = images.get(image_id, [])
    filename = (tree.findtext("filename") or "").strip()
    if len(candidates) > 1 and filename:
        candidates = [p for p in candidates if p.name == filename] or candidates
    image = candidates[0] if candidates else None
    if image is None and filename and (image_dir / filename).is_file():
        image = image_dir / filename
    if image is None:
        faults.append(_Fault(str(xml), f"its image is missing (no {image_dir}/{image_id}.<ext>"
                                       + (f" nor {image_dir / filename}" if filename else "") + ")",
                             "missing image", True))
        return None
    size = None
    try:
        w, h = int(float(tree.findtext("size/width") or 0)), int(float(tree.findtext("size/height") or 0))
        size = (w, h) if w > 0 and h > 0 else None
    except ValueError:
        pass
    objects = []
    for k, obj in enumerate(tree.iter("object"), start=1):
        where = f"{xml} (object {k})"
        name = class_name(obj.findtext("name"))
        if name is None:
            faults.append(_Fault(where, "object without a <name>; dropped", "bad annotation", True))
            continue
        try:
            box = tuple(_number(obj.findtext(f"bndbox/{c}")) for c in _CSV_BOX)
        except ValueError as e:
            faults.append(_Fault(where, f"'{name}' has no readable <bndbox> ({e}); dropped", "bad annotation", True))
            continue
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
        objects.append(_Obj(name, box, where, difficult=difficult))  # type: ignore[arg-type]
    return _Record(image, objects, str(xml), size=size)


def _read_coco(root: Path) -> _Source:
    files = [root] if root.is_file() else _coco_files(root)
    base = root.parent if root.is_file() else root
    if not files:
        raise SftuneError(f"no COCO JSON file under '{root}' (expected annotations/instances_*.json)")
    splits = {f: _split_of(f.stem if f.stem not in ("_annotations.coco", "annotations") else f.parent.name)
              for f in files}
    if len(files) > 1 and not any(s in ("train", "val") for s in splits.values()):
        raise SftuneError(f"several COCO files under '{root}' ({', '.join(f.name for f in files[:4])}) and none is "
                          f"named for a split; name them instances_train*.json / instances_val*.json or pass one file")
    notes: list[str] = []
    test_files = [f for f in files if splits[f] == "test"]
    files = [f for f in files if splits[f] != "test"]
    if not files:
        raise SftuneError(f"only test annotation files under '{root}' ({', '.join(f.name for f in test_files)}); "
                          f"a training set is needed")
    given = len(files) > 1 or (len(files) == 1 and splits[files[0]] == "val")
    faults: list[_Fault] = []
    categories: dict[int, tuple[str, str | None]] = {}  # id -> (name, supercategory)
    used_ids: Counter = Counter()
    records: list[_Record] = []
    per_file_objects: list[tuple[Path, list[tuple[_Record, list[tuple[int, _Obj]]]]]] = []
    for f in files:
        try:
            spec = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, OSError) as e:
            raise SftuneError(f"COCO file '{f}' is not readable JSON ({type(e).__name__}: {str(e)[:80]}); fix it") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("images"), list):
            raise SftuneError(f"COCO file '{f}' has no 'images' list; is it a COCO instances file?")
        for c in spec.get("categories") or []:
            try:
                cid, cname = int(c["id"]), class_name(c["name"])
            except (KeyError, TypeError, ValueError):
                raise SftuneError(f"COCO file '{f}': category {c!r} needs an integer 'id' and a 'name'") from None
            if cname is None:
                raise SftuneError(f"COCO file '{f}': category {cid} has an empty name")
            if cid in categories and categories[cid][0] != cname:
                raise SftuneError(f"COCO files disagree on category {cid}: '{categories[cid][0]}' and '{cname}' "
                                  f"({f}); use one category list")
            categories[cid] = (cname, class_name(c.get("supercategory")))
        folders = _coco_image_folders(f, base)
        by_id: dict[Any, _Record] = {}
        seen_names: dict[str, Any] = {}
        split = splits[f] if splits[f] in ("train", "val") else None
        entries: list[tuple[_Record, list[tuple[int, _Obj]]]] = []
        objs_of: dict[Any, list[tuple[int, _Obj]]] = {}
        for im in spec["images"]:
            if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
                faults.append(_Fault(str(f), f"image entry {str(im)[:60]} has no id or file_name; skipped",
                                     "bad annotation", True))
                continue
            name = str(im["file_name"])
            if name in seen_names:
                faults.append(_Fault(f"{f} (image id {im['id']})", f"'{name}' is listed twice (ids {seen_names[name]} and "
                                                                   f"{im['id']}); the second entry and its boxes skipped",
                                     "listed twice", True))
                continue
            seen_names[name] = im["id"]
            path = next((p for d in folders if (p := manifest_path(name, d)).is_file()), None)  # Windows '\' separators too
            if path is None:
                by_id[im["id"]] = None  # type: ignore[assignment]
                faults.append(_Fault(f"{f} (image id {im['id']})", f"its image '{name}' is missing (looked in "
                                     f"{', '.join(str(d) for d in folders[:3])})", "missing image", True))
                continue
            size = None
            try:
                w, h = int(im.get("width") or 0), int(im.get("height") or 0)
                size = (w, h) if w > 0 and h > 0 else None
            except (TypeError, ValueError):
                pass
            record = _Record(path, [], str(f), split, size)
            by_id[im["id"]] = record
            objs_of[im["id"]] = []
            entries.append((record, objs_of[im["id"]]))
        for k, a in enumerate(spec.get("annotations") or []):
            where = f"{f} (annotation {a.get('id', k) if isinstance(a, dict) else k})"
            if not isinstance(a, dict):
                faults.append(_Fault(where, "not an object; skipped", "bad annotation", True))
                continue
            image_id = a.get("image_id")
            if image_id not in by_id:
                faults.append(_Fault(where, f"for image id {image_id}, which is not in 'images'; skipped",
                                     "missing image", True))
                continue
            if by_id[image_id] is None:
                continue  # the image is missing: counted once, above
            bbox = a.get("bbox")
            try:
                x, y, w, h = (_number(str(v)) for v in bbox)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                faults.append(_Fault(where, f"bbox {bbox!r} is not [x, y, width, height]; dropped", "bad annotation",
                                     True))
                continue
            try:
                cid = int(a.get("category_id"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                cid = -1
            obj = _Obj(None, (x, y, x + w, y + h), where, iscrowd=bool(a.get("iscrowd", 0)))
            objs_of[image_id].append((cid, obj))
            used_ids[cid] += 1
        per_file_objects.append((f, entries))
    # Categories: ascending id. Roboflow adds a supercategory as a category of its own (id 0) that
    # no box uses: it is not a class.
    supers = {sup for _, sup in categories.values() if sup}
    dropped = sorted(cid for cid, (name, _) in categories.items()
                     if used_ids[cid] == 0 and name in supers and any(n != name for n, _ in categories.values()))
    for cid in dropped:
        notes.append(f"COCO category {cid} '{categories[cid][0]}' has no box and is the supercategory of others: "
                     f"not a class")
        del categories[cid]
    ids = sorted(categories)
    declared = [categories[i][0] for i in ids]
    for f, entries in per_file_objects:
        for record, objs in entries:
            for cid, obj in objs:
                if cid not in categories:
                    faults.append(_Fault(obj.where, f"category_id {cid} is not in 'categories' "
                                                    f"({', '.join(map(str, ids[:8]))}); dropped", "unknown class", True))
                    continue
                obj.name = categories[cid][0]
                record.objects.append(obj)
            records.append(record)
    desc = ", ".join(_relative(f, base) for f in files)
    desc += f" ({', '.join(f.name for f in test_files)} not used)" if test_files else ""
    # Ids of each declared name: by name so that merged spellings collect every id.
    cat_ids: list[list[int]] = [[i] for i in ids]
    return _Source(records, faults, "coco", desc, given, declared, "COCO categories (ascending id)", cat_ids, notes)


def _coco_image_folders(f: Path, base: Path) -> list[Path]:
    stem = f.stem
    name = stem[len("instances_"):] if stem.startswith("instances_") else stem
    candidates = [base / name, base / "images" / name, base / "images", f.parent, base, f.parent / "images"]
    if f.parent.name == "annotations":
        candidates.insert(0, f.parent.parent / name)
    return list(dict.fromkeys(c for c in candidates if c.is_dir()))


def _yolo_names(root: Path, label_dirs: list[Path]) -> tuple[list[str] | None, str]:
    for yaml_path in [root / "data.yaml", root / "dataset.yaml", *sorted(root.glob("*.yaml")), *sorted(root.glob("*.yml"))]:
        if not yaml_path.is_file():
            continue
        try:
            spec = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise SftuneError(f"'{yaml_path}' is not readable YAML ({str(e)[:100]}); fix it") from None
        if not isinstance(spec, dict) or "names" not in spec:
            continue
        names = spec["names"]
        if isinstance(names, dict):
            try:
                table = {int(k): v for k, v in names.items()}
            except (TypeError, ValueError):
                raise SftuneError(f"'{yaml_path}': names keys must be class indices 0, 1, ...") from None
            if sorted(table) != list(range(len(table))):
                raise SftuneError(f"'{yaml_path}': names must cover indices 0..{len(table) - 1} "
                                  f"(found {', '.join(map(str, sorted(table)[:8]))})")
            names = [table[i] for i in range(len(table))]
        if not isinstance(names, list):
            raise SftuneError(f"'{yaml_path}': names must be a list or an {{index: name}} mapping")
        out = [class_name(n) for n in names]
        if any(n is None for n in out):
            raise SftuneError(f"'{yaml_path}': class {out.index(None)} has an empty name")
        nc = spec.get("nc")
        if nc is not None and int(nc) != len(out):
            raise SftuneError(f"'{yaml_path}': nc is {nc} but names lists {len(out)} classes; make them agree")
        return out, str(yaml_path)  # type: ignore[return-value]
    for folder in [root, *label_dirs, *(d.parent for d in label_dirs)]:
        path = folder / "classes.txt"
        if path.is_file():
            names = [class_name(line) for line in path.read_text(encoding="utf-8").splitlines()]
            return [n for n in names if n is not None], str(path)
    return None, ""


def _read_yolo(root: Path, given_classes: list[str] | None = None) -> _Source:
    base = root.parent if root.is_file() else root
    dirs = _yolo_dirs(base)
    if not dirs:
        raise SftuneError(f"'{root}' is not a YOLO layout: expected images/ + labels/ (or images/train + labels/train, "
                          f"or train/images + train/labels)")
    names, names_source = _yolo_names(base, [lab for _, _, lab in dirs])
    faults: list[_Fault] = []
    records: list[_Record] = []
    for split, image_dir, label_dir in dirs:
        images = _find_images(image_dir)
        labels = {}
        if label_dir.is_dir():
            for p in _walk_files(label_dir):
                if p.suffix.lower() == ".txt" and p.name != "classes.txt":
                    labels[p.relative_to(label_dir).with_suffix("").as_posix()] = p
        for key in sorted(set(images) | set(labels)):
            imgs, txt = images.get(key, []), labels.get(key)
            if not imgs:
                faults.append(_Fault(str(txt), f"label file without an image (expected {image_dir}/{key}.<ext>); "
                                               f"skipped", "missing image", True))
                continue
            image = imgs[0]
            if len(imgs) > 1:
                faults.append(_Fault(", ".join(map(str, imgs)), "images with the same name but different extensions "
                                                                f"share {txt or key + '.txt'}; keep one", "listed twice",
                                     True))
                continue
            if txt is None:
                records.append(_Record(image, [], str(image), split, normalised=True))
                faults.append(_Fault(str(image), f"no label file (expected {label_dir}/{key}.txt); read as an image "
                                                 f"without objects", "missing annotation", False))
                continue
            objects = _parse_yolo_txt(txt, faults)
            if objects is not None:
                records.append(_Record(image, objects, str(txt), split, normalised=True))
    seen = {o.index for r in records for o in r.objects}
    notes: list[str] = []
    if names is None and given_classes:
        names, names_source = list(given_classes), "the classes argument (YOLO class i = class i of the list)"
    if names is None:
        n = max(seen) + 1 if seen else 0
        names = [f"class_{i}" for i in range(n)]
        names_source = "YOLO class indices (no data.yaml or classes.txt)"
    for r in records:
        kept = []
        for o in r.objects:
            if o.index is not None and 0 <= o.index < len(names):
                o.name = names[o.index]
                kept.append(o)
            else:
                faults.append(_Fault(o.where, f"class index {o.index} is not one of the {len(names)} classes "
                                              f"({names_source}); dropped", "unknown class", True))
        r.objects = kept
    given = any(split == "val" for split, _, _ in dirs)
    test_dirs = [d for d in (base / "images" / "test", base / "test" / "images") if d.is_dir()]
    if test_dirs:  # said, not silently dropped
        notes.append(f"{_relative(test_dirs[0], base)}/ is not used (test images; pass them to sftune eval)")
    layout = " + ".join(sorted({f"{_relative(i, base)}/ + {_relative(lab, base)}/" for _, i, lab in dirs}))
    return _Source(records, faults, "yolo", layout, given, names, names_source, notes=notes)


def _parse_yolo_txt(path: Path, faults: list[_Fault]) -> list[_Obj] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        faults.append(_Fault(str(path), f"label file not readable ({type(e).__name__}); its image is skipped",
                             "bad annotation", True))
        return None
    objects = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path} line {line_no}"
        try:
            index_value = float(parts[0])
            if not index_value.is_integer():
                raise ValueError(f"class {parts[0]} is not a whole number")
            values = [_number(v) for v in parts[1:]]
            if len(values) == 4:
                cx, cy, w, h = values
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            elif len(values) >= 6 and len(values) % 2 == 0:  # a polygon (YOLO segmentation labels): its box
                xs, ys = values[0::2], values[1::2]
                box = (min(xs), min(ys), max(xs), max(ys))
            else:
                raise ValueError(f"{len(parts)} values; expected 'class cx cy w h'")
        except ValueError as e:
            faults.append(_Fault(where, f"'{line.strip()[:40]}' is not a box ({e}); dropped", "bad annotation", True))
            continue
        objects.append(_Obj(None, box, where, index=int(index_value)))
    return objects


def _read_csv(path: Path, allow_outside_root: bool) -> _Source:
    if path.is_dir():
        found = [p for p in sorted(path.glob("*.csv")) + sorted(path.glob("*.tsv")) if _is_box_csv(p)]
        if len(found) != 1:
            raise SftuneError(f"'{path}': expected one CSV with path,xmin,ymin,xmax,ymax,label columns, found "
                              f"{len(found)}; pass the CSV file itself")
        path = found[0]
    delimiter = file_delimiter(path)  # a ';'-separated .csv is read as such
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise SftuneError(f"'{path}' is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise SftuneError(f"'{path}' is not a readable CSV file ({e}); save it as plain UTF-8 text") from None
    path_col = next((c for c in _CSV_PATH if c in header), None)
    label_col = next((c for c in _CSV_LABEL if c in header), None)
    missing = [c for c in _CSV_BOX if c not in header] + ([] if path_col else ["path"]) + ([] if label_col else ["label"])
    if missing:
        raise SftuneError(f"'{path}' has no {', '.join(missing)} column (columns: {', '.join(header) or 'none'}); the "
                          f"first line must name path,xmin,ymin,xmax,ymax,label")
    assert path_col is not None and label_col is not None
    root = path.parent.resolve()
    has_split = "split" in header
    faults: list[_Fault] = []
    by_image: dict[Path, _Record] = {}
    missing_images: set[Path] = set()
    n_test = 0
    for line_no, row in enumerate(rows, start=2):
        if None in row:
            raise SftuneError(f"'{path}' line {line_no}: more fields than the header names; quote values that "
                              f"contain '{delimiter}'")
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        where = f"{path} line {line_no}"
        if not row[path_col]:
            raise SftuneError(f"'{path}' line {line_no}: empty {path_col}; every row needs an image")
        file = manifest_path(row[path_col], path.parent)  # Windows '\' separators too
        if not allow_outside_root and not _inside(file, root):
            raise SftuneError(f"'{path}' line {line_no}: '{row[path_col]}' points outside the CSV's folder {root}; "
                              f"move the CSV up to a folder that holds the data, or allow it with "
                              f"--set data.allow_outside_root=true")
        split = row.get("split", "").lower() if has_split else ""
        if split in TEST_NAMES:
            n_test += 1
            continue
        if split not in ("", "train", *VAL_DIR_NAMES):
            raise SftuneError(f"'{path}' line {line_no}: split '{split}' must be train, val or test")
        split_name = "val" if split in VAL_DIR_NAMES else ("train" if split else None)
        if file in missing_images:
            continue
        record = by_image.get(file)
        if record is None:
            if not file.is_file():
                missing_images.add(file)
                faults.append(_Fault(where, f"its image '{row[path_col]}' is missing; its rows are skipped",
                                     "missing image", True))
                continue
            size = None
            try:
                w, h = int(float(row.get("width") or 0)), int(float(row.get("height") or 0))
                size = (w, h) if w > 0 and h > 0 else None
            except ValueError:
                pass
            record = by_image[file] = _Record(file, [], str(path), split_name, size)
        elif has_split and record.split != split_name:
            faults.append(_Fault(where, f"split '{split or 'none'}' but an earlier row of this image says "
                                        f"'{record.split}'; the first row's split is used", "listed twice", False))
        fields = [row[c] for c in _CSV_BOX]
        label = class_name(row[label_col])
        if not any(fields) and label is None:
            continue  # an image without boxes
        try:
            box = tuple(_number(v) for v in fields)
        except ValueError:
            faults.append(_Fault(where, f"box {','.join(fields)} is not four numbers; dropped", "bad annotation", True))
            continue
        if label is None:
            faults.append(_Fault(where, "box without a label; dropped", "bad annotation", True))
            continue
        record.objects.append(_Obj(label, box, where))  # type: ignore[arg-type]
    note = f" ({n_test} test rows not used)" if n_test else ""
    given = has_split and any(r.split == "val" for r in by_image.values())
    return _Source(list(by_image.values()), faults, "csv", f"{path.name}{note}", given)


def _read_source(root: Path, fmt: str | None, allow_outside_root: bool, classes: list[str] | None = None) -> _Source:
    if fmt is not None and fmt not in FORMATS:
        raise SftuneError(f"data format '{fmt}' is unknown; use one of {', '.join(FORMATS)}")
    detected = _detect_format(root)
    fmt = fmt or detected
    if fmt is None:
        what = "a file" if root.is_file() else "a folder"
        raise SftuneError(f"'{root}' is {what} in no detection layout: expected {LAYOUT_HELP}")
    if fmt == "voc":
        if root.is_file():
            raise SftuneError(f"'{root}' is a file; pass the VOC folder (with Annotations/ and JPEGImages/)")
        return _read_voc(root)
    if fmt == "coco":
        return _read_coco(root)
    if fmt == "yolo":
        return _read_yolo(root, classes)
    return _read_csv(root, allow_outside_root)


# ----------------------------------------------------------------------------- images


def _stored_to_displayed(boxes: np.ndarray, orientation: int, stored: tuple[int, int]) -> np.ndarray:
    """Boxes (N, 4) xyxy on an image's stored pixels -> on the image as ``exif_transpose`` shows it.

    Each orientation's point map (W, H: stored size), as PIL's ``exif_transpose`` moves pixels:
    2 mirror: (W - x, y); 3 turn 180: (W - x, H - y); 4 flip: (x, H - y); 5 transpose: (y, x);
    6 turn 90 clockwise: (H - y, x); 7 transverse: (H - y, W - x); 8 turn 90 anticlockwise: (y, W - x).
    """
    w, h = stored
    x0, y0, x1, y1 = boxes.T
    maps = {
        2: lambda x, y: (w - x, y), 3: lambda x, y: (w - x, h - y), 4: lambda x, y: (x, h - y),
        5: lambda x, y: (y, x), 6: lambda x, y: (h - y, x), 7: lambda x, y: (h - y, w - x),
        8: lambda x, y: (y, w - x),
    }
    if orientation not in maps:
        return boxes
    ax, ay = maps[orientation](x0, y0)
    bx, by = maps[orientation](x1, y1)
    return np.stack([np.minimum(ax, bx), np.minimum(ay, by), np.maximum(ax, bx), np.maximum(ay, by)], axis=1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from torchvision.ops import box_iou
    import torch

    return box_iou(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64))).numpy()


def _fmt_box(box: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


# ----------------------------------------------------------------------------- classes


def _resolve_classes(source: _Source, extra: list[_Source], given: list[str] | None,
                     faults: list[_Fault], root: Path) -> tuple[list[str], dict[str, int], str, list[int | None] | None]:
    """``(classes, {name as written: index}, where the names came from, COCO category ids)``.

    One rule for class names (sftune.data.labels): spellings that differ only by case,
    whitespace or number form are one class, named by the most frequent spelling, with a warning."""
    records = [r for s in [source, *extra] for r in s.records]
    occurrences = Counter(o.name for r in records for o in r.objects if o.name is not None)
    declared, declared_source = source.declared, source.declared_source
    if declared is None and not given and source.format in ("voc", "csv"):
        folder = root if root.is_dir() else root.parent
        for name in ("classes.txt", "labels.txt"):
            if (folder / name).is_file():
                names = [class_name(line) for line in (folder / name).read_text(encoding="utf-8").splitlines()]
                declared, declared_source = [n for n in names if n is not None], str(folder / name)
                break
    if given:
        classes = list(given)
        mapping = align_to_classes(occurrences, classes)
        source_note = "the classes argument"
    else:
        counts = Counter(occurrences)
        for d in declared or []:
            counts[d] += 0
        rename, merged = merge_variants(counts)
        first_seen: dict[str, str] = {}
        for r in records:
            for o in r.objects:
                first_seen.setdefault(o.name, r.where)  # type: ignore[arg-type]
        for group in merged:  # named by the first file that writes a spelling other than the chosen one
            chosen, spellings = group
            other = next((first_seen[sp] for sp, _ in spellings if sp != chosen and sp in first_seen), None)
            for _, problem in variant_warnings(other or declared_source or str(root), [group]):
                faults.append(_Fault(other or declared_source or str(root), problem, "class name variants", False))
        if declared is not None:
            classes = list(dict.fromkeys(rename.get(d, d) for d in declared))
            source_note = declared_source
        else:
            classes = sorted({rename.get(n, n) for n in occurrences})
            source_note = "the annotations' class names (sorted)"
        index = {class_key(c): i for i, c in enumerate(classes)}
        mapping = {n: classes[index[class_key(rename.get(n, n))]] for n in occurrences
                   if class_key(rename.get(n, n)) in index}
    to_index = {c: i for i, c in enumerate(classes)}
    name_index = {n: to_index[c] for n, c in mapping.items()}
    category_ids: list[int | None] | None = None
    if source.format == "coco" and source.declared is not None and source.category_ids is not None:
        ids_of: dict[int, list[int]] = defaultdict(list)
        key_index = {class_key(c): i for i, c in enumerate(classes)}
        for name, ids in zip(source.declared, source.category_ids):
            i = key_index.get(class_key(name))
            if i is not None:
                ids_of[i] += ids
        category_ids = [min(ids_of[i]) if ids_of.get(i) else None for i in range(len(classes))]
    return classes, name_index, source_note, category_ids


# ----------------------------------------------------------------------------- entry


def find_labeled_boxes(
    path: str | Path,
    val_path: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 42,
    strict: bool = False,
    format: str | None = None,  # noqa: A002 - the config key's name
    classes: list[str] | None = None,
    allow_outside_root: bool = False,
    log: Callable[[str], None] = print,
) -> LabeledBoxes:
    """Resolve ``--data`` (and optional ``--val-data``) into checked train/val images with boxes.

    Every image is read once (threads): decode-checked, hashed, its displayed size and EXIF
    orientation read; every annotation parsed once. Boxes end in the displayed image's pixels
    (module docstring: coordinates, EXIF), classes as indices 0..C-1 of ``classes``.

    ``format``: one of :data:`FORMATS`, else detected from the layout. ``classes``: the class
    list to use (e.g. a trained model's): names are matched by the class-name rule, boxes of
    other classes dropped (warned). ``val_path``: a second source in any format; its val
    images if it has a split, else all its images, become the validation set. Without any
    validation set, a seeded random ``val_fraction`` of the images is held out (copies of
    one image stay on one side).

    Faults (module docstring) are counted per kind in one log line each, naming the first
    files; all are listed in ``skipped``/``warnings``; ``strict`` turns the first into an
    SftuneError. Raises SftuneError for a path in no known layout, and data without a
    single usable image or class.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise SftuneError(f"data path '{root}' does not exist; pass detection data ({LAYOUT_HELP})")
    source = _read_source(root, format, allow_outside_root, classes)
    faults = list(source.faults)
    records = list(source.records)
    extra: list[_Source] = []
    given_split = source.given_split
    if val_path is not None:
        val_root = Path(val_path).expanduser()
        if not val_root.exists():
            raise SftuneError(f"validation path '{val_root}' does not exist (data.val_path)")
        other = _read_source(val_root, None, allow_outside_root, classes)
        extra.append(other)
        if any(r.split == "val" for r in records):
            log(f"validation images under {root} not used: {val_root} is the validation data")
        records = [r for r in records if r.split != "val"]
        for r in records:
            r.split = "train"
        other_val = [r for r in other.records if r.split == "val"] or other.records
        for r in other_val:
            r.split = "val"
        records += other_val
        faults += other.faults
        given_split = True

    if not records:
        _no_images(root, source, faults)

    # --- classes (before boxes: unknown names are dropped with the box checks) ---
    class_list, name_index, class_source, category_ids = _resolve_classes(source, extra, classes, faults, root)
    if not class_list:
        raise SftuneError(f"no class found under '{root}' ({FORMAT_NAMES[source.format]}: no object in any "
                          f"annotation, and no class list); detection needs at least one class")

    # --- one pass over every image (PIL decoding releases the GIL) ---
    image_paths = list(dict.fromkeys(r.image for r in records))
    with ThreadPoolExecutor(max_workers=8) as pool:
        scans = dict(zip(image_paths, pool.map(scan_image, image_paths)))
    for p, scan in scans.items():
        if isinstance(scan, str):
            faults.append(_Fault(str(p), scan, "unreadable image", True))

    # --- boxes ---
    samples: dict[str, list[BoxSample]] = {"train": [], "val": [], "": []}
    listed: set[Path] = set()
    for r in records:
        scan = scans[r.image]
        if isinstance(scan, str):
            continue
        if r.image in listed and not given_split:
            faults.append(_Fault(r.where, f"{r.image} is annotated twice; the second annotation skipped",
                                 "listed twice", True))
            continue
        listed.add(r.image)
        target = _build_target(r, scan, name_index, class_list, faults)
        samples[r.split or ""].append(BoxSample(r.image, target))

    train, val = samples["train"] + samples[""], samples["val"]  # no split given: no "val" records
    digests = {s.image: scans[s.image].digest for s in train + val}  # type: ignore[union-attr]
    if not train:
        _no_images(root, source, faults)
    if not given_split:
        train, val = _random_split(train, val_fraction, seed)
        train, val, moved = keep_copies_together(train, val, key=lambda s: digests[s.image])
        train, val = _sorted(train), _sorted(val)
        split = {"method": "random", "seed": seed, "val_fraction": val_fraction}
        if moved:
            split["copies_kept_in_train"] = moved
    else:
        train, val = _sorted(train), _sorted(val)
        split = {"method": "given", "source": str(val_path or root)}
    if not val:
        copies = (" (the held-out images are copies of training images, kept in train so the split does not "
                  "leak)" if split.get("copies_kept_in_train") else " (a random split needs at least 2)")
        raise SftuneError(f"no validation images under '{root}': add a val split ({_split_help(source.format)}) or "
                          f"more images{copies}")
    for where, problem in leakage_warnings([Sample(s.image, "") for s in train], [Sample(s.image, "") for s in val],
                                           digests):
        faults.append(_Fault(where, problem, "train/val leakage", False))

    # --- strict, lists ---
    if faults and strict:
        f = faults[0]
        more = f" ({len(faults) - 1} more problems)" if len(faults) > 1 else ""
        fix = "drop --strict to skip them" if f.skip else "drop --strict to only warn"
        raise SftuneError(f"{f.where}: {f.reason}{more}; fix the annotations, or {fix}")
    skipped = [(f.where, f.reason) for f in faults if f.skip]
    warnings = [(f.where, f.reason) for f in faults if not f.skip]

    # --- result ---
    sizes = {s.image: scans[s.image].size[::-1] for s in train + val}  # type: ignore[union-attr]
    stats = _box_stats(train, val, len(class_list), sizes)
    settings = json.dumps({"format": source.format, "classes": class_list, "category_ids": category_ids})
    fingerprint = _fingerprint([(s.target.digest(), digests[s.image]) for s in train + val]  # type: ignore[union-attr]
                               + [("\0settings", hashlib.sha256(settings.encode()).hexdigest())])
    split["val_files"] = sorted(_relative(s.image, root) for s in val)

    n_boxes = {side: sum(stats.class_boxes[side]) for side in ("train", "val")}
    how = "given split" if split["method"] == "given" else f"random {val_fraction:.0%} validation split, seed {seed}"
    log(f"detection data: {FORMAT_NAMES[source.format]} ({source.description}) under {root}: {len(train)} train + "
        f"{len(val)} val images ({how}), {n_boxes['train']} + {n_boxes['val']} boxes")
    shown = ", ".join(f"{c} ({stats.class_boxes['train'][i]}+{stats.class_boxes['val'][i]})"
                      for i, c in enumerate(class_list[:12]))
    more_classes = f", ... ({len(class_list) - 12} more)" if len(class_list) > 12 else ""
    log(f"{len(class_list)} classes from {class_source}, train+val boxes: {shown}{more_classes}")
    for note in source.notes:
        log(note)
    negatives = stats.negatives["train"] + stats.negatives["val"]
    if negatives:
        log(f"{negatives} image{'s' if negatives != 1 else ''} without boxes ({stats.negatives['train']} train, "
            f"{stats.negatives['val']} val): "
            f"they train as background")
    if stats.difficult["train"] + stats.difficult["val"]:
        log(f"{stats.difficult['train'] + stats.difficult['val']} VOC 'difficult' boxes: kept for training, left out "
            f"of mAP (a detection matching one counts neither way), as the VOC protocol does")
    if stats.crowd["train"] + stats.crowd["val"]:
        log(f"{stats.crowd['train'] + stats.crowd['val']} COCO crowd boxes (iscrowd): not trained on, ignored by mAP")
    empty_classes = [c for i, c in enumerate(class_list) if stats.class_boxes["train"][i] == 0]
    if empty_classes:
        log(f"classes without a training box: {', '.join(empty_classes[:8])}")
    if faults:
        _log_faults(faults, len(skipped), len(warnings), log)
    return LabeledBoxes(train=train, val=val, classes=class_list, format=source.format, category_ids=category_ids,
                        split=split, fingerprint=fingerprint, skipped=skipped, warnings=warnings, digests=digests,
                        sizes=sizes, box_stats=stats)  # type: ignore[arg-type]


def _build_target(r: _Record, scan: ImageScan, name_index: dict[str, int], classes: list[str],
                  faults: list[_Fault]) -> BoxTarget:
    """Checked boxes of one record on its displayed image (drops, clips, turns: each a fault)."""
    w, h = scan.size
    kept: list[tuple[np.ndarray, int, bool, bool, str]] = []
    turn = (r.size is not None and not r.normalised and scan.orientation in (5, 6, 7, 8)
            and r.size == scan.stored_size and scan.stored_size != scan.size)
    if turn:
        stored_w, stored_h = scan.stored_size
        faults.append(_Fault(f"{r.image} + {r.where}", f"the annotation's image size {stored_w}x{stored_h} is the "
                             f"stored one, but EXIF orientation {scan.orientation} shows the image as {w}x{h}: its boxes "
                             f"were drawn on the stored pixels and are turned with the image", "EXIF orientation",
                             False))
    elif r.size is not None and not r.normalised and r.size != scan.size:
        faults.append(_Fault(f"{r.image} + {r.where}", f"the annotation says the image is {r.size[0]}x{r.size[1]} but "
                             f"it is {w}x{h}; boxes are used as written (resized image? re-export the annotations)",
                             "size mismatch", False))
    for o in r.objects:
        index = name_index.get(o.name)  # type: ignore[arg-type]
        if index is None:
            faults.append(_Fault(o.where, f"class '{o.name}' is not one of the classes ({', '.join(classes[:6])}"
                                          f"{', ...' if len(classes) > 6 else ''}); dropped", "unknown class", True))
            continue
        box = np.array(o.box, dtype=np.float64)
        if r.normalised:
            box = box * np.array([w, h, w, h], dtype=np.float64)
        if not (box[2] > box[0] and box[3] > box[1]):
            bw, bh = box[2] - box[0], box[3] - box[1]
            what = ("zero width and height" if bw == 0 and bh == 0 else
                    "zero width" if bw == 0 else "zero height" if bh == 0 else
                    "negative width/height (corners swapped?)")
            faults.append(_Fault(o.where, f"'{o.name}' box {_fmt_box(box.round(2))} has {what}; dropped",
                                 "degenerate box", True))
            continue
        if turn:
            box = _stored_to_displayed(box[None], scan.orientation, scan.stored_size)[0]
        clipped = np.clip(box, 0, [w, h, w, h])
        if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
            faults.append(_Fault(o.where, f"'{o.name}' box {_fmt_box(box.round(2))} lies outside the {w}x{h} image; "
                                          f"dropped", "box outside the image", True))
            continue
        if np.abs(clipped - box).max() > CLIP_TOLERANCE:
            faults.append(_Fault(o.where, f"'{o.name}' box {_fmt_box(box.round(2))} reaches outside the {w}x{h} image; "
                                          f"clipped to {_fmt_box(clipped.round(2))}", "clipped box", False))
        kept.append((clipped, index, o.difficult, o.iscrowd, o.where))
    if not kept:
        return BoxTarget.empty()
    boxes = np.stack([k[0] for k in kept])
    labels = np.array([k[1] for k in kept], dtype=np.int64)
    keep = np.ones(len(kept), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        iou = _iou(boxes[idx], boxes[idx])
        same = np.triu((iou > DUPLICATE_IOU) | (boxes[idx][:, None] == boxes[idx][None]).all(-1), k=1)
        for a in np.flatnonzero(same.any(1)):
            if not keep[idx[a]]:
                continue  # a repeat itself: its repeats were compared with the first box already
            for b in np.flatnonzero(same[a]):
                if keep[idx[b]]:
                    keep[idx[b]] = False
                    faults.append(_Fault(kept[idx[b]][4], f"'{classes[c]}' box {_fmt_box(boxes[idx[b]].round(2))} "
                                                          f"repeats box {_fmt_box(boxes[idx[a]].round(2))} "
                                                          f"(IoU {iou[a, b]:.2f}); dropped", "duplicate box", True))
    return BoxTarget(boxes[keep], labels[keep], np.array([k[2] for k in kept])[keep],
                     np.array([k[3] for k in kept])[keep])


def _box_stats(train: list[BoxSample], val: list[BoxSample], n_classes: int,
               sizes: dict[Path, tuple[int, int]]) -> BoxStats:
    class_boxes, negatives, difficult, crowd = {}, {}, {}, {}
    for side, samples in (("train", train), ("val", val)):
        counts = np.zeros(n_classes, dtype=np.int64)
        for s in samples:
            np.add.at(counts, s.target.labels, 1)  # type: ignore[union-attr]
        class_boxes[side] = counts.tolist()
        negatives[side] = sum(len(s.target) == 0 for s in samples)  # type: ignore[arg-type]
        difficult[side] = int(sum(s.target.difficult.sum() for s in samples))  # type: ignore[union-attr]
        crowd[side] = int(sum(s.target.iscrowd.sum() for s in samples))  # type: ignore[union-attr]
    parts = []
    for s in train:
        t = s.target
        assert t is not None
        parts.append((t.boxes[~t.iscrowd], t.labels[~t.iscrowd], sizes[s.image]))
    boxes = np.concatenate([b for b, _, _ in parts]) if parts else np.zeros((0, 4), np.float32)
    labels = np.concatenate([lab for _, lab, _ in parts]) if parts else np.zeros(0, np.int64)
    image_sizes = (np.concatenate([np.tile(np.array(hw, np.int64), (len(b), 1)) for b, _, hw in parts])
                   if parts else np.zeros((0, 2), np.int64))
    return BoxStats(class_boxes, negatives, difficult, crowd, (boxes[:, 2] - boxes[:, 0]).astype(np.float32),
                    (boxes[:, 3] - boxes[:, 1]).astype(np.float32), labels.astype(np.int64), image_sizes)


def _log_faults(faults: list[_Fault], n_skipped: int, n_warnings: int, log: Callable[[str], None]) -> None:
    """One summary line, then one line per kind: its count, what happened, its first files."""
    by_kind: dict[str, list[_Fault]] = defaultdict(list)
    for f in faults:
        by_kind[f.kind].append(f)
    log(f"data problems: {n_skipped} skipped, {n_warnings} warnings ("
        + ", ".join(f"{len(fs)} {kind}" for kind, fs in sorted(by_kind.items(), key=lambda kv: -len(kv[1]))) + ")")
    for kind, fs in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        note = _KIND_NOTE.get(kind, "")
        first = fs[0]
        files = list(dict.fromkeys(f.where for f in fs))
        named = ", ".join(files[:SHOWN_FILES]) + (f" and {len(files) - SHOWN_FILES} more" if len(files) > SHOWN_FILES
                                                  else "")
        log(f"  {len(fs)} {kind} ({note}): {named}; first: {first.reason}")


def _no_images(root: Path, source: _Source, faults: list[_Fault]) -> None:
    first = next((f for f in faults if f.skip), None)
    why = f"; first problem: {first.where}: {first.reason}{missing_paths_hint([first.reason])}" if first else ""
    raise SftuneError(f"no usable training images under '{root}' ({FORMAT_NAMES[source.format]}: "
                      f"{source.description}){why}")


def _split_help(fmt: str) -> str:
    return {"voc": "ImageSets/Main/train.txt + val.txt", "coco": "instances_train*.json + instances_val*.json",
            "yolo": "images/train + images/val", "csv": "a split column"}[fmt]


def _random_split(samples: list[BoxSample], val_fraction: float, seed: int) -> tuple[list[BoxSample], list[BoxSample]]:
    """A seeded shuffle of the images sends round(n * fraction) (at least 1 when n >= 2) to val (data/splits.py)."""
    from ...data.splits import split_indices

    train, val = split_indices([0] * len(samples), val_fraction, seed, order=[str(s.image) for s in samples])
    return [samples[i] for i in train], [samples[i] for i in val]


def _sorted(samples: list[BoxSample]) -> list[BoxSample]:
    return sorted(samples, key=lambda s: str(s.image))


def _relative(path: Path, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def find_unlabeled_samples(paths: list[str | Path]) -> list[BoxSample]:
    """Files and folders given to ``predict`` -> samples without targets, in a stable order."""
    from ...data.sources import find_unlabeled_images

    return [BoxSample(p, None) for p in find_unlabeled_images(paths)]
