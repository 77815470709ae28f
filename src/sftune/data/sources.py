"""Find labeled images: an image folder, a flat class folder, or a CSV manifest.

Layouts understood (``path`` is what the user passed as ``--data``):

* ``path/train/<class>/*`` and optionally ``path/val/<class>/*``
* ``path/<class>/*`` (no split on disk: a stratified, seeded split is made)
* ``path`` = a ``.csv``/``.tsv`` manifest with ``path,label`` columns (and an
  optional ``split`` column holding ``train``/``val``); relative paths are
  resolved against the manifest's folder, and must stay inside it unless
  ``allow_outside_root`` (a manifest from elsewhere must not read ``../../.ssh``).

Folder links are followed, as torchvision's ImageFolder and timm do, without looping (each
real folder is read once; a link to a folder that contains it is not followed). Whatever is
found but not used (a file that is not an image, a looping or repeated link, an image beside
the class folders) is named in the data's ``warnings``, as are train/val leakage, label
mix-ups and label spellings merged by the class-name rule (:mod:`sftune.data.labels`: folder
names and manifest labels are NFC; ``Ants``/``ants`` are one class). A split sftune makes
itself keeps byte-identical copies on the training side, so it never leaks.
"""

from __future__ import annotations

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SftuneError
from .checks import (conflicting_label_warnings, duplicate_warnings, keep_copies_together, leakage_warnings,
                     missing_class_warnings, mixed_label_warnings)
from .images import IMAGE_EXTENSIONS, inspect_image, is_image_file
from .labels import class_name, normalise_labels
from .tables import file_delimiter, manifest_path, missing_paths_hint

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
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, problem): unused files/links, merged
    # label spellings, train/val leakage, label mix-ups
    fingerprint: str = ""  # sha256 over (label, file content) of every sample
    digests: dict[Path, str] = field(default_factory=dict)  # sha256 of each file's content

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}


# ----------------------------------------------------------------------------- scanning


def scan_class_folders(root: Path, unused: list[tuple[str, str]] | None = None) -> list[Sample]:
    """``root/<class>/**/<image>`` -> samples; every class folder must hold images.

    Class names follow the rule in :mod:`sftune.data.labels` (NFC, trimmed). Folder links are
    followed (see :func:`_walk_files`); whatever is not used — a file that is not an image, a
    link that loops or repeats a folder, a broken link — is appended to ``unused`` as
    ``(path, reason)`` when a list is given. Hidden files and folders (``.DS_Store``,
    ``.ipynb_checkpoints``), ``Thumbs.db``/``desktop.ini`` and ``__MACOSX/`` are ignored without a word."""
    if not root.is_dir():
        raise SftuneError(f"data folder '{root}' does not exist; pass a folder of class sub-folders or a CSV manifest")
    note = unused.append if unused is not None else (lambda item: None)
    root_real = os.path.realpath(root)
    class_dirs = []
    for p in sorted(root.iterdir()):
        if _ignored(p.name):
            continue
        if not p.is_dir():
            if is_image_file(p):  # other files beside the class folders (README, a manifest) are no data
                note((str(p), "an image beside the class folders, in none of them (no class); not used"))
            continue
        real = os.path.realpath(p)
        if p.is_symlink() and (real == root_real or Path(root_real).is_relative_to(real)):
            note((str(p), f"links to {real}, a folder that contains it (a loop); not used as a class"))
            continue
        class_dirs.append(p)
    if not class_dirs:
        raise SftuneError(
            f"'{root}' has no class sub-folders; expected {root}/<class>/<image> (or train/<class>/...), "
            f"or pass a CSV manifest with path,label columns"
        )
    samples: list[Sample] = []
    for class_dir in class_dirs:
        files: list[Path] = []
        for f in _walk_files(class_dir, unused):
            if is_image_file(f):
                files.append(f)
            else:
                note((str(f), _NOT_AN_IMAGE))
        if not files:
            raise SftuneError(
                f"class folder '{class_dir}' has no images ({', '.join(e.lstrip('.') for e in ('.jpg', '.png', '.webp', '.bmp'))}...); "
                f"add images or remove the folder"
            )
        label = class_name(class_dir.name) or class_dir.name
        samples.extend(Sample(f, label) for f in sorted(files))
    return samples


