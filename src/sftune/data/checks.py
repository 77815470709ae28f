"""Checks across the whole labeled set (images and texts), after every item has been read once.

Each returns ``(where, message)`` warnings: the run goes on (the count lands in
``metrics.json`` as ``data_warnings``, the list in ``lineage.json``) unless
``data.strict`` turns the first one into an error.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from .labels import as_number, text_identity

if TYPE_CHECKING:
    from .sources import Sample
    from .texts import TextSample


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


def mixed_label_warnings(source: Path | str, labels: set[str]) -> list[tuple[str, str]]:
    """Labels that are numbers in some rows and names in others ('0', '1', 'cat'): usually two
    label schemes mixed up. (One number written two ways, '1' and '1.0', is one class by the
    class-name rule in :mod:`sftune.data.labels`: merged with its own warning before this check.)"""
    numbers = sorted(lbl for lbl in labels if as_number(lbl) is not None)
    names = sorted(lbl for lbl in labels if as_number(lbl) is None)
    if numbers and names:
        return [(str(source), f"labels mix numbers ({', '.join(numbers[:3])}) and names ({', '.join(names[:3])}); "
                              f"all are treated as class names — use one kind of label")]
    return []


# --------------------------------------------------------------------------------- texts
#
# Texts are compared by a hash of their normalised form (NFC, case-folded, whitespace runs
# collapsed): "A  movie." and "a movie." are the same text. A sentence pair is one text.


def text_digest(text: str, pair: str | None = None) -> bytes:
    h = hashlib.blake2b(text_identity(text).encode(), digest_size=16)
    if pair is not None:
        h.update(b"\x00" + text_identity(pair).encode())
    return h.digest()


def _where(s: TextSample, fallback: str) -> str:
    return getattr(s, "where", "") or fallback


def _label_text(label: str | tuple[str, ...]) -> str:
    return repr(label) if isinstance(label, str) else "[" + ", ".join(repr(x) for x in label) + "]"


def _label_id(label: str | tuple[str, ...]) -> object:
    return label if isinstance(label, str) else frozenset(label)


def _also(places: list[str], limit: int = 5) -> str:
    shown = ", ".join(places[:limit])
    return shown + (f" and {len(places) - limit} more" if len(places) > limit else "")


def text_leakage_warnings(train: list[TextSample], val: list[TextSample]) -> list[tuple[str, str]]:
    """A validation text that is also a training text: the validation score would be inflated."""
    first: dict[bytes, TextSample] = {}
    for s in train:
        first.setdefault(text_digest(s.text, s.text_pair), s)
    out: list[tuple[str, str]] = []
    for i, s in enumerate(val):
        twin = first.get(text_digest(s.text, s.text_pair))
        if twin is not None:
            out.append((_where(s, f"validation row {i}"),
                        f"same text as training {_where(twin, 'row')} (train/val leakage inflates the validation "
                        f"score); keep it on one side"))
    return out


def text_conflict_warnings(samples: list[TextSample]) -> list[tuple[str, str]]:
    """The same text under two or more labels: at most one of them can be right."""
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[text_digest(s.text, s.text_pair)].append(i)
    out: list[tuple[str, str]] = []
    for idx in groups.values():
        if len(idx) < 2 or len({_label_id(samples[i].label) for i in idx}) < 2:
            continue
        by_label: dict[object, list[str]] = {}
        shown: dict[object, str] = {}
        for i in idx:
            key = _label_id(samples[i].label)
            by_label.setdefault(key, []).append(_where(samples[i], f"row {i}"))
            shown.setdefault(key, _label_text(samples[i].label))
        listed = "; ".join(f"{shown[k]} at {_also(places, 3)}" for k, places in by_label.items())
        out.append((_where(samples[idx[0]], f"row {idx[0]}"),
                    f"the same text is labelled differently: {listed}; keep one label per text"))
    return out


def text_duplicate_warnings(samples: list[TextSample], side: str) -> list[tuple[str, str]]:
    """The same text (with the same label) more than once on one side of the split: each copy
    weighs it again in training, or counts it again in the validation score. Copies under
    different labels are left to :func:`text_conflict_warnings`."""
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[text_digest(s.text, s.text_pair)].append(i)
    out: list[tuple[str, str]] = []
    for idx in groups.values():
        if len(idx) < 2 or len({_label_id(samples[i].label) for i in idx}) > 1:
            continue
        others = [_where(samples[i], f"row {i}") for i in idx[1:]]
        out.append((_where(samples[idx[0]], f"row {idx[0]}"),
                    f"the same text occurs {len(idx)} times in {side} (also at {_also(others)}); each copy counts "
                    f"again — keep one"))
    return out
