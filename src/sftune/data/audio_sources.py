"""Find labeled audio: class folders, a CSV manifest, or labels taken from file names.

Layouts understood (``path`` is ``--data``):

* ``path/train/<class>/*`` with optionally ``path/val|valid|validation|test/<class>/*``;
* ``path/<class>/*`` (no split on disk: sftune makes one);
* ``path`` = a ``.csv``/``.tsv`` manifest ``path,label[,split][,group]`` (split: train, val or
  test; relative paths resolve against the manifest's folder and must stay inside it unless
  ``data.allow_outside_root``);
* any folder with ``data.label_pattern``: every audio file under it (``train/`` and ``val/``/
  ``test/`` sub-folders are respected) takes its class from its file name, the pattern's
  first group, e.g. ``'^(\\d+)_'`` for the Free Spoken Digit Dataset's
  ``{digit}_{speaker}_{index}.wav``.

The validation split, in order of precedence: a given one (``data.val_path``, a val/test
folder or split column); ``data.val_pattern`` (files whose name matches are validation: FSDD's
official test split is ``'_[0-4]\\.wav$'``); with groups (``data.group_pattern``, or a
``group`` column) whole groups go to validation (:func:`sftune.data.splits.group_split_indices`),
so one speaker is never on both sides; else the stratified split every task uses. When groups
are known and a split puts one group on both sides, a warning names them.

Files that cannot be used (empty, corrupt, zero-length, silent: :mod:`sftune.data.audio`) are
skipped and counted, or fatal with ``--strict``. Class names follow :mod:`sftune.data.labels`.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SftuneError
from .audio import AUDIO_EXTENSIONS, inspect_audio, is_audio_file
from .checks import (conflicting_label_warnings, duplicate_warnings, keep_copies_together, leakage_warnings,
                     mixed_label_warnings)
from .labels import class_name, normalise_labels
from .sources import VAL_DIR_NAMES, Sample, _fingerprint, _ignored, _inside, _relative, _walk_files
from .splits import group_split_indices, shared_groups, split_indices

HELD_OUT_DIR_NAMES = (*VAL_DIR_NAMES, "test")
_NOT_AUDIO = f"not an audio file (read: {' '.join(AUDIO_EXTENSIONS)}); not used"


@dataclass
class LabeledAudio:
    """Train/val audio samples and what was learned while finding them."""

    train: list[Sample]
    val: list[Sample]
    classes: list[str]
    split: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path or source, problem)
    fingerprint: str = ""
    digests: dict[Path, str] = field(default_factory=dict)
    groups: dict[Path, str] = field(default_factory=dict)  # file -> group (speaker), when known
    rates: dict[Path, int] = field(default_factory=dict)  # file -> its sample rate (Hz)
    channels: dict[Path, int] = field(default_factory=dict)  # file -> channels stored

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def common_rate(self) -> int:
        """The most common sample rate of the training files (Hz); ties: the higher."""
        counts = Counter(self.rates[s.path] for s in self.train)
        return max(counts, key=lambda r: (counts[r], r))

    def multichannel(self) -> int:
        """How many of the files are stereo (or more channels): they are downmixed to mono."""
        return sum(1 for s in self.train + self.val if self.channels.get(s.path, 1) > 1)


def _pattern_value(pattern: re.Pattern[str] | None, name: str) -> str | None:
    if pattern is None:
        return None
    m = pattern.search(name)
    return class_name(m.group(1)) if m and m.group(1) is not None else None


def scan_audio_class_folders(root: Path, unused: list[tuple[str, str]]) -> list[Sample]:
    """``root/<class>/**/<audio>`` -> samples; files that are not audio go to ``unused``."""
    if not root.is_dir():
        raise SftuneError(f"data folder '{root}' does not exist; pass a folder of class sub-folders or a CSV manifest")
    class_dirs = [p for p in sorted(root.iterdir()) if not _ignored(p.name) and p.is_dir()]
    loose = [p for p in sorted(root.iterdir()) if not _ignored(p.name) and p.is_file() and is_audio_file(p)]
    if not class_dirs:
        hint = (f"; its {len(loose)} audio files are in no class folder: take the class from their names with "
                f"--set data.label_pattern='^(\\d+)_' (the first group is the class)") if loose else ""
        raise SftuneError(f"'{root}' has no class sub-folders; expected {root}/<class>/<audio file> or a CSV "
                          f"manifest with path,label columns{hint}")
    for p in loose:
        unused.append((str(p), "an audio file beside the class folders, in none of them (no class); not used"))
    samples: list[Sample] = []
    for class_dir in class_dirs:
        files = []
        for f in _walk_files(class_dir, unused):
            (files.append(f) if is_audio_file(f) else unused.append((str(f), _NOT_AUDIO)))
        if not files:
            raise SftuneError(f"class folder '{class_dir}' has no audio files ({', '.join(AUDIO_EXTENSIONS[:4])}, ...); "
                              f"add recordings or remove the folder")
        label = class_name(class_dir.name) or class_dir.name
        samples.extend(Sample(f, label) for f in sorted(files))
    return samples


def scan_named_files(root: Path, pattern: re.Pattern[str], unused: list[tuple[str, str]]) -> list[Sample]:
    """Every audio file under ``root`` labeled by ``pattern`` on its file name; names that do not
    match go to ``unused``."""
    samples = []
    for f in sorted(_walk_files(root, unused)):
        if not is_audio_file(f):
            unused.append((str(f), _NOT_AUDIO))
            continue
        label = _pattern_value(pattern, f.name)
        if label is None:
            unused.append((str(f), f"file name does not match data.label_pattern '{pattern.pattern}' (no class); not used"))
        else:
            samples.append(Sample(f, label))
    if not samples:
        raise SftuneError(f"no audio file under '{root}' has a name matching data.label_pattern '{pattern.pattern}'; "
                          f"e.g. '^(\\d+)_' takes the class 7 from 7_jackson_0.wav")
    return samples


def read_audio_manifest(path: Path, allow_outside_root: bool = False
                        ) -> tuple[list[Sample], list[Sample] | None, dict[Path, str]]:
    """``path,label[,split][,group]`` CSV/TSV -> (train, val or None, file -> group)."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise SftuneError(f"manifest '{path}' is not a readable UTF-8 CSV/TSV file ({e}); save it as UTF-8 text "
                          f"with path,label columns") from None
    for needed in ("path", "label"):
        if needed not in header:
            raise SftuneError(f"manifest '{path}' has no '{needed}' column (columns: {', '.join(header) or 'none'}); "
                              f"the first line must name the columns, e.g. path,label,split,group")
    root = path.parent.resolve()
    train: list[Sample] = []
    val: list[Sample] = []
    groups: dict[Path, str] = {}
    for line_no, raw in enumerate(rows, start=2):
        if None in raw:
            raise SftuneError(f"manifest '{path}' line {line_no}: more fields than the header names "
                              f"({', '.join(header)}); quote values that contain '{delimiter}'")
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not row["path"] or not row["label"]:
            raise SftuneError(f"manifest '{path}' line {line_no}: empty path or label; every row needs both")
        file = Path(row["path"])
        file = file if file.is_absolute() else path.parent / file
        if not allow_outside_root and not _inside(file, root):
            raise SftuneError(f"manifest '{path}' line {line_no}: '{row['path']}' points outside the manifest's folder "
                              f"{root}; move the manifest up, or allow it with --set data.allow_outside_root=true")
        sample = Sample(file, class_name(row["label"]) or row["label"])
        split = (row.get("split") or "train").lower()
        if split in HELD_OUT_DIR_NAMES:
            val.append(sample)
        elif split == "train":
            train.append(sample)
        else:
            raise SftuneError(f"manifest '{path}' line {line_no}: split '{split}' must be train, val or test")
        if row.get("group"):
            groups[file] = row["group"]
    return train, (val or None), groups