_NOT_AN_IMAGE = f"not an image file (read: {' '.join(IMAGE_EXTENSIONS)}); not used"
# Windows Explorer writes Thumbs.db/desktop.ini into image folders; macOS's zip puts resource
# forks under __MACOSX/ (its ._x.jpg files are not images, and the folder is never a class).
_LITTER = ("thumbs.db", "desktop.ini", "__macosx")


def _ignored(name: str) -> bool:
    """Hidden entries and OS or archive litter (``.DS_Store``, ``__MACOSX/``): never data, never reported."""
    return name.startswith(".") or name.lower() in _LITTER


def _walk_files(folder: Path, unused: list[tuple[str, str]] | None = None) -> list[Path]:
    """Every file under ``folder`` (hidden entries aside), following folder links as torchvision's
    ImageFolder and timm do, and safe against loops: each real folder is read once, and a link
    to a folder that contains it is not followed. Links are followed after the folder's own
    tree, so a link into it repeats nothing. What is not followed goes to ``unused``."""
    note = unused.append if unused is not None else (lambda item: None)
    out: list[Path] = []
    root_real = os.path.realpath(folder)
    seen: dict[str, Path] = {root_real: folder}  # real folder -> the path it was read through
    tree: list[tuple[Path, str]] = [(folder, root_real)]
    links: list[tuple[Path, str]] = []
    while tree or links:
        if tree:
            current, current_real = tree.pop()
        else:
            current, current_real = links.pop()
            if current_real in seen:
                note((str(current), f"links to {current_real}, already read as {seen[current_real]}; not read twice"))
                continue
            seen[current_real] = current
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            note((str(current), f"folder cannot be read ({e.strerror or e}); its files were not used"))
            continue
        subdirs: list[tuple[Path, str]] = []
        sublinks: list[tuple[Path, str]] = []
        for entry in entries:
            if _ignored(entry.name):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:  # a link loop (ELOOP), permissions: the file check names it
                is_dir = False
            if not is_dir:
                if entry.is_symlink() and not os.path.exists(entry.path) and not is_image_file(path):
                    note((str(path), f"broken link to {os.readlink(entry.path)}; not used"))
                else:
                    out.append(path)  # an image-named broken link is reported by the image check
                continue
            real = os.path.realpath(entry.path)
            if not entry.is_symlink():
                if real not in seen:  # (a bind mount seen twice is read once)
                    seen[real] = path
                    subdirs.append((path, real))
            elif real == current_real or Path(current_real).is_relative_to(real):
                note((str(path), f"links to {real}, a folder that contains it (a loop); not followed"))
            else:
                sublinks.append((path, real))
        tree.extend(reversed(subdirs))
        links[:0] = list(reversed(sublinks))  # taken from the end: in name order, after the tree
    return out


def read_manifest(path: Path, allow_outside_root: bool = False) -> tuple[list[Sample], list[Sample] | None]:
    """CSV/TSV manifest -> (train samples, val samples or None when no split column).

    Paths resolve against the manifest's folder; one that lands outside it (``../``, an
    absolute path, a symlink out) is refused unless ``allow_outside_root``."""
    delimiter = file_delimiter(path)  # a ';'-separated .csv is read as such
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
        file = manifest_path(row["path"], path.parent)  # train\ants\x.jpg (Windows) is train/ants/x.jpg
        if not allow_outside_root and not _inside(file, root):
            raise SftuneError(
                f"manifest '{path}' line {line_no}: '{row['path']}' points outside the manifest's folder {root}; "
                f"move the manifest up to a folder that holds the images, or allow it with "
                f"--set data.allow_outside_root=true"
            )
        sample = Sample(file, class_name(row["label"]) or row["label"])
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
    """Per class, a seeded shuffle sends round(n * fraction) images (at least 1 when n >= 2) to val (data/splits.py)."""
    from .splits import split_indices

    train, val = split_indices([s.label for s in samples], val_fraction, seed, order=[str(s.path) for s in samples])
    return [samples[i] for i in train], [samples[i] for i in val]


