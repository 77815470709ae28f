"""Find labeled images: an image folder, a flat class folder, or a CSV manifest.

Layouts understood (``path`` is what the user passed as ``--data``):

* ``path/train/<class>/*`` and optionally ``path/val/<class>/*``
* ``path/<class>/*`` (no split on disk: a stratified, seeded split is made)
* ``path`` = a ``.csv``/``.tsv`` manifest with ``path,label`` columns (and an
  optional ``split`` column holding ``train``/``val``); relative paths are
  resolved against the manifest's folder, and must stay inside it unless
  ``allow_outside_root`` (a manifest from elsewhere must not read ``../../.ssh``).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SftuneError
from .checks import conflicting_label_warnings, leakage_warnings, mixed_label_warnings
from .images import inspect_image, is_image_file

VAL_DIR_NAMES = ("val", "valid", "validation")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


@dataclass
class LabeledImages:
    """Train/val samples plus what was learned while finding them."""

    train: list[Sample]
    val: list[Sample]
    classes: list[str]
    split: dict = field(default_factory=dict)  # how val was obtained (recorded in the bundle)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, problem): train/val leakage, label mix-ups
    fingerprint: str = ""  # sha256 over (label, file content) of every sample
    digests: dict[Path, str] = field(default_factory=dict)  # sha256 of each file's content

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}


# ----------------------------------------------------------------------------- scanning


def scan_class_folders(root: Path) -> list[Sample]:
    """``root/<class>/**/<image>`` -> samples; every class folder must hold images."""
    if not root.is_dir():
        raise SftuneError(f"data folder '{root}' does not exist; pass a folder of class sub-folders or a CSV manifest")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise SftuneError(
            f"'{root}' has no class sub-folders; expected {root}/<class>/<image> (or train/<class>/...), "
            f"or pass a CSV manifest with path,label columns"
        )
    samples: list[Sample] = []
    for class_dir in class_dirs:
        files = sorted(p for p in _walk_files(class_dir) if is_image_file(p))
        if not files:
            raise SftuneError(
                f"class folder '{class_dir}' has no images ({', '.join(e.lstrip('.') for e in ('.jpg', '.png', '.webp', '.bmp'))}...); "
                f"add images or remove the folder"
            )
        samples.extend(Sample(f, class_dir.name) for f in files)
    return samples


def _walk_files(folder: Path) -> list[Path]:
    # os.walk without followlinks cannot loop forever on symlink cycles.
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames)
    return out


def read_manifest(path: Path, allow_outside_root: bool = False) -> tuple[list[Sample], list[Sample] | None]:
    """CSV/TSV manifest -> (train samples, val samples or None when no split column).

    Paths resolve against the manifest's folder; one that lands outside it (``../``, an
    absolute path, a symlink out) is refused unless ``allow_outside_root``."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise SftuneError(f"manifest '{path}' is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:  # NUL bytes, a field over the csv module's size limit, ...
        raise SftuneError(f"manifest '{path}' is not a readable {'TSV' if delimiter == chr(9) else 'CSV'} file "
                          f"(line {getattr(e, 'line_num', None) or reader.line_num}: {e}); save it as plain UTF-8 "
                          f"text with path,label columns") from None
    for needed in ("path", "label"):
        if needed not in header:
            raise SftuneError(f"manifest '{path}' has no '{needed}' column (columns: {', '.join(header) or 'none'}); "
                              f"the first line must name the columns, e.g. path,label")
    root = path.parent.resolve()
    train: list[Sample] = []
    val: list[Sample] = []
    has_split = "split" in header
    for line_no, row in enumerate(rows, start=2):
        if None in row:  # csv.DictReader puts fields beyond the header in a list under None
            raise SftuneError(
                f"manifest '{path}' line {line_no}: {len(header) + len(row[None])} fields but the header names "
                f"{len(header)} ({', '.join(header)}); quote values that contain '{delimiter}'"
            )
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if any("\x00" in v for v in row.values()):  # no file name can hold one; a binary file or a bad export
            raise SftuneError(f"manifest '{path}' line {line_no}: holds a NUL byte; save the manifest as plain UTF-8 text")
        if not row["path"] or not row["label"]:
            raise SftuneError(f"manifest '{path}' line {line_no}: empty path or label (a missing column?); "
                              f"every row needs a path and a label")
        file = Path(row["path"])
        file = file if file.is_absolute() else path.parent / file
        if not allow_outside_root and not _inside(file, root):
            raise SftuneError(
                f"manifest '{path}' line {line_no}: '{row['path']}' points outside the manifest's folder {root}; "
                f"move the manifest up to a folder that holds the images, or allow it with "
                f"--set data.allow_outside_root=true"
            )
        sample = Sample(file, row["label"])
        split = row.get("split", "train").lower() if has_split else "train"
        if split in VAL_DIR_NAMES:
            val.append(sample)
        elif split in ("train", ""):
            train.append(sample)
        else:
            raise SftuneError(f"manifest '{path}' line {line_no}: split '{split}' must be train or val")
    return train, (val if has_split and val else None)


def _inside(file: Path, root: Path) -> bool:
    # resolve() follows symlinks and '..', so neither can smuggle a path out of the root.
    try:
        return file.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop: not inside anything; the image check reports it
        return True


