"""Find image/mask pairs for semantic segmentation, read their masks as class indices.

Layouts understood (``path`` is what the user passed as ``--data``):

* CamVid: ``path/train/`` + ``path/trainannot/`` and optionally ``path/val/`` +
  ``path/valannot/`` (``test/`` + ``testannot/`` are never used for training);
* ``path/images/`` + ``path/masks/``, or ``images/{train,val}/`` + ``masks/{train,val}/``;
* ``path`` = a ``.csv``/``.tsv`` manifest with ``image,mask`` columns and an optional
  ``split`` column (``train``/``val``; ``test`` rows are left out). Relative paths resolve
  against the manifest's folder and must stay inside it unless ``allow_outside_root``.

An image and its mask pair up by their path below the images/masks folder without the
extension (``a/x.jpg`` + ``a/x.png``); a mask named ``x_mask.png`` (or ``_label``, ``_L``,
``_gt``, ...) still pairs with ``x.jpg`` when no mask is named exactly ``x``.

Mask formats, detected once from all masks and stated in one log line:

* ``index``: 8-bit grayscale PNGs whose pixel values are the class indices;
* ``palette``: palette ('P') PNGs: the palette *index* is the class, never the colour
  (Pascal VOC's colours are for people, the indices are the labels);
* ``binary``: grayscale masks holding only 0 and 255 -> classes background (0) and
  foreground (1); 255 means foreground there, so it cannot also mean void: ``ignore_index``
  then only marks padding and unlabeled images. Lossy JPEG masks that are 0/255 but for
  compression noise are thresholded at 128;
* ``16bit``: 16-bit grayscale PNGs ('I;16'): values are the class indices;
* ``rgb``: colour masks, mapped through a colour -> class table (``classes.json``,
  ``labelmap.txt`` beside the data, or the ``colormap`` argument). Colours missing from
  the table become ``ignore_index``, with a warning counting them. RGB masks whose
  colours are all gray (r = g = b) are index masks saved as RGB and read as ``index``.

Class names come from the ``classes`` argument, else ``classes.json`` / ``labelmap.txt`` /
``classes.txt`` (one name a line) beside the data, else ``class_0 .. class_{N-1}`` with
N = the largest mask value seen (``ignore_index`` excepted) + 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from ...data.checks import leakage_warnings
from ...data.images import MAX_PIXELS, ImageScan, is_image_file, scan_image
from ...data.sources import VAL_DIR_NAMES, Sample, _fingerprint, _inside, _walk_files
from ...data.tables import file_delimiter, manifest_path, missing_paths_hint
from ...errors import SftuneError

MASK_FORMATS = ("index", "palette", "binary", "16bit", "rgb")
# Suffixes that annotation tools add to a mask's name (Carvana '_mask', CamVid '_L', ...);
# only tried when no mask carries the image's exact name.
MASK_NAME_SUFFIXES = ("_mask", "-mask", "_masks", "_label", "_labels", "_L", "_gt", "_seg", "_annot")
CAMVID_SPLITS = {"train": ("train", "trainannot"), "val": ("val", "valannot")}
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
SHOWN_FAULTS = 5  # faults logged one by one; the rest are only counted (all are in skipped/warnings)
MAX_GUESSED_CLASSES = 1024  # more classes than this from mask values alone is a misread, not a label set


@dataclass(frozen=True)
class MaskSample:
    """One image and its mask; ``mask`` is None for an unlabeled image (prediction)."""

    image: Path
    mask: Path | None


@dataclass
class LabeledMasks:
    """Train/val pairs plus what was learned while finding and scanning them."""

    train: list[MaskSample]
    val: list[MaskSample]
    classes: list[str]
    ignore_index: int
    mask_format: str  # one of MASK_FORMATS: how read_mask turns a mask file into class indices
    # RGB colour of each class (index = class): the table of rgb masks (one entry longer than
    # classes when its last colour is ignore_index's, e.g. 'void'), else colours from a
    # classes.json or the masks' own palette (for drawing overlays); None when nothing says.
    colormap: list[tuple[int, int, int]] | None = None
    split: dict = field(default_factory=dict)  # how val was obtained (recorded in the bundle)
    fingerprint: str = ""  # sha256 over (mask content, image content) of every pair + the mask settings
    skipped: list[tuple[str, str]] = field(default_factory=list)  # ("image + mask" or one path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path(s), problem): pair kept
    digests: dict[Path, str] = field(default_factory=dict)  # content sha256 of every image and mask file
    # Class indices present in each mask (ignore_index left out): absent classes, class-aware sampling.
    mask_classes: dict[Path, tuple[int, ...]] = field(default_factory=dict)
    # Labeled pixels per class, {"train": [n_0, ..], "val": [...]}: class balance, absent classes.
    class_pixels: dict[str, list[int]] = field(default_factory=dict)
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)  # image (height, width) as displayed

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def reader(self) -> "MaskReader":
        """How to read this data's masks (picklable, for DataLoader workers)."""
        return MaskReader(self.mask_format, tuple(self.colormap) if self.colormap and self.mask_format == "rgb" else None,
                          self.ignore_index)


@dataclass(frozen=True)
class MaskReader:
    """``read_mask`` with its settings bound: ``reader(path) -> (H, W) int64``."""

    mask_format: str = "index"
    colormap: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int = 255

    def __call__(self, path: Path) -> np.ndarray:
        return read_mask(path, self.mask_format, self.colormap, self.ignore_index)