def find_labeled_images(
    path: str | Path,
    val_path: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 42,
    strict: bool = False,
    allow_outside_root: bool = False,
) -> LabeledImages:
    """Resolve ``--data`` (and optional ``--val-data``) into checked train/val samples.

    Unreadable files are skipped and listed in ``skipped``. Listed in ``warnings``: what was
    found but not used (files that are not images, folder links that loop or repeat a folder),
    labels merged by the class-name rule (:mod:`sftune.data.labels`), train/val leakage and
    label mix-ups. ``strict`` makes the first of any of these fatal."""
    root = Path(path).expanduser()
    if not root.exists():
        raise SftuneError(f"data path '{root}' does not exist; pass an image folder or a CSV manifest with --data")
    unused: list[tuple[str, str]] = []
    notes: list[str] = []
    train, val = _read_source(root, allow_outside_root=allow_outside_root, unused=unused, notes=notes)
    if val_path is not None:
        val_root = Path(val_path).expanduser()
        if not val_root.exists():
            raise SftuneError(f"validation path '{val_root}' does not exist (data.val_path)")
        val, _ = _read_source(val_root, allow_nested=False, allow_outside_root=allow_outside_root, unused=unused)

    train, skipped, digests = check_images(train, strict)
    if not train:
        raise SftuneError(_nothing_readable(root, skipped))
    if val is not None:
        val, skipped_val, val_digests = check_images(val, strict)
        skipped += skipped_val
        digests.update(val_digests)

    # One class per name under the class-name rule: 'Ants'/'ants', '1'/'1.0' merge (with a warning).
    rename, name_warnings = normalise_labels([s.label for s in train + (val or [])], str(root))
    if rename:
        train = [Sample(s.path, rename.get(s.label, s.label)) for s in train]
        val = None if val is None else [Sample(s.path, rename.get(s.label, s.label)) for s in val]

    classes = sorted({s.label for s in train})
    if not train:
        raise SftuneError(f"no readable training images under '{root}'")
    if len(classes) < 2:
        raise SftuneError(f"'{root}' has only one class ('{classes[0]}'); classification needs at least two class folders")

    if val is None:
        train, val = stratified_split(train, val_fraction, seed)
        split = {"method": "stratified", "seed": seed, "val_fraction": val_fraction}
        train, val, moved = keep_copies_together(train, val, lambda s: digests[s.path])
        if moved:  # byte-identical copies: all kept in train, so the split itself never leaks
            split["copies_kept_in_train"] = moved
    else:
        split = {"method": "given", "source": str(val_path or root)}
    if notes:
        split["notes"] = notes
    if not val:
        raise SftuneError(f"no validation images: add {root}/val/<class>/... or more images per class")
    unseen = sorted({s.label for s in val} - set(classes))
    if unseen:
        raise SftuneError(
            f"validation has classes that training lacks: {', '.join(unseen)}; add training images for them "
            f"or remove them from the validation set"
        )
    warnings = (unused + name_warnings + leakage_warnings(train, val, digests)
                + conflicting_label_warnings(train + val, digests) + duplicate_warnings(train, digests, "training")
                + duplicate_warnings(val, digests, "validation") + mixed_label_warnings(root, set(classes))
                + missing_class_warnings(val_path or root, classes, {s.label for s in val}))
    if warnings and strict:
        where, problem = warnings[0]
        raise SftuneError(f"{where}: {problem} (or drop --strict to only warn)")
    split["val_files"] = sorted(_relative(s.path, root) for s in val)
    fingerprint = _fingerprint([(s.label, digests[s.path]) for s in train + val])
    return LabeledImages(train=train, val=val, classes=classes, split=split, skipped=skipped, warnings=warnings,
                         fingerprint=fingerprint, digests=digests)


