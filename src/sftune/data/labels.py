"""Class names: one rule for every source of labels.

The rule (the README quotes it):

    Class names are read the same way from every source: image class folders, the label
    column of an image manifest, the label column of a text table (CSV, TSV, .txt), and
    JSON/JSONL/Parquet/Hugging Face label values of any type.

    1. A label becomes text. A whole number stored as a number is written as its digits
       (``1`` and ``1.0`` both give ``"1"``); anything else is its string form.
    2. The text is Unicode-normalised to NFC (macOS writes folder names in NFD: ``café``
       from a Mac folder and ``café`` typed elsewhere are one name) and surrounding
       whitespace is removed. This is the label *as written*; steps 1 and 2 never
       change which class a label belongs to, so they are silent.
    3. Two labels name the same class when they are equal after case-folding and
       collapsing inner runs of whitespace to one space (``Positive``, ``positive``,
       ``POSITIVE``), or when both are numbers of equal value (``1``, ``1.0``, ``01``,
       ``+1``, ``1e0``).
    4. Labels that name the same class but are written differently are merged into one
       class, named by the spelling that occurs most often in the data (training and
       validation together; ties: the first in sorted order), except that a whole number
       is named by its digits (``1.0`` and ``01`` merge into ``1``). A warning names every
       spelling with its count (it is counted in ``data_warnings`` and listed in
       lineage.json); with ``--strict`` it is an error. There is never a silent extra
       class.

Evaluation data is matched to a trained model's classes by the same rule (step 3):
:func:`align_to_classes`.
"""

from __future__ import annotations

import math
import numbers
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

# Numbers as people write them: 1, -1, +1, 1.0, .5, 1e3; not 1_000, nan, inf, 0x10.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

RULE_SUMMARY = ("labels are one class when they match ignoring case, surrounding/repeated whitespace, Unicode "
                "form (NFC) and number form (1 = 1.0 = 01)")


def class_name(value: Any) -> str | None:
    """Steps 1-2 of the rule: a label value of any type -> its class name as written, or
    None when it is missing (None, NaN, empty or whitespace only)."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return None
        text = str(int(f)) if f.is_integer() else repr(f)
    else:
        text = str(value)
    text = unicodedata.normalize("NFC", text).strip()
    return text or None


def as_number(name: str) -> Decimal | None:
    """The numeric value of a class name written as a number ("1", "1.0", "+1", "1e0"), else None."""
    if not _NUMBER.fullmatch(name):
        return None
    try:
        return Decimal(name)
    except InvalidOperation:  # pragma: no cover - the pattern only lets decimals through
        return None


def class_key(name: str) -> tuple[str, Any]:
    """Step 3 of the rule: names with the same key are one class."""
    number = as_number(name.strip())
    if number is not None:
        return ("number", number)  # Decimal: 1 == 1.0 == 01 with equal hashes, no float rounding
    return ("name", text_identity(name))


def text_identity(text: str) -> str:
    """NFC, case-folded, whitespace runs collapsed to one space and trimmed: the form in
    which two class names (or two texts, for the leakage checks) are compared."""
    if text.isascii():  # the common case, several times faster: NFC changes nothing, casefold() is lower()
        folded = text.lower().strip()
        if ("  " in folded or "\t" in folded or "\n" in folded or "\r" in folded or "\x0b" in folded
                or "\x0c" in folded or "\x1c" in folded or "\x1d" in folded or "\x1e" in folded or "\x1f" in folded):
            folded = " ".join(folded.split())  # (what str.split() splits on, in ASCII; no list made otherwise)
        return folded
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())
    return " ".join(folded.split())


def merge_variants(counts: Mapping[str, int]) -> tuple[dict[str, str], list[tuple[str, list[tuple[str, int]]]]]:
    """Step 4 of the rule, over ``{name as written: count}``.

    Returns ``(rename, merged)``: ``rename`` maps every name that is not its class's name to
    that class's name (names left alone are absent); ``merged`` lists each merged class as
    ``(class name, [(spelling, count), ...])`` (spellings most frequent first)."""
    groups: dict[tuple[str, Any], list[str]] = defaultdict(list)
    for name in counts:
        groups[class_key(name)].append(name)
    rename: dict[str, str] = {}
    merged: list[tuple[str, list[tuple[str, int]]]] = []
    for spellings in groups.values():
        if len(spellings) < 2:
            continue
        ranked = sorted(spellings, key=lambda s: (-counts[s], s))
        chosen = ranked[0]
        number = as_number(chosen)
        if number is not None and number == number.to_integral_value():
            chosen = str(int(number))  # a whole number: its digits, as a numeric 1.0 gets in step 1
        merged.append((chosen, [(s, counts[s]) for s in ranked]))
        for s in ranked:
            if s != chosen:
                rename[s] = chosen
    merged.sort()
    return rename, merged


def variant_warnings(source: str, merged: list[tuple[str, list[tuple[str, int]]]]) -> list[tuple[str, str]]:
    """One ``(where, problem)`` warning per merged class, naming every spelling and its count."""
    out = []
    for chosen, spellings in merged:
        listed = ", ".join(f"{s!r} ({n})" for s, n in spellings)
        how = "the most frequent spelling" if chosen == spellings[0][0] else "a whole number's digits"
        out.append((source, f"labels {listed} are one class ({RULE_SUMMARY}); merged as {chosen!r}, {how} "
                            f"— write each label one way"))
    return out


def normalise_labels(labels: Iterable[str] | Mapping[str, int], source: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Every label occurrence (or ``{label: count}``), already through :func:`class_name` ->
    (rename map, warnings)."""
    rename, merged = merge_variants(labels if isinstance(labels, Mapping) else Counter(labels))
    return rename, variant_warnings(source, merged)


def align_to_classes(labels: Iterable[str], classes: Sequence[str]) -> dict[str, str]:
    """Evaluation labels -> a trained model's class names by the rule's step 3 (``Positive`` and
    ``positive``, ``1.0`` and ``1``, NFD and NFC are one class). Labels with no class of the
    same key are absent from the result (the caller reports them)."""
    by_key: dict[tuple[str, Any], str] = {}
    for c in classes:
        by_key.setdefault(class_key(unicodedata.normalize("NFC", c)), c)
    out: dict[str, str] = {}
    for label in set(labels):
        found = by_key.get(class_key(label))
        if found is not None:
            out[label] = found
    return out