# ----------------------------------------------------------------------------- reading one mask


def _open_mask(data: bytes | Path) -> Image.Image:
    """Open a mask file upright (EXIF orientation applied, as ``load_rgb`` does for its image)."""
    im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    if im.width * im.height > MAX_PIXELS:
        raise Image.DecompressionBombError(f"{im.width}x{im.height} px is over the limit of {MAX_PIXELS:,} px")
    im.seek(0)
    # exif_transpose keeps the mode (and a palette), so indices survive the rotation.
    return ImageOps.exif_transpose(im) or im


def _raw_values(im: Image.Image) -> tuple[str, np.ndarray]:
    """``(kind, array)``: 'gray8' / 'palette' / 'gray16' -> (H, W) ints, 'rgb' -> (H, W, 3) uint8."""
    mode = im.mode
    if mode == "1":
        return "gray8", np.asarray(im, dtype=np.uint8) * np.uint8(255)  # 1-bit: a 0/255 binary mask
    if mode in ("L", "LA"):
        arr = np.asarray(im)
        return "gray8", arr[..., 0] if arr.ndim == 3 else arr  # alpha is not a label
    if mode in ("P", "PA"):
        arr = np.asarray(im)  # a palette image as an array holds the palette indices, not colours
        return "palette", arr[..., 0] if arr.ndim == 3 else arr
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise ValueError("negative values; class indices must be >= 0")
        return "gray16", arr
    if mode in ("RGB", "RGBA"):
        return "rgb", np.asarray(im)[..., :3]
    raise ValueError(f"mode {mode} masks are not supported; save masks as 8/16-bit grayscale, palette or RGB PNGs")


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint32 ``r << 16 | g << 8 | b``: one number per colour."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(c: int) -> tuple[int, int, int]:
    return (c >> 16) & 255, (c >> 8) & 255, c & 255


def read_mask(path: str | Path, fmt: str, colormap: list[tuple[int, int, int]] | tuple | None = None,
              ignore_index: int = 255) -> np.ndarray:
    """A mask file as class indices, ``(H, W)`` int64, in the image's displayed orientation.

    ``fmt`` is the data's :attr:`LabeledMasks.mask_format`. 'index'/'palette'/'16bit' give
    the stored values (a palette PNG's indices, never its colours); 'binary' gives 1 where
    the stored value is >= 128 (255 in a 0/255 mask) and 0 elsewhere; 'rgb' maps each colour
    through ``colormap`` (entry i = colour of class i), unknown colours -> ``ignore_index``.

    Raises SftuneError naming the file when it cannot be read or does not fit ``fmt``.
    """
    if fmt not in MASK_FORMATS:
        raise SftuneError(f"mask format '{fmt}' is unknown; use one of {', '.join(MASK_FORMATS)}")
    path = Path(path)
    try:
        with _open_mask(path) as im:
            kind, arr = _raw_values(im)
    except SftuneError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise SftuneError(f"mask '{path}' is not readable ({type(e).__name__}: {str(e)[:80]}); fix or remove it") from None
    if fmt == "rgb":
        if colormap is None:
            raise SftuneError(f"mask '{path}': RGB masks need a colormap (colour of each class)")
        if kind != "rgb":
            raise SftuneError(f"mask '{path}' is a {kind} mask but this data's masks are RGB colour masks; "
                              f"save every mask in one format")
        packed = _pack(arr)
        table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(colormap)}
        colours, inverse = np.unique(packed, return_inverse=True)
        lut = np.array([table.get(int(c), ignore_index) for c in colours], dtype=np.int64)
        return lut[inverse].reshape(packed.shape)
    if kind == "rgb":
        # Index masks saved as RGB (every pixel gray): the red channel holds the index.
        if not ((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()):
            raise SftuneError(f"mask '{path}' is an RGB colour image but this data's masks are {fmt} masks; "
                              f"save every mask in one format")
        arr = arr[..., 0]
    if fmt == "binary":
        return (arr >= 128).astype(np.int64)
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------- discovery


def _key(path: Path, base: Path) -> str:
    return path.relative_to(base).with_suffix("").as_posix()


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in _walk_files(folder) if is_image_file(p))


@dataclass
class _Fault:
    where: str  # "image + mask", or one path
    reason: str
    kind: str  # counted by kind in the log line
    skip: bool  # True: the pair (or file) is left out; False: a warning, the pair is used


def _both(image: Path | None, mask: Path | None) -> str:
    return " + ".join(str(p) for p in (image, mask) if p is not None)


