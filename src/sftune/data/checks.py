"""Checks across the whole labeled set, after every file has been read once.

Each returns ``(where, message)`` warnings: the run goes on (the count lands in
``metrics.json`` as ``data_warnings``, the list in ``lineage.json``) unless
``data.strict`` turns the first one into an error.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sources import Sample


def leakage_warnings(train: list[Sample], val: list[Sample], digests: dict[Path, str]) -> list[tuple[str, str]]:
    """Byte-identical files on both sides of the split: the validation score would be inflated."""
    train_by_digest: dict[str, Sample] = {}
    for s in train:
        train_by_digest.setdefault(digests[s.path], s)
    out: list[tuple[str, str]] = []
    for s in val:
        twin = train_by_digest.get(digests[s.path])
        if twin is not None and twin.path == s.path:
            out.append((str(s.path), "listed for both training and validation (train/val leakage inflates the "
                                     "validation score); keep it on one side"))
        elif twin is not None:
            out.append((str(s.path), f"identical to training file {twin.path} (train/val leakage inflates the "
                                     f"validation score); remove one of the two copies"))
    return out


def conflicting_label_warnings(samples: list[Sample], digests: dict[Path, str]) -> list[tuple[str, str]]:
    """The same image content under two or more labels: at most one of them can be right."""
    labels: dict[str, set[str]] = defaultdict(set)
    first: dict[str, Sample] = {}
    for s in samples:
        labels[digests[s.path]].add(s.label)
        first.setdefault(digests[s.path], s)
    return [(str(first[d].path), f"the same image is labelled {', '.join(repr(x) for x in sorted(ls))}; "
                                 f"keep one label per image")
            for d, ls in labels.items() if len(ls) > 1]


def mixed_label_warnings(source: Path, labels: set[str]) -> list[tuple[str, str]]:
    """Labels that are numbers in some rows and names in others, or one number spelled two ways
    ('1' and '1.0'): every label is a class *name*, so these are all distinct classes."""
    numeric = {lbl: _as_number(lbl) for lbl in labels}
    numbers = sorted(lbl for lbl, v in numeric.items() if v is not None)
    names = sorted(lbl for lbl, v in numeric.items() if v is None)
    out: list[tuple[str, str]] = []
    if numbers and names:
        out.append((str(source), f"labels mix numbers ({', '.join(numbers[:3])}) and names ({', '.join(names[:3])}); "
                                 f"all are treated as class names — use one kind of label"))
    by_value: dict[float, list[str]] = defaultdict(list)
    for lbl in numbers:
        by_value[numeric[lbl]].append(lbl)  # type: ignore[index]
    for spellings in by_value.values():
        if len(spellings) > 1:
            out.append((str(source), f"labels {', '.join(repr(x) for x in spellings)} are the same number written "
                                     f"differently but count as different classes; write each label one way"))
    return out


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