# ------------------------------------------------------------------------------- checks


def check_images(samples: list[Sample], strict: bool, workers: int = 8) -> tuple[list[Sample], list[tuple[str, str]], dict[Path, str]]:
    """Decode-check every file in parallel; drop (or, if strict, refuse) unreadable ones."""
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding releases the GIL
        results = list(pool.map(lambda s: inspect_image(s.path), samples))
    good: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    digests: dict[Path, str] = {}
    for sample, (digest, reason) in zip(samples, results):
        if reason is None:
            good.append(sample)
            digests[sample.path] = digest  # type: ignore[assignment]
        else:
            if strict:
                raise SftuneError(f"{sample.path}: {reason}; fix or delete the file, or drop --strict to skip it")
            skipped.append((str(sample.path), reason))
    return good, skipped, digests


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per class, a seeded shuffle sends round(n * fraction) images (at least 1 when n >= 2) to val."""
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    rng = random.Random(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda s: str(s.path))
        rng.shuffle(items)
        n_val = min(len(items) - 1, max(1, round(len(items) * val_fraction))) if len(items) >= 2 else 0
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return train, val


# ------------------------------------------------------------------------------ entry


def find_labeled_images(
    path: str | Path,
    val_path: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 42,
    strict: bool = False,
    allow_outside_root: bool = False,
) -> LabeledImages:
    """Resolve ``--data`` (and optional ``--val-data``) into checked train/val samples.

    Unreadable files are skipped and listed in ``skipped``; train/val leakage and
    label mix-ups are listed in ``warnings``. ``strict`` makes the first of either fatal."""
    root = Path(path).expanduser()
    if not root.exists():
        raise SftuneError(f"data path '{root}' does not exist; pass an image folder or a CSV manifest with --data")
    train, val = _read_source(root, allow_outside_root=allow_outside_root)
    if val_path is not None:
        val_root = Path(val_path).expanduser()
        if not val_root.exists():
            raise SftuneError(f"validation path '{val_root}' does not exist (data.val_path)")
        val, _ = _read_source(val_root, allow_nested=False, allow_outside_root=allow_outside_root)

    train, skipped, digests = check_images(train, strict)
    if val is not None:
        val, skipped_val, val_digests = check_images(val, strict)
        skipped += skipped_val
        digests.update(val_digests)

    classes = sorted({s.label for s in train})
    if not train:
        raise SftuneError(f"no readable training images under '{root}'")
    if len(classes) < 2:
        raise SftuneError(f"'{root}' has only one class ('{classes[0]}'); classification needs at least two class folders")

    if val is None:
        train, val = stratified_split(train, val_fraction, seed)
        split = {"method": "stratified", "seed": seed, "val_fraction": val_fraction}
    else:
        split = {"method": "given", "source": str(val_path or root)}
    if not val:
        raise SftuneError(f"no validation images: add {root}/val/<class>/... or more images per class")
    unseen = sorted({s.label for s in val} - set(classes))
    if unseen:
        raise SftuneError(
            f"validation has classes that training lacks: {', '.join(unseen)}; add training images for them "
            f"or remove them from the validation set"
        )
    warnings = (leakage_warnings(train, val, digests) + conflicting_label_warnings(train + val, digests)
                + mixed_label_warnings(root, set(classes)))
    if warnings and strict:
        where, problem = warnings[0]
        raise SftuneError(f"{where}: {problem} (or drop --strict to only warn)")
    split["val_files"] = sorted(_relative(s.path, root) for s in val)
    fingerprint = _fingerprint([(s.label, digests[s.path]) for s in train + val])
    return LabeledImages(train=train, val=val, classes=classes, split=split, skipped=skipped, warnings=warnings,
                         fingerprint=fingerprint, digests=digests)


def _read_source(root: Path, allow_nested: bool = True,
                 allow_outside_root: bool = False) -> tuple[list[Sample], list[Sample] | None]:
    if root.is_file():
        if root.suffix.lower() not in (".csv", ".tsv"):
            raise SftuneError(f"'{root}' is a file but not a .csv/.tsv manifest; pass a folder or a manifest")
        return read_manifest(root, allow_outside_root)
    if allow_nested and (root / "train").is_dir():
        val_dir = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)
        return scan_class_folders(root / "train"), (scan_class_folders(val_dir) if val_dir else None)
    return scan_class_folders(root), None


def _relative(path: Path, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _fingerprint(items: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for label, digest in sorted(items):
        h.update(f"{label}\0{digest}\n".encode())
    return h.hexdigest()


def find_unlabeled_images(paths: list[str | Path]) -> list[Path]:
    """Files and folders given to ``predict`` -> image files, in a stable order."""
    out: list[Path] = []
    for p in map(lambda x: Path(x).expanduser(), paths):
        if p.is_dir():
            out.extend(sorted(f for f in _walk_files(p) if is_image_file(f)))
        elif p.is_file():
            out.append(p)
        else:
            raise SftuneError(f"'{p}' does not exist; pass image files or folders of images")
    if not out:
        raise SftuneError(f"no images found in {', '.join(map(str, paths))}")
    return out