def _pair_folders(image_dir: Path, mask_dir: Path) -> tuple[list[MaskSample], list[_Fault]]:
    """Pair ``image_dir/**/x.*`` with ``mask_dir/**/x.*`` by path without the extension.

    Returns the pairs (sorted by image path) and the unmatched/ambiguous files as faults."""
    faults: list[_Fault] = []
    images: dict[str, list[Path]] = defaultdict(list)
    for p in _image_files(image_dir):
        images[_key(p, image_dir)].append(p)
    masks: dict[str, list[Path]] = defaultdict(list)
    for p in _image_files(mask_dir):
        key = _key(p, mask_dir)
        if key not in images:  # x_mask.png -> x, only when no mask is named exactly x
            for suffix in MASK_NAME_SUFFIXES:
                if key.endswith(suffix) and key[: -len(suffix)] in images:
                    key = key[: -len(suffix)]
                    break
        masks[key].append(p)
    pairs: list[MaskSample] = []
    for key in sorted(set(images) | set(masks)):
        imgs, msks = images.get(key, []), masks.get(key, [])
        if len(imgs) > 1 or len(msks) > 1:
            names = ", ".join(str(p) for p in imgs + msks)
            side = "images" if len(imgs) > 1 else "masks"
            faults.append(_Fault(names, f"{side} with the same name but different extensions; keep one", "ambiguous", True))
        elif not msks:
            faults.append(_Fault(str(imgs[0]), f"image without a mask (expected {mask_dir}/{key}.png)", "no mask", True))
        elif not imgs:
            faults.append(_Fault(str(msks[0]), f"mask without an image (expected {image_dir}/{key}.<ext>)", "no image", True))
        else:
            pairs.append(MaskSample(imgs[0], msks[0]))
    pairs.sort(key=lambda s: str(s.image))
    return pairs, faults


def _detect_layout(root: Path) -> str | None:
    if root.is_file():
        return "manifest" if root.suffix.lower() in (".csv", ".tsv") else None
    if (root / "train").is_dir() and (root / "trainannot").is_dir():
        return "camvid"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "images_masks"
    return None


LAYOUT_HELP = ("train/ + trainannot/ (CamVid), images/ + masks/ (optionally images/train, images/val + "
               "masks/train, masks/val), or a CSV manifest with image,mask columns")


def is_segmentation_data(path: str | Path) -> bool:
    """A cheap look at the layout (no image is opened): used to pick the task automatically."""
    root = Path(path).expanduser()
    layout = _detect_layout(root)
    if layout != "manifest":
        return layout is not None
    try:
        with root.open(newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    header = {h.strip().lower() for h in next(csv.reader([first], delimiter=file_delimiter(root)), [])}
    return {"image", "mask"} <= header


@dataclass
class _Source:
    train: list[MaskSample]
    val: list[MaskSample] | None
    faults: list[_Fault]
    description: str  # for the log line


def _read_source(root: Path, allow_outside_root: bool) -> _Source:
    layout = _detect_layout(root)
    if layout == "manifest":
        return _read_manifest(root, allow_outside_root)
    if layout == "camvid":
        train, faults = _pair_folders(root / "train", root / "trainannot")
        val: list[MaskSample] | None = None
        for name in VAL_DIR_NAMES:
            if (root / name).is_dir() and (root / f"{name}annot").is_dir():
                val, val_faults = _pair_folders(root / name, root / f"{name}annot")
                faults += val_faults
                break
        ignored = " (test/ not used for training)" if (root / "test").is_dir() else ""
        return _Source(train, val, faults, f"CamVid layout (train/ + trainannot/){ignored}")
    if layout == "images_masks":
        images, masks = root / "images", root / "masks"
        if (images / "train").is_dir() and (masks / "train").is_dir():
            train, faults = _pair_folders(images / "train", masks / "train")
            val = None
            for name in VAL_DIR_NAMES:
                if (images / name).is_dir() and (masks / name).is_dir():
                    val, val_faults = _pair_folders(images / name, masks / name)
                    faults += val_faults
                    break
            ignored = " (images/test/ not used for training)" if (images / "test").is_dir() else ""
            return _Source(train, val, faults, f"images/train + masks/train layout{ignored}")
        train, faults = _pair_folders(images, masks)
        return _Source(train, None, faults, "images/ + masks/ layout")
    if root.is_file():
        raise SftuneError(f"'{root}' is a file but not a .csv/.tsv manifest; pass a folder with {LAYOUT_HELP}")
    raise SftuneError(f"'{root}' is not a segmentation data folder: expected {LAYOUT_HELP}")


def _read_manifest(path: Path, allow_outside_root: bool) -> _Source:
    """``image,mask[,split]`` rows -> pairs; paths resolve against the manifest's folder."""
    delimiter = file_delimiter(path)  # a ';'-separated .csv is read as such
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise SftuneError(f"manifest '{path}' is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise SftuneError(f"manifest '{path}' is not a readable CSV file ({e}); save it as plain UTF-8 text "
                          f"with image,mask columns") from None
    for needed in ("image", "mask"):
        if needed not in header:
            raise SftuneError(f"manifest '{path}' has no '{needed}' column (columns: {', '.join(header) or 'none'}); "
                              f"the first line must name the columns, e.g. image,mask,split")
    root = path.parent.resolve()
    has_split = "split" in header
    train: list[MaskSample] = []
    val: list[MaskSample] = []
    faults: list[_Fault] = []
    n_test = 0
    for line_no, row in enumerate(rows, start=2):
        if None in row:
            raise SftuneError(f"manifest '{path}' line {line_no}: more fields than the header names "
                              f"({', '.join(header)}); quote values that contain '{delimiter}'")
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not row["image"]:
            raise SftuneError(f"manifest '{path}' line {line_no}: empty image path; every row needs an image")
        files: list[Path] = []
        for column in ("image", "mask"):
            if not row[column]:
                continue
            file = manifest_path(row[column], path.parent)  # Windows '\' separators too
            if not allow_outside_root and not _inside(file, root):
                raise SftuneError(
                    f"manifest '{path}' line {line_no}: {column} '{row[column]}' points outside the manifest's folder "
                    f"{root}; move the manifest up to a folder that holds the data, or allow it with "
                    f"--set data.allow_outside_root=true")
            files.append(file)
        split = row.get("split", "").lower() if has_split else ""
        if split == "test":
            n_test += 1
            continue
        if split not in ("", "train", *VAL_DIR_NAMES):
            raise SftuneError(f"manifest '{path}' line {line_no}: split '{split}' must be train, val or test")
        if len(files) == 1:
            faults.append(_Fault(str(files[0]), f"image without a mask (manifest line {line_no})", "no mask", True))
            continue
        (val if split in VAL_DIR_NAMES else train).append(MaskSample(files[0], files[1]))
    note = f" ({n_test} test rows not used for training)" if n_test else ""
    return _Source(train, val if has_split and val else None, faults, f"manifest {path.name}{note}")


def find_unlabeled_samples(paths: list[str | Path]) -> list[MaskSample]:
    """Files and folders given to ``predict`` -> samples without masks, in a stable order."""
    from ...data.sources import find_unlabeled_images

    return [MaskSample(p, None) for p in find_unlabeled_images(paths)]


# ----------------------------------------------------------------------------- class tables


@dataclass
class _ClassTable:
    names: list[str] | None = None
    colours: list[tuple[int, int, int]] | None = None
    source: str = ""


def _colour(value: object, where: str) -> tuple[int, int, int]:
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)):
        return int(value[0]), int(value[1]), int(value[2])
    raise SftuneError(f"{where}: colour {value!r} is not [r, g, b] with integers 0-255")