def check_audio(samples: list[Sample], strict: bool, workers: int = 4
                ) -> tuple[list[Sample], list[tuple[str, str]], dict[Path, str], dict[Path, int], dict[Path, int]]:
    """Decode every file once (in threads): (usable samples, skipped (path, reason), digests,
    sample rates, channels). ``strict``: the first unusable file is an error naming it."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda s: inspect_audio(Path(s.path)), samples))
    good, skipped = [], []
    digests: dict[Path, str] = {}
    rates: dict[Path, int] = {}
    channels: dict[Path, int] = {}
    for sample, (digest, reason, rate, n_channels) in zip(samples, results):
        if reason is None:
            good.append(sample)
            digests[sample.path], rates[sample.path], channels[sample.path] = digest, rate, n_channels  # type: ignore[assignment]
        elif strict:
            raise SftuneError(f"{sample.path}: {reason}; fix or delete the file, or drop --strict to skip it")
        else:
            skipped.append((str(sample.path), reason))
    return good, skipped, digests, rates, channels


def _read_source(root: Path, label_re: re.Pattern[str] | None, allow_outside_root: bool,
                 unused: list[tuple[str, str]], nested: bool = True
                 ) -> tuple[list[Sample], list[Sample] | None, dict[Path, str]]:
    if root.is_file():
        if root.suffix.lower() not in (".csv", ".tsv"):
            raise SftuneError(f"'{root}' is a file but not a .csv/.tsv manifest; pass a folder or a manifest")
        return read_audio_manifest(root, allow_outside_root)
    held_out = next((root / n for n in HELD_OUT_DIR_NAMES if (root / n).is_dir()), None) if nested else None
    if nested and (root / "train").is_dir():
        if label_re is not None:
            return (scan_named_files(root / "train", label_re, unused),
                    scan_named_files(held_out, label_re, unused) if held_out else None, {})
        return (scan_audio_class_folders(root / "train", unused),
                scan_audio_class_folders(held_out, unused) if held_out else None, {})
    if label_re is not None:
        return scan_named_files(root, label_re, unused), None, {}
    return scan_audio_class_folders(root, unused), None, {}


def find_labeled_audio(path: str | Path, val_path: str | Path | None = None, val_fraction: float = 0.2,
                       seed: int = 42, strict: bool = False, allow_outside_root: bool = False,
                       label_pattern: str | None = None, group_pattern: str | None = None,
                       val_pattern: str | None = None) -> LabeledAudio:
    """Resolve ``--data`` (and ``data.val_path``) into checked train/val audio samples (see the
    module docstring). Raises SftuneError (one line) when no usable data is found; with
    ``strict`` the first skipped file or data warning is an error too."""
    root = Path(path).expanduser()
    if not root.exists():
        raise SftuneError(f"data path '{root}' does not exist; pass a folder of audio files or a CSV manifest with --data")
    label_re = re.compile(label_pattern) if label_pattern else None
    group_re = re.compile(group_pattern) if group_pattern else None
    val_re = re.compile(val_pattern) if val_pattern else None
    unused: list[tuple[str, str]] = []
    train, val, groups = _read_source(root, label_re, allow_outside_root, unused)
    source = str(root)
    if val_path is not None:
        val_root = Path(val_path).expanduser()
        if not val_root.exists():
            raise SftuneError(f"validation path '{val_root}' does not exist (data.val_path)")
        val, _, val_groups = _read_source(val_root, label_re, allow_outside_root, unused, nested=False)
        groups.update(val_groups)
        source = str(val_root)
    if strict and unused:
        where, problem = unused[0]
        raise SftuneError(f"{where}: {problem} (or drop --strict to only warn)")
    if group_re is not None:  # the pattern wins over a manifest's group column
        for s in train + (val or []):
            g = _pattern_value(group_re, s.path.name)
            if g is None:
                unused.append((str(s.path), f"file name does not match data.group_pattern '{group_re.pattern}'; "
                                            f"its group is unknown"))
            else:
                groups[s.path] = g

    everything = train + (val or [])
    good, skipped, digests, rates, channels = check_audio(everything, strict)
    kept = {s.path for s in good}
    train = [s for s in train if s.path in kept]
    val = None if val is None else [s for s in val if s.path in kept]

    rename, name_warnings = normalise_labels([s.label for s in train + (val or [])], source)
    if rename:
        train = [Sample(s.path, rename.get(s.label, s.label)) for s in train]
        val = None if val is None else [Sample(s.path, rename.get(s.label, s.label)) for s in val]
    if not train:
        raise SftuneError(f"no usable training audio under '{root}' ({len(skipped)} file(s) skipped, e.g. "
                          f"{skipped[0][0]}: {skipped[0][1]})" if skipped else f"no training audio under '{root}'")

    if val is None and val_re is not None:
        held = [s for s in train if val_re.search(s.path.name)]
        train = [s for s in train if not val_re.search(s.path.name)]
        val = held
        split: dict = {"method": "pattern", "val_pattern": val_re.pattern, "source": f"{root} (data.val_pattern)"}
        if not held or not train:
            raise SftuneError(f"data.val_pattern '{val_re.pattern}' matches {'no' if not held else 'every'} file name "
                              f"under '{root}'; it must pick some files for validation and leave others for training")
    elif val is None and groups:
        known = [s for s in train if s.path in groups]
        unknown = [s for s in train if s.path not in groups]
        tr, va = group_split_indices([groups[s.path] for s in known], val_fraction, seed)
        val = [known[i] for i in va]
        train = [known[i] for i in tr] + unknown  # a file of no known group trains
        split = {"method": "group", "seed": seed, "val_fraction": val_fraction,
                 "val_groups": sorted({groups[s.path] for s in val})}
    elif val is None:
        tr, va = split_indices([s.label for s in train], val_fraction, seed, order=[str(s.path) for s in train])
        train, val = [train[i] for i in tr], [train[i] for i in va]
        split = {"method": "stratified", "seed": seed, "val_fraction": val_fraction}
        train, val, moved = keep_copies_together(train, val, lambda s: digests[s.path])
        if moved:
            split["copies_kept_in_train"] = moved
    else:
        split = {"method": "given", "source": str(val_path or root)}
    if not val:
        raise SftuneError(f"no validation audio: add {root}/val/<class>/..., a split column, data.val_pattern, "
                          f"or more recordings (or groups)")
    classes = sorted({s.label for s in train})
    if len(classes) < 2:
        raise SftuneError(f"'{root}' has only one class ('{classes[0]}') for training; classification needs at least two")
    unseen = sorted({s.label for s in val} - set(classes))
    if unseen:
        raise SftuneError(f"validation has classes that training lacks: {', '.join(unseen)}; the split (or "
                          f"data.val_pattern / data.group_pattern) left no training recordings of them")

    both = shared_groups([groups.get(s.path) for s in train], [groups.get(s.path) for s in val])
    group_warnings = []
    if both:
        shown = ", ".join(map(str, both[:8])) + (f" and {len(both) - 8} more" if len(both) > 8 else "")
        group_warnings.append((source, f"group(s) {shown} are in both training and validation: the score measures "
                                       f"groups (speakers) the model has heard; for unseen ones drop the given "
                                       f"split / data.val_pattern and let data.group_pattern split by group"))
    warnings = (unused + name_warnings + group_warnings + leakage_warnings(train, val, digests)
                + conflicting_label_warnings(train + val, digests) + duplicate_warnings(train, digests, "training")
                + duplicate_warnings(val, digests, "validation") + mixed_label_warnings(root, set(classes)))
    if warnings and strict:
        where, problem = warnings[0]
        raise SftuneError(f"{where}: {problem} (or drop --strict to only warn)")
    split["val_files"] = sorted(_relative(s.path, root) for s in val)
    fingerprint = _fingerprint([(s.label, digests[s.path]) for s in train + val])
    return LabeledAudio(train=train, val=val, classes=classes, split=split, skipped=skipped, warnings=warnings,
                        fingerprint=fingerprint, digests=digests, groups=groups, rates=rates, channels=channels)


def find_unlabeled_audio(paths: list[str | Path], unused: list[tuple[str, str]] | None = None) -> list[Path]:
    """Files and folders given to ``predict`` -> audio files in a stable order (folders walked;
    what they hold that is not audio goes to ``unused``)."""
    out: list[Path] = []
    for p in map(lambda x: Path(x).expanduser(), paths):
        if p.is_dir():
            found = []
            for f in _walk_files(p, unused):
                if is_audio_file(f):
                    found.append(f)
                elif unused is not None:
                    unused.append((str(f), _NOT_AUDIO))
            out.extend(sorted(found))
        elif p.is_file():
            out.append(p)
        else:
            raise SftuneError(f"'{p}' does not exist; pass audio files or folders of audio files")
    if not out:
        raise SftuneError(f"no audio files found in {', '.join(map(str, paths))}")
    return out


def labeled_audio_samples(path: Path, label_pattern: str | None, val_pattern: str | None = None,
                          allow_outside_root: bool = False) -> list[Sample]:
    """Labeled audio for ``sftune eval``/``drift``: a manifest (its val/test rows if it has a split,
    else all), the val/test folder of a train/val root, class folders, or a folder labeled by
    ``label_pattern`` (the bundle's data.label_pattern). Without a held-out part, the files whose
    names match ``val_pattern`` (the bundle's data.val_pattern) when it picks some but not all."""
    label_re = re.compile(label_pattern) if label_pattern else None
    unused: list[tuple[str, str]] = []
    train, val, _ = _read_source(path.expanduser(), label_re, allow_outside_root, unused)
    if val is not None:
        return val
    if val_pattern:
        held = [s for s in train if re.search(val_pattern, s.path.name)]
        if 0 < len(held) < len(train):
            return held
    return train


def is_audio_data(path: str | Path, probe: int = 200) -> bool:
    """task=auto: a manifest whose first ``path`` entries are audio files, or a folder where the
    first ``probe`` data files found are mostly audio (cheap: names only, nothing decoded)."""
    import os

    p = Path(path).expanduser()
    try:
        if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
            with p.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
                column = next((f for f in reader.fieldnames or [] if (f or "").strip().lower() == "path"), None)
                if column is None:
                    return False
                names = [row.get(column) or "" for _, row in zip(range(20), reader)]
            return bool(names) and all(is_audio_file(Path(n.strip())) for n in names)
        if not p.is_dir():
            return False
        audio = other = 0
        for _, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not _ignored(d))
            for f in files:
                if _ignored(f):
                    continue
                if is_audio_file(Path(f)):
                    audio += 1
                elif Path(f).suffix.lower() not in (".csv", ".tsv", ".txt", ".md", ".json", ".yaml", ".yml", ".py"):
                    other += 1
            if audio + other >= probe:
                break
        return audio > 0 and audio >= other
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