def _read_source(root: Path, allow_nested: bool = True, allow_outside_root: bool = False,
                 unused: list[tuple[str, str]] | None = None,
                 notes: list[str] | None = None) -> tuple[list[Sample], list[Sample] | None]:
    """(train samples, val samples or None). How the layout was read, where that is not the
    obvious reading (test/ used as validation, a class named ``train``), goes to ``notes``."""
    note = notes.append if notes is not None else (lambda line: None)
    if root.is_file():
        if root.suffix.lower() not in (".csv", ".tsv"):
            raise SftuneError(_not_a_manifest(root))
        return read_manifest(root, allow_outside_root)
    train_dir = root / "train"
    if allow_nested and train_dir.is_dir():
        if not _has_subfolders(train_dir):
            others = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not _ignored(p.name) and p != train_dir]
            if others and not any(n.lower() in (*VAL_DIR_NAMES, "test") for n in others):
                # No class folders inside train/: it is a class beside its siblings, not the training split.
                note(f"'{train_dir}' holds no class folders: read as the class 'train' beside "
                     f"{', '.join(others[:5])} (a flat <class>/<image> layout)")
                return scan_class_folders(root, unused), None
            raise SftuneError(
                f"'{train_dir}' holds no class sub-folders; a folder named train/ is read as the training split "
                f"and needs train/<class>/<image>. If 'train' is a class, put its sibling classes beside it "
                f"({root}/<class>/<image>); else sort its images into train/<class>/ folders")
        val_dir = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)
        if val_dir is None and (root / "test").is_dir():
            val_dir = root / "test"  # train/ + test/ (a common download): test/ is the held-out set
            note(f"no val/ folder: '{val_dir}' is used as the validation set")
        return scan_class_folders(train_dir, unused), (scan_class_folders(val_dir, unused) if val_dir else None)
    return scan_class_folders(root, unused), None


def _has_subfolders(folder: Path) -> bool:
    try:
        return any(p.is_dir() and not _ignored(p.name) for p in folder.iterdir())
    except OSError:
        return True  # unreadable: scan_class_folders names the problem


def _not_a_manifest(path: Path) -> str:
    """Why a file given as image data cannot be read, and what would be (images or texts)."""
    from .texts import ACCEPTED

    return (f"'{path}' is a file but not a .csv/.tsv manifest (path,label columns) for images, nor text data: "
            f"{ACCEPTED}. Lines of '<class> <text>' become fastText lines with: "
            f"sed 's/^/__label__/' {path.name} > {path.stem}.fasttext.txt")


def _nothing_readable(root: Path, skipped: list[tuple[str, str]]) -> str:
    """Why no training image was read: how many paths do not exist, else the first reason."""
    if not skipped:
        return f"no readable training images under '{root}'"
    missing = [p for p, reason in skipped if reason.startswith("file not found")]
    if missing:
        return (f"no readable training images under '{root}': {len(missing)} of {len(skipped)} paths do not exist, "
                f"e.g. {missing[0]}{missing_paths_hint(missing)}; fix the paths")
    path, reason = skipped[0]
    return f"no readable training images under '{root}': all {len(skipped)} were skipped, e.g. {path}: {reason}"


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


def find_unlabeled_images(paths: list[str | Path], unused: list[tuple[str, str]] | None = None) -> list[Path]:
    """Files and folders given to ``predict`` -> image files, in a stable order.

    Folders are walked as for training (folder links followed, loop-safe); what a folder holds
    but is not used (files that are not images, looping or repeated links) is appended to
    ``unused`` as ``(path, reason)`` when a list is given."""
    out: list[Path] = []
    for p in map(lambda x: Path(x).expanduser(), paths):
        if p.is_dir():
            found = []
            for f in _walk_files(p, unused):
                if is_image_file(f):
                    found.append(f)
                elif unused is not None:
                    unused.append((str(f), _NOT_AN_IMAGE))
            out.extend(sorted(found))
        elif p.is_file():
            out.append(p)
        else:
            raise SftuneError(f"'{p}' does not exist; pass image files or folders of images")
    if not out:
        raise SftuneError(f"no images found in {', '.join(map(str, paths))}")
    return out