def _read_class_table(folder: Path) -> _ClassTable:
    """classes.json, else labelmap.txt, else classes.txt beside the data (first found wins)."""
    path = folder / "classes.json"
    if path.is_file():
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SftuneError(f"'{path}' is not valid JSON ({e}); fix it or remove it") from None
        names: list[str] = []
        colours: list[tuple[int, int, int]] = []
        if isinstance(spec, dict):  # {"sky": [128, 128, 128], ...}: the order of the keys is the class order
            for name, col in spec.items():
                names.append(str(name))
                colours.append(_colour(col, f"'{path}' class '{name}'"))
        elif isinstance(spec, list):
            for i, entry in enumerate(spec):
                if isinstance(entry, str):
                    names.append(entry)
                elif isinstance(entry, dict) and "name" in entry:
                    names.append(str(entry["name"]))
                    if "color" in entry or "colour" in entry:
                        colours.append(_colour(entry.get("color", entry.get("colour")), f"'{path}' entry {i}"))
                else:
                    raise SftuneError(f"'{path}' entry {i} is {entry!r}; write a name or "
                                      f'{{"name": ..., "color": [r, g, b]}}')
        else:
            raise SftuneError(f"'{path}' must hold a list of classes or a {{name: [r, g, b]}} object")
        if colours and len(colours) != len(names):
            raise SftuneError(f"'{path}': {len(names) - len(colours)} of {len(names)} classes have no colour; "
                              f"give every class a color or none")
        return _ClassTable(names, colours or None, str(path))
    path = folder / "labelmap.txt"
    if path.is_file():  # Pascal VOC / CVAT export: "name:r,g,b:parts:actions", '#' comments
        names, colours = [], []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, rest = line.partition(":")
            try:
                colour = tuple(int(c) for c in rest.split(":", 1)[0].split(","))
            except ValueError:
                raise SftuneError(f"'{path}' line {line_no}: '{line.strip()}' is not 'name:r,g,b::'") from None
            names.append(name.strip())
            colours.append(_colour(colour, f"'{path}' line {line_no}"))
        return _ClassTable(names, colours, str(path))
    path = folder / "classes.txt"
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return _ClassTable(names, None, str(path))
    return _ClassTable()


# ----------------------------------------------------------------------------- scanning


@dataclass
class _MaskScan:
    digest: str
    kind: str  # gray8 | palette | gray16 | rgb
    size: tuple[int, int]  # (width, height), upright
    values: np.ndarray  # stored values (rgb: packed colours) present in the mask
    counts: np.ndarray  # pixels of each value
    jpeg: bool
    palette: list[int] | None = None  # flat RGB palette of a 'P' mask, for the colormap


def _scan_mask(path: Path) -> _MaskScan | str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "mask file not found; fix its path or remove it from the data"
    except OSError as e:
        return f"cannot read the mask ({e.strerror or e})"
    if not data:
        return "empty mask file (0 bytes)"
    try:
        with _open_mask(data) as im:
            kind, arr = _raw_values(im)
            palette = im.getpalette() if kind == "palette" else None
            jpeg = im.format == "JPEG" or path.suffix.lower() in JPEG_SUFFIXES
            size = im.size
    except Exception as e:
        return f"not a readable mask ({type(e).__name__}: {str(e)[:80]})"
    if kind == "rgb":
        values, counts = np.unique(_pack(arr), return_counts=True)
    elif arr.dtype == np.uint8:
        counts = np.bincount(arr.ravel(), minlength=256)  # one pass, no sort: the common case is fast
        values = np.flatnonzero(counts)
        counts = counts[values]
    else:
        values, counts = np.unique(arr, return_counts=True)
    return _MaskScan(hashlib.sha256(data).hexdigest(), kind, size, values.astype(np.int64), counts.astype(np.int64),
                     jpeg, palette)


