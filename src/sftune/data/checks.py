"""Checks across the whole labeled set (images and texts), after every item has been read once.

Each returns ``(where, message)`` warnings: the run goes on (the count lands in
``metrics.json`` as ``data_warnings``, the list in ``lineage.json``) unless
``data.strict`` turns the first one into an error.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .labels import as_number, text_identity

if TYPE_CHECKING:
    from .sources import Sample
    from .texts import TextSample


def keep_copies_together(train: list, val: list, key: Callable[[Any], Any]) -> tuple[list, list, int]:
    """For a split sftune makes itself (no val set given): val items whose ``key`` (a content
    hash) is also in train go back to train, so the split never leaks. Returns (train, val,
    how many moved). Copies on one side are still warned about (conflicting labels, repeats)."""
    in_train = {key(s) for s in train}
    moved = [s for s in val if key(s) in in_train]
    if not moved:
        return train, val, 0
    return train + moved, [s for s in val if key(s) not in in_train], len(moved)


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


def duplicate_warnings(samples: list[Sample], digests: dict[Path, str], side: str) -> list[tuple[str, str]]:
    """Byte-identical files with the same label on one side of the split: each copy weighs the
    image again (copies under different labels are left to :func:`conflicting_label_warnings`)."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: str(s.path)):
        groups[digests[s.path]].append(s)
    return [(str(g[0].path), f"{len(g)} identical files in {side} (also {_also([str(s.path) for s in g[1:]])}); "
                             f"each copy counts again — keep one")
            for g in groups.values() if len(g) > 1 and len({s.label for s in g}) == 1]


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


def missing_class_warnings(source: Path | str, classes: list[str], val_labels: set[str]) -> list[tuple[str, str]]:
    """Classes of training with no validation example: their validation recall and F1 are
    undefined (reported as null / "—", not 0) and the macro averages leave them out."""
    missing = [c for c in classes if c not in val_labels]
    if not missing:
        return []
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    return [(str(source), f"validation has no example of {len(missing)} class(es): {shown}; their recall and F1 "
                          f"are undefined (—) and the macro averages leave them out — add validation examples "
                          f"of them, or let sftune split (no val data)")]


# --------------------------------------------------------------------------------- texts
#
# Texts are compared by their normalised form (NFC, case-folded, whitespace runs collapsed),
# hashed by the dicts that group them: "A  movie." and "a movie." are the same text. A
# sentence pair is one text.


def text_digest(text: str, pair: str | None = None) -> str:
    """The normalised form two texts are compared by (a pair: both sentences, NUL-separated)."""
    return text_identity(text) if pair is None else f"{text_identity(text)}\x00{text_identity(pair)}"


def _where(s: TextSample, fallback: str) -> str:
    return getattr(s, "where", "") or fallback


def _label_text(label: str | tuple[str, ...]) -> str:
    return repr(label) if isinstance(label, str) else "[" + ", ".join(repr(x) for x in label) + "]"


def _label_id(label: str | tuple[str, ...]) -> object:
    return label if isinstance(label, str) else frozenset(label)


def _also(places: list[str], limit: int = 5) -> str:
    shown = ", ".join(places[:limit])
    return shown + (f" and {len(places) - limit} more" if len(places) > limit else "")


def text_warnings(train: list[TextSample], val: list[TextSample], train_keys: list[str] | None = None,
                  val_keys: list[str] | None = None) -> list[tuple[str, str]]:
    """All text checks, listed in this order: a validation text that is also a training text
    (leakage: the validation score would be inflated); the same text under two or more labels
    (at most one can be right); the same text with the same label more than once on one side
    (each copy weighs it again in training, or counts again in the validation score).
    ``*_keys``: the samples' :func:`text_digest`, when already computed."""
    train_keys = train_keys if train_keys is not None else [text_digest(s.text, s.text_pair) for s in train]
    val_keys = val_keys if val_keys is not None else [text_digest(s.text, s.text_pair) for s in val]
    counts = Counter(train_keys)
    counts.update(val_keys)
    shared = {k for k, n in counts.items() if n > 1}  # usually few: only these are looked at again
    if not shared:
        return []
    both, keys = train + val, train_keys + val_keys
    groups: dict[str, list[int]] = defaultdict(list)  # shared text -> indices into both, in file order
    for i, k in enumerate(keys):
        if k in shared:
            groups[k].append(i)
    n = len(train)
    out: list[tuple[str, str]] = []
    for i, k in enumerate(val_keys):
        if k in shared and groups[k][0] < n:
            j = groups[k][0]
            out.append((_where(val[i], f"validation row {i}"),
                        f"same text as training {_where(train[j], f'row {j}')} (train/val leakage inflates the "
                        f"validation score); keep it on one side"))
    repeated = []
    for idx in groups.values():
        if len({_label_id(both[i].label) for i in idx}) == 1:
            repeated.append(idx)
            continue
        by_label: dict[object, list[str]] = {}
        shown: dict[object, str] = {}
        for i in idx:
            label = _label_id(both[i].label)
            by_label.setdefault(label, []).append(_where(both[i], f"row {i}"))
            shown.setdefault(label, _label_text(both[i].label))
        listed = "; ".join(f"{shown[k]} at {_also(places, 3)}" for k, places in by_label.items())
        out.append((_where(both[idx[0]], f"row {idx[0]}"),
                    f"the same text is labelled differently: {listed}; keep one label per text"))
    for side, lo, hi in (("training", 0, n), ("validation", n, len(both))):
        for idx in repeated:
            mine = [i for i in idx if lo <= i < hi]
            if len(mine) < 2:
                continue
            others = [_where(both[i], f"row {i - lo}") for i in mine[1:]]
            out.append((_where(both[mine[0]], f"row {mine[0] - lo}"),
                        f"the same text occurs {len(mine)} times in {side} (also at {_also(others)}); each copy "
                        f"counts again — keep one"))
    return out