def _is_gray(packed: np.ndarray) -> bool:
    r, g, b = (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    return bool(((r == g) & (g == b)).all())


def _jpeg_binary(scans: list[_MaskScan]) -> bool:
    """JPEG 0/255 masks blurred by compression: nearly every pixel near 0 or near 255."""
    if not scans or not all(s.jpeg and s.kind == "gray8" for s in scans):
        return False
    total = sum(int(s.counts.sum()) for s in scans)
    middle = sum(int(s.counts[(s.values >= 32) & (s.values < 224)].sum()) for s in scans)
    high = any((s.values >= 224).any() for s in scans)
    return high and middle <= 0.02 * total


# ----------------------------------------------------------------------------- entry


def find_labeled_masks(
    path: str | Path,
    val_path: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 42,
    strict: bool = False,
    ignore_index: int = 255,
    classes: list[str] | None = None,
    colormap: list[tuple[int, int, int]] | None = None,
    allow_outside_root: bool = False,
    log: Callable[[str], None] = print,
) -> LabeledMasks:
    """Resolve ``--data`` (and optional ``--val-data``) into checked train/val image/mask pairs.

    Every image and mask is read once (threads): images are decode-checked and hashed,
    masks decoded in full and their values counted, so the mask format, the class count
    and every fault come from one pass (CamVid's 96 pairs: well under a second).

    Faults (skipped pairs or kept-with-warning pairs) are counted in one log line, the
    first few logged with both file names, all listed in ``skipped``/``warnings``:
    image without mask / mask without image, image and mask of different sizes,
    mask values that are no class (>= the number of classes, not ``ignore_index``),
    unreadable files (all skipped); JPEG masks (lossy), colours missing from the
    colour table, the same image in train and val (warnings). ``strict`` turns the
    first of any into an SftuneError.

    ``val_path``: a second source in any layout; its val pairs if it has a split, else all
    its pairs, become the validation set. Without any validation set, a seeded random
    ``val_fraction`` of the pairs is held out.

    Raises SftuneError for a path that is no known layout, a folder without a single pair,
    RGB masks without a colour table, and class tables that contradict the masks.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise SftuneError(f"data path '{root}' does not exist; pass a segmentation folder ({LAYOUT_HELP})")
    source = _read_source(root, allow_outside_root)
    train, val, faults = source.train, source.val, list(source.faults)
    description = source.description
    if val_path is not None:
        val_root = Path(val_path).expanduser()
        if not val_root.exists():
            raise SftuneError(f"validation path '{val_root}' does not exist (data.val_path)")
        if val:
            log(f"validation pairs under {root} not used: {val_root} is the validation data")
        other = _read_source(val_root, allow_outside_root)
        val = other.val if other.val else other.train
        faults += other.faults
    if not train and not faults:
        _no_pairs(root, description, faults)

    # --- one pass over every file (PIL decoding releases the GIL) ---
    pairs = train + (val or [])
    with ThreadPoolExecutor(max_workers=8) as pool:
        image_paths = list(dict.fromkeys(s.image for s in pairs))
        mask_paths = list(dict.fromkeys(s.mask for s in pairs if s.mask is not None))
        image_results, mask_results = pool.map(scan_image, image_paths), pool.map(_scan_mask, mask_paths)  # all queued
        image_scans = dict(zip(image_paths, image_results))
        mask_scans = dict(zip(mask_paths, mask_results))

    def usable(s: MaskSample) -> bool:
        return isinstance(image_scans[s.image], ImageScan) and isinstance(mask_scans[s.mask], _MaskScan)  # type: ignore[index]

    for s in pairs:
        for p, scan in ((s.image, image_scans[s.image]), (s.mask, mask_scans[s.mask])):  # type: ignore[index]
            if isinstance(scan, str):
                faults.append(_Fault(f"{_both(s.image, s.mask)}", f"{p.name}: {scan}", "unreadable", True))  # type: ignore[union-attr]

    # --- image/mask sizes: the mask must cover the image as load_rgb shows it ---
    bad: set[MaskSample] = set()
    for s in filter(usable, pairs):
        img, msk = image_scans[s.image], mask_scans[s.mask]  # type: ignore[index]
        assert isinstance(img, ImageScan) and isinstance(msk, _MaskScan)
        if msk.size == img.size:
            continue
        bad.add(s)
        # We compare with the *displayed* orientation because that is what load_rgb (and so
        # training) gives; a mask drawn on the stored pixels of a rotated photo is misaligned.
        if msk.size == img.stored_size:
            reason = (f"the mask ({msk.size[0]}x{msk.size[1]}) matches the image's stored pixels but the image has EXIF "
                      f"orientation {img.orientation} and is read rotated to {img.size[0]}x{img.size[1]}; rotate the "
                      f"mask, or save the image without the EXIF orientation")
        else:
            reason = (f"image is {img.size[0]}x{img.size[1]} but its mask is {msk.size[0]}x{msk.size[1]} "
                      f"(width x height); the mask must have the image's size")
        faults.append(_Fault(_both(s.image, s.mask), reason, "size mismatch", True))
    pairs_ok = [s for s in pairs if usable(s) and s not in bad]

    if not pairs_ok:
        _no_pairs(root, description, faults)

    # --- one mask format for the whole data ---
    scans: dict[Path, _MaskScan] = {s.mask: mask_scans[s.mask] for s in pairs_ok}  # type: ignore[index,misc]
    file_table = _read_class_table(root if root.is_dir() else root.parent)
    names_given, names_source = (list(classes), "the classes argument") if classes else (file_table.names, file_table.source)
    if colormap:
        colours: list[tuple[int, int, int]] | None = [_colour(c, "the colormap argument") for c in colormap]
        colours_source = "the colormap argument"
    else:
        colours, colours_source = file_table.colours, file_table.source
    fmt, fmt_note, dropped = _decide_format(scans, colours)
    for s in pairs_ok:
        if s.mask in dropped:
            bad.add(s)
            faults.append(_Fault(_both(s.image, s.mask), dropped[s.mask], "mixed formats", True))
    pairs_ok = [s for s in pairs_ok if s not in bad]
    scans = {s.mask: scans[s.mask] for s in pairs_ok}  # type: ignore[index,misc]

    # --- stored values -> class indices, per mask ---
    colour_index = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(colours or [])}
    unknown_colours: dict[int, list] = defaultdict(lambda: [0, 0, None])  # colour -> [pixels, masks, first mask]
    per_mask: dict[Path, tuple[np.ndarray, np.ndarray]] = {}  # mask -> (class index of each stored value, pixels)
    for m, scan in scans.items():
        if fmt == "rgb":
            cls = np.array([colour_index.get(int(v), ignore_index) for v in scan.values], dtype=np.int64)
            for v, n in zip(scan.values, scan.counts):
                if int(v) not in colour_index:
                    entry = unknown_colours[int(v)]
                    entry[0] += int(n)
                    entry[1] += 1
                    entry[2] = entry[2] or m
        else:
            cls = _index_values(scan)
            if fmt == "binary":
                cls = (cls >= 128).astype(np.int64)
        per_mask[m] = (cls, scan.counts)

    # --- classes ---
    if fmt == "rgb":
        assert colours is not None
        # One colour more than names is fine when it is the colour of ignore_index (a table with
        # 'void' last whose name was dropped; a bundle passes its classes and colormap back so).
        void_colour = len(colours) == len(names_given or []) + 1 == ignore_index + 1
        if names_given is not None and len(names_given) != len(colours) and not void_colour:
            raise SftuneError(f"{len(colours)} colours ({colours_source}) but {len(names_given)} class names "
                              f"({names_source}); give one colour per class")
        names = list(names_given) if names_given is not None else [f"class_{i}" for i in range(len(colours))]
        source_note = names_source if names_given is not None else f"{colours_source} (no names)"
    elif fmt == "binary":
        if names_given is not None and len(names_given) != 2:
            raise SftuneError(f"the masks are binary (0/255) but {len(names_given)} classes are named ({names_source}); "
                              f"binary masks have exactly 2 classes: background, foreground")
        names = list(names_given) if names_given is not None else ["background", "foreground"]
        source_note = names_source if names_given is not None else "binary masks"
    elif names_given is not None:
        names, source_note = list(names_given), names_source
    else:
        seen = sorted({int(c) for cls, _ in per_mask.values() for c in cls if c != ignore_index})
        n = (seen[-1] + 1) if seen else 0
        if n > MAX_GUESSED_CLASSES:
            raise SftuneError(f"mask values go up to {n - 1}, which would be {n} classes; if these are instance ids or "
                              f"colours, save class indices, or name the classes in classes.txt beside the data")
        names = [f"class_{i}" for i in range(n)]
        source_note = "mask values (no classes.txt / classes.json beside the data)"
        if n > 8 and len(seen) * 4 < n:
            faults.append(_Fault(str(root), f"masks use only {len(seen)} distinct values up to {n - 1}, which makes {n} "
                                            f"classes, most never seen: were masks saved as gray levels for viewing? "
                                            f"class i must be stored as pixel value i", "sparse values", False))
    if names_given is not None and fmt != "binary" and len(names) >= 2 and ignore_index == len(names) - 1:
        # A class list that names the void value last (CamVid's 'void' = 11): not a class to learn.
        log(f"class '{names[-1]}' ({ignore_index}) is the ignore_index: left out of the {len(names) - 1} classes")
        names = names[:-1]
    num_classes = len(names)
    if num_classes < 2:
        values = sorted({int(c) for cls, _ in per_mask.values() for c in cls})
        raise SftuneError(f"only {num_classes} class found in the masks under '{root}' (class values {values}, "
                          f"ignore_index {ignore_index}); segmentation needs at least two classes")

    # --- values that are no class ---
    for s in pairs_ok:
        cls, _ = per_mask[s.mask]  # type: ignore[index]
        out = sorted({int(c) for c in cls if (c >= num_classes or c < 0) and c != ignore_index})
        if out:
            bad.add(s)
            faults.append(_Fault(_both(s.image, s.mask),
                                 f"mask values {', '.join(map(str, out[:8]))} are no class: {num_classes} classes "
                                 f"(0-{num_classes - 1}) and ignore_index {ignore_index}; set ignore_index to the void "
                                 f"value or name every class", "values out of range", True))
    pairs_ok = [s for s in pairs_ok if s not in bad]
    if not pairs_ok:
        _no_pairs(root, description, faults)

    # --- warnings on kept pairs ---
    jpeg = [s for s in pairs_ok if scans[s.mask].jpeg]  # type: ignore[index]
    for s in jpeg:
        faults.append(_Fault(_both(s.image, s.mask), "JPEG mask: lossy compression changes values at region edges; "
                                                     "save masks as PNG", "JPEG mask", False))
    for colour, (pixels, n_masks, first) in sorted(unknown_colours.items(), key=lambda kv: -kv[1][0]):
        faults.append(_Fault(str(first), f"colour {_unpack(colour)} is not in the colour table ({colours_source}): "
                                         f"{pixels} px in {n_masks} masks read as ignore_index {ignore_index}",
                             "unknown colour", False))

    # --- split ---
    kept = set(pairs_ok)
    train = [s for s in train if s in kept]
    val = [s for s in val if s in kept] if val is not None else None
    if not train:
        _no_pairs(root, description, faults, "training ")
    if val is None:
        train, val = random_split(train, val_fraction, seed)
        split = {"method": "random", "seed": seed, "val_fraction": val_fraction}
    else:
        split = {"method": "given", "source": str(val_path or root)}
    if not val:
        raise SftuneError(f"no validation pairs: add a val/ split under '{root}' or more image/mask pairs "
                          f"(a random split needs at least 2)")
    digests: dict[Path, str] = {}
    for s in train + val:
        digests[s.image] = image_scans[s.image].digest  # type: ignore[union-attr]
        digests[s.mask] = scans[s.mask].digest  # type: ignore[index]
    for where, problem in leakage_warnings([Sample(s.image, "") for s in train], [Sample(s.image, "") for s in val], digests):
        faults.append(_Fault(where, problem, "train/val leakage", False))

    # --- faults: strict, log, lists ---
    if faults and strict:
        f = faults[0]
        more = f" ({len(faults) - 1} more problems)" if len(faults) > 1 else ""
        fix = "drop --strict to skip them" if f.skip else "drop --strict to only warn"
        raise SftuneError(f"{f.where}: {f.reason}{more}; fix the files, or {fix}")
    skipped = [(f.where, f.reason) for f in faults if f.skip]
    warnings = [(f.where, f.reason) for f in faults if not f.skip]

    # --- result ---
    class_pixels = {}
    for name, side in (("train", train), ("val", val)):
        totals = np.zeros(num_classes, dtype=np.int64)
        for s in side:
            cls, counts = per_mask[s.mask]  # type: ignore[index]
            keep = (cls >= 0) & (cls < num_classes) & (cls != ignore_index)
            np.add.at(totals, cls[keep], counts[keep])
        class_pixels[name] = totals.tolist()
    mask_classes = {m: tuple(sorted({int(c) for c in cls if 0 <= c < num_classes and c != ignore_index}))
                    for m, (cls, _) in per_mask.items() if m in digests}
    # rgb: the whole table, which may hold one more colour than there are classes (the colour
    # of ignore_index, e.g. CamVid's void); otherwise colours only to draw overlays.
    out_colours = [tuple(c) for c in colours] if colours else None
    if out_colours is None and fmt == "palette":
        palette = next((s.palette for s in scans.values() if s.palette), None)
        if palette and len(palette) >= 3 * num_classes:
            out_colours = [tuple(palette[3 * i: 3 * i + 3]) for i in range(num_classes)]
    if fmt != "rgb" and out_colours is not None:
        out_colours = out_colours[:num_classes] if len(out_colours) >= num_classes else None
    settings = json.dumps({"format": fmt, "ignore_index": ignore_index, "classes": names,
                           "colormap": out_colours if fmt == "rgb" else None})
    fingerprint = _fingerprint([(digests[s.mask], digests[s.image]) for s in train + val]  # type: ignore[index]
                               + [("\0settings", hashlib.sha256(settings.encode()).hexdigest())])
    split["val_files"] = sorted(_relative(s.image, root) for s in val)

    absent = [names[i] for i, n in enumerate(class_pixels["val"]) if n == 0]
    log(f"segmentation data: {description} under {root}: {len(train)} train + {len(val)} val pairs "
        f"({'given split' if split['method'] == 'given' else f'random {val_fraction:.0%} validation split, seed {seed}'})")
    log(f"masks: {fmt_note}")
    shown = ", ".join(names[:12]) + (f", ... ({num_classes - 12} more)" if num_classes > 12 else "")
    log(f"{num_classes} classes from {source_note}: {shown}; ignore_index {ignore_index}"
        + (f"; absent from validation: {', '.join(absent)}" if absent else ""))
    ignore_seen = any((cls == ignore_index).any() for cls, _ in per_mask.values())
    if fmt not in ("binary", "rgb") and names_given is None and not ignore_seen:
        log(f"class names are mask values: if one of 0-{num_classes - 1} marks void/unlabeled pixels, set ignore_index "
            f"to it (CamVid: 11)")
    if 0 <= ignore_index < num_classes:
        log(f"ignore_index {ignore_index} is also class '{names[ignore_index]}': its pixels never train or score")
    if faults:
        counts = Counter(f.kind for f in faults)
        log(f"data problems: {len(skipped)} skipped, {len(warnings)} warnings ("
            + ", ".join(f"{n} {kind}" for kind, n in counts.most_common()) + ")")
        for f in faults[:SHOWN_FAULTS]:
            log(f"  {f.where}: {f.reason}")
        if len(faults) > SHOWN_FAULTS:
            log(f"  ... {len(faults) - SHOWN_FAULTS} more (listed in lineage.json)")
    return LabeledMasks(train=train, val=val, classes=names, ignore_index=ignore_index, mask_format=fmt,
                        colormap=out_colours, split=split, fingerprint=fingerprint, skipped=skipped,
                        warnings=warnings, digests=digests, mask_classes=mask_classes, class_pixels=class_pixels,
                        sizes={s.image: image_scans[s.image].size[::-1] for s in train + val})  # type: ignore[union-attr]


def _index_values(scan: _MaskScan) -> np.ndarray:
    """The stored values of an index-like mask; a gray RGB mask's colours -> their red channel."""
    return (scan.values >> 16) & 255 if scan.kind == "rgb" else scan.values


def _decide_format(scans: dict[Path, _MaskScan], colours: list[tuple[int, int, int]] | None
                   ) -> tuple[str, str, dict[Path, str]]:
    """``(format, the sentence that states it, {mask: reason} of masks left out)``.

    Index-like (gray, palette, 16-bit, gray-only RGB) and colour masks do not mix: the
    minority kind is left out (a stray preview image among masks); a tie keeps the index masks."""
    # With a colour table every RGB mask is a colour mask; without one, gray-only RGB masks are index masks.
    rgb = {m for m, s in scans.items() if s.kind == "rgb" and (colours is not None or not _is_gray(s.values))}
    indexed = {m for m in scans if m not in rgb}
    dropped: dict[Path, str] = {}
    if rgb and indexed:
        if len(rgb) > len(indexed):
            dropped = {m: f"an index mask ({scans[m].kind}) among {len(rgb)} RGB colour masks; save every mask in "
                          f"one format" for m in indexed}
            indexed = set()
        else:
            dropped = {m: f"an RGB colour mask among {len(indexed)} index masks; save every mask in one format"
                       for m in rgb}
            rgb = set()
    if rgb:
        if colours is None:
            example = _unpack(int(scans[next(iter(rgb))].values[-1]))
            raise SftuneError(f"the masks are RGB colour images (e.g. colour {example}) and no colour table was found; "
                              f"put classes.json ([{{\"name\": ..., \"color\": [r, g, b]}}, ...]) or labelmap.txt "
                              f"(name:r,g,b::) beside the data, or pass colormap")
        return "rgb", f"RGB colour masks mapped to classes through a table of {len(colours)} colours", dropped
    kept = [scans[m] for m in indexed]
    kinds = Counter(s.kind for s in kept)
    values = set().union(*({int(v) for v in _index_values(s)} for s in kept))
    if kinds["gray16"]:
        return ("16bit", f"16-bit grayscale masks: pixel values are class indices ({len(values)} values: "
                         f"{_span(values)})", dropped)
    if kinds["palette"] == len(kept):
        return ("palette", f"palette PNGs read as palette indices, not colours: the index is the class "
                           f"({len(values)} values: {_span(values)})", dropped)
    if not kinds["palette"] and values <= {0, 255} and 255 in values:
        return ("binary", "binary masks (0/255): 255 is read as class 1 (foreground), 0 as class 0 (background); "
                          "255 is not void here, ignore_index only marks padding and unlabeled images", dropped)
    if not kinds["palette"] and _jpeg_binary(kept):
        return ("binary", "binary JPEG masks (values near 0 and 255, blurred by compression): >= 128 is read as "
                          "class 1 (foreground), below as class 0 (background)", dropped)
    note = " (RGB files whose colours are all gray: the red channel is read)" if kinds["rgb"] else ""
    return "index", f"8-bit masks: pixel values are class indices{note} ({len(values)} values: {_span(values)})", dropped


def _no_pairs(root: Path, description: str, faults: list[_Fault], what: str = "") -> None:
    first = next((f for f in faults if f.skip), None)
    why = f"; first problem: {first.where}: {first.reason}{missing_paths_hint([first.where])}" if first else ""
    raise SftuneError(f"no usable {what}image/mask pairs under '{root}' ({description}; expected {LAYOUT_HELP}){why}")


def _span(values: set[int]) -> str:
    ordered = sorted(values)
    if len(ordered) > 1 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(map(str, ordered[:12])) + (", ..." if len(ordered) > 12 else "")


def random_split(samples: list[MaskSample], val_fraction: float, seed: int) -> tuple[list[MaskSample], list[MaskSample]]:
    """A seeded shuffle sends round(n * fraction) pairs (at least 1 when n >= 2) to val (data/splits.py)."""
    from ...data.splits import split_indices

    train, val = split_indices([0] * len(samples), val_fraction, seed, order=[str(s.image) for s in samples])
    by_path = lambda i: str(samples[i].image)  # noqa: E731
    return [samples[i] for i in sorted(train, key=by_path)], [samples[i] for i in sorted(val, key=by_path)]


def _relative(path: Path, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)
