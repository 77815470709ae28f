"""Find labeled texts: a table file, a folder of train/val files, or a saved Hugging Face dataset.

Inputs (``path`` is what the user passed as ``--data``):

* a file: ``.csv``, ``.tsv``, ``.jsonl`` (one JSON object per line), ``.json`` (an array of
  objects, or JSON lines), ``.parquet``; a ``.txt``, extension-less or other plain-text file is
  sniffed for a tab / comma / semicolon / pipe delimiter (e.g. the UCI ``SMSSpamCollection``),
  and read as fastText lines (``__label__<class> [__label__<class2>...] <text>``) when its lines
  start so. A ``.csv``/``.tsv`` whose header holds no ``,``/tab but another delimiter (a
  ``;``-separated spreadsheet export) is read with that one (:mod:`sftune.data.tables`).
* a folder holding ``train.<ext>`` and optionally ``val|valid|validation|dev.<ext>``
  (a ``test`` file is not used, and a note says so: benchmark test files are often unlabeled)
* a folder written by ``datasets``' ``save_to_disk``: a ``DatasetDict`` (``train`` plus
  ``validation``/``val``/``valid``/``dev``/``test``) or a single ``Dataset``

Columns are guessed only when unambiguous (the names tried are below) and the ones used
are recorded in :attr:`LabeledTexts.columns`; ``text_column``/``label_column`` override.
A reference may be a name or a 0-based index (``--text-column 1 --label-column 0``).

Delimited files may lack a header. One is assumed unless its first row names no known or
requested column AND a value of that row repeats further down its column (a header name
does not repeat, a label such as ``ham`` does); columns are then named ``"0"``, ``"1"``...
A headerless two-column file needs no flags: the column with few distinct short values is
the label, the other the text. TSV fields are read verbatim (no quote processing), as GLUE
and SMSSpamCollection need: their texts start with unbalanced ``"``.

Labels may be strings or numbers of any type; they become class names by the one rule in
:mod:`sftune.data.labels` (NFC, trimmed, ``1.0`` -> ``"1"``; ``Positive``/``positive`` and
``1``/``1.0`` are one class, merged with a warning). All-integer classes sort numerically:
"2" before "10". Multi-label rows hold a list (JSONL/Parquet/datasets) or a string split on
``label_separator``; an empty list/string means "no label applies".

Checked across the whole set, as for images (:mod:`sftune.data.checks`), by a hash of the
normalised text (NFC, case-folded, whitespace collapsed): the same text in training and
validation (leakage), the same text under different labels, and the same text repeated within
training or within validation. Each is a warning in :attr:`LabeledTexts.warnings`; ``strict``
makes the first one fatal. A split sftune makes itself keeps every copy of a text on the training
side (``split["copies_kept_in_train"]``), so it never leaks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SftuneError, did_you_mean
from .checks import keep_copies_together, missing_class_warnings, mixed_label_warnings, text_digest, text_warnings
from .images import IMAGE_EXTENSIONS
from .labels import class_name, normalise_labels
from .tables import sniff_delimiter

TEXT_COLUMNS = ("text", "sentence", "sentence1", "premise", "review", "content", "document", "question")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target")
PAIR_COLUMNS = ("sentence2", "text_pair", "hypothesis")
PAIR_FIRST_COLUMNS = ("sentence1", "premise")  # only these text columns get an automatic second sentence
VAL_NAMES = ("val", "valid", "validation", "dev")
HF_VAL_SPLITS = ("validation", "val", "valid", "dev", "test")  # preference order
HF_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")
SNIFFED_SUFFIXES = ("", ".txt", ".dat", ".data")  # no telling extension: sniff the delimiter
FORMATS = ".csv, .tsv, .jsonl, .json, .parquet or .txt"
FASTTEXT_PREFIX = "__label__"
# Never claimed as text by their content: other readers' formats (detection YAML/XML, images, archives).
NOT_TEXT_SUFFIXES = (".yaml", ".yml", ".xml", ".zip", ".gz", ".tar", ".npy", ".npz", ".pt", ".pth", ".bin",
                     ".safetensors", ".xlsx", ".xls", ".ods", ".pdf", *IMAGE_EXTENSIONS)
ACCEPTED = (f"text data is a {FORMATS} table with a text and a label column, a folder with train/val files, a saved "
            f"Hugging Face dataset, or fastText lines ('__label__<class> <text>')")

ColumnRef = str | int | None


@dataclass(frozen=True)
class TextSample:
    text: str
    label: str | tuple[str, ...]  # a tuple of class names for multi-label ("" = unknown, for prediction)
    text_pair: str | None = None  # second sentence of sentence-pair tasks (NLI, paraphrase)
    where: str = field(default="", compare=False, repr=False)  # "file line N", named in data warnings


@dataclass
class LabeledTexts:
    """Train/val texts plus what was learned while reading them."""

    train: list[TextSample]
    val: list[TextSample]
    classes: list[str]  # sorted; numerically when every class is an integer
    split: dict = field(default_factory=dict)  # how val was obtained (recorded in the bundle)
    fingerprint: str = ""  # sha256 over (text, pair, label) of every sample, train then val
    multi_label: bool = False
    columns: dict = field(default_factory=dict)  # {"text", "label", "text_pair"} actually used
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (where, problem): leakage, duplicates, label variants

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}


# -------------------------------------------------------------------------------- tables


@dataclass
class _Table:
    """Columns of one file (or dataset split) as Python lists, plus how to name a row."""

    source: str  # named in every message: a path, or "path [split]"
    columns: list[str]
    data: dict[str, list]
    line_base: int | None = None  # line number of row 0 (delimited files)
    lines: list[int] | None = None  # line number of every row (JSON lines skip blank lines)
    class_names: dict[str, list[str]] = field(default_factory=dict)  # integer label -> name (datasets ClassLabel)
    headerless: bool = False

    def __len__(self) -> int:
        return len(self.data[self.columns[0]]) if self.columns else 0

    def where(self, i: int) -> str:
        if self.lines is not None:
            return f"line {self.lines[i]}"
        if self.line_base is not None:  # exact unless a quoted field spans lines
            return f"line {i + self.line_base}"
        return f"row {i}"

    def wheres(self) -> list[str]:
        """``"<source> <where(i)>"`` for every row (named in data warnings)."""
        src = self.source
        if self.lines is not None:
            return [f"{src} line {n}" for n in self.lines]
        if self.line_base is not None:
            return [f"{src} line {n}" for n in range(self.line_base, self.line_base + len(self))]
        return [f"{src} row {i}" for i in range(len(self))]


def _read_file(path: Path, refs: tuple[ColumnRef, ...] = (), keep_blank_lines: bool = False) -> _Table:
    """One file as a table; ``keep_blank_lines``: a blank line of a delimited file is a row of
    empty values (prediction: one output per input line), not skipped."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise SftuneError(f"data file '{path}' does not exist; pass a {FORMATS} file, a folder with train/val "
                          f"files or a Hugging Face dataset folder")
    if suffix in (".csv", ".tsv"):  # the extension's delimiter, unless the header shows another
        return _read_delimited(path, sniff_delimiter(_head_lines(path, 50), "," if suffix == ".csv" else "\t"), refs,
                               keep_blank_lines)
    if suffix == ".jsonl":
        return _read_json_lines(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix in SNIFFED_SUFFIXES or (suffix not in NOT_TEXT_SUFFIXES and _is_plain_text(path)):
        if _is_fasttext(_head_lines(path, 50)):
            return _read_fasttext(path)
        return _read_delimited(path, _sniff_delimiter(path), refs, keep_blank_lines)
    raise SftuneError(f"'{path}': unsupported file type '{suffix}'; text data must be {FORMATS} "
                      f"(e.g. export a spreadsheet as CSV), a folder of those, or a Hugging Face dataset folder")


def _head_lines(path: Path, n: int) -> list[str]:
    """The first ``n`` non-blank lines, decoded; a bad byte names its line."""
    out: list[str] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise SftuneError(_utf8_message(path, line_no, raw, e)) from None
            if text.strip():
                out.append(text.rstrip("\r\n"))
            if len(out) >= n:
                break
    return out


def _utf8_message(path: Path, line_no: int, raw: bytes, e: UnicodeDecodeError) -> str:
    return (f"'{path}' line {line_no} is not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            f"re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8")


def _first_bad_utf8_line(path: Path) -> str:
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):  # '\n' never occurs inside a multi-byte UTF-8 character
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return _utf8_message(path, line_no, raw, e)
    return f"'{path}' is not UTF-8 text; re-encode the file as UTF-8"


def _sniff_delimiter(path: Path) -> str:
    lines = _head_lines(path, 50)
    if not lines:
        raise SftuneError(f"'{path}' is empty")
    for delimiter in ("\t", ",", ";", "|"):
        counts = {line.count(delimiter) for line in lines}
        if len(counts) == 1 and counts != {0}:  # the same number of delimiters on every line
            return delimiter
    if all("\t" in line for line in lines):  # tabs everywhere, uneven counts: texts with tabs
        return "\t"
    if all(len(line.split(None, 1)) == 2 and len(line.split(None, 1)[0]) <= 40 for line in lines):
        fix = (f"if each line is '<class> <text>', make them fastText lines: "
               f"sed 's/^/__label__/' {path.name} > {path.stem}.fasttext.txt")
    else:
        fix = "rename it to .csv or .tsv if it is such a table (one text per line is for sftune predict --file)"
    raise SftuneError(f"'{path}': cannot tell how its columns are separated (no tab, ',', ';' or '|' on every "
                      f"line); {ACCEPTED}; {fix}")


def _is_plain_text(path: Path) -> bool:
    """The first 8 KB hold no NUL byte and decode as UTF-8 (a character cut at the end aside)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    if not head.strip() or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # only the last, cut character
    return True


def _is_fasttext(lines: list[str]) -> bool:
    """fastText's supervised format: (nearly) every line starts with ``__label__<class>``."""
    return bool(lines) and sum(line.lstrip().startswith(FASTTEXT_PREFIX) for line in lines) >= 0.9 * len(lines)


_FASTTEXT_LINE = re.compile(r"\s*((?:__label__\S+\s*)+)(.*)$", re.S)


def _read_fasttext(path: Path) -> _Table:
    """``__label__a [__label__b ...] text`` lines -> columns ``label`` and ``text``. A line with
    several labels makes every label a list (multi-label: --multi-label)."""
    texts: list[str] = []
    labels: list[list[str]] = []
    lines: list[int] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise SftuneError(_utf8_message(path, line_no, raw, e)) from None
            if not line.strip():
                continue
            match = _FASTTEXT_LINE.match(line)
            if match is None:
                raise SftuneError(f"'{path}' line {line_no}: no '__label__<class>' at the start; every line of a "
                                  f"fastText file starts with its label(s), e.g. __label__positive a great film")
            labels.append([token[len(FASTTEXT_PREFIX):] for token in match.group(1).split()])
            texts.append(match.group(2).strip())
            lines.append(line_no)
    if not lines:
        raise SftuneError(f"'{path}' is empty")
    several = any(len(x) > 1 for x in labels)
    column = [x if several else x[0] for x in labels]
    return _Table(str(path), ["label", "text"], {"label": column, "text": texts}, lines=lines)


def _read_delimited(path: Path, sep: str, refs: tuple[ColumnRef, ...], keep_blank_lines: bool = False) -> _Table:
    import pandas as pd

    head = _head_lines(path, 200)
    if not head:
        raise SftuneError(f"'{path}' is empty; it needs a header line and one row per text")
    header = _has_header([line.split(sep) for line in head], refs)
    try:
        df = pd.read_csv(
            path, sep=sep, header=0 if header else None, dtype=str, keep_default_na=False, na_filter=False,
            # TSV fields are verbatim: GLUE / SMS texts begin with unbalanced quotes.
            quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL,
            encoding="utf-8-sig", engine="c", skip_blank_lines=not keep_blank_lines,
        )
    except UnicodeDecodeError:
        raise SftuneError(_first_bad_utf8_line(path)) from None
    except pd.errors.EmptyDataError:
        raise SftuneError(f"'{path}' is empty; it needs a header line and one row per text") from None
    except pd.errors.ParserError as e:
        raise SftuneError(_parse_error_message(path, sep, str(e))) from None
    columns = [str(c).strip() for c in df.columns] if header else [str(i) for i in range(df.shape[1])]
    data = {c: df.iloc[:, i].tolist() for i, c in enumerate(columns)}
    return _Table(str(path), columns, data, line_base=2 if header else 1, headerless=not header)


def _has_header(rows: list[list[str]], refs: tuple[ColumnRef, ...]) -> bool:
    first = [f.strip().strip('"').strip() for f in rows[0]]
    names = {str(r).lower() for r in refs if r is not None and not _is_index(r)}
    if {f.lower() for f in first} & (names | set(TEXT_COLUMNS + LABEL_COLUMNS + PAIR_COLUMNS)):
        return True
    # No known name: in a headerless file a value of the first row (a label like "ham")
    # repeats further down its column; a header name does not.
    for j, value in enumerate(first):
        if value and any(len(r) > j and r[j].strip() == value for r in rows[1:]):
            return False
    return True


def _parse_error_message(path: Path, sep: str, message: str) -> str:
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if fields:
        expected, line, saw = fields.groups()
        what = "tab" if sep == "\t" else f"'{sep}'"
        return (f"'{path}' line {line}: {saw} fields where the first line has {expected}; a text contains a {what}: "
                f"quote it (\"like, this\") or remove the extra {what}")
    eof = re.search(r"EOF inside string starting at row (\d+)", message)
    if eof:
        return (f"'{path}' line {int(eof.group(1)) + 1}: a quote (\") opens a text that never closes; close it, "
                f"or write quotes inside a quoted text twice (\"\")")
    return f"'{path}' is not a readable CSV/TSV file ({_first_line(message)}); check its quoting and delimiter"


def _read_json_lines(path: Path) -> _Table:
    rows: list[dict] = []
    lines: list[int] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8-sig" if line_no == 1 else "utf-8"))
            except UnicodeDecodeError as e:
                raise SftuneError(_utf8_message(path, line_no, raw, e)) from None
            except json.JSONDecodeError as e:
                raise SftuneError(f"'{path}' line {line_no} is not valid JSON ({e.msg}, column {e.colno}); each line "
                                  f"must be one object like {{\"text\": \"...\", \"label\": \"...\"}}") from None
            if not isinstance(obj, dict):
                raise SftuneError(f"'{path}' line {line_no} holds a JSON {type(obj).__name__}, not an object like "
                                  f"{{\"text\": \"...\", \"label\": \"...\"}}")
            rows.append(obj)
            lines.append(line_no)
    return _table_from_records(str(path), rows, lines)


def _read_json(path: Path) -> _Table:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SftuneError(_first_bad_utf8_line(path)) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines saved as .json (what datasets' to_json writes)
            return _read_json_lines(path)
        raise SftuneError(f"'{path}' line {e.lineno} is not valid JSON ({e.msg}, column {e.colno})") from None
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):  # {"data": [{...}, ...]}
            obj = lists[0]
        elif lists and len(lists) == len(obj) and len({len(v) for v in lists}) == 1:  # {"text": [...], "label": [...]}
            return _Table(str(path), [str(k) for k in obj], {str(k): list(v) for k, v in obj.items()})
        else:
            obj = [obj]
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise SftuneError(f"'{path}' must hold a JSON array of objects like [{{\"text\": \"...\", \"label\": \"...\"}}]")
    return _table_from_records(str(path), obj, None)


def _table_from_records(source: str, rows: list[dict], lines: list[int] | None) -> _Table:
    columns: dict[str, None] = {}  # first-seen order
    for row in rows:
        for key in row:
            columns.setdefault(str(key), None)
    data = {c: [row.get(c) for row in rows] for c in columns}
    return _Table(source, list(columns), data, lines=lines)


def _read_parquet(path: Path) -> _Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for damaged or non-parquet files
        raise SftuneError(f"'{path}' is not a readable Parquet file ({_first_line(str(e))})") from None
    columns = [str(c) for c in table.column_names]
    names = _class_names_from_hf_features(_hf_features_in_metadata(table.schema.metadata))
    return _Table(str(path), columns, table.to_pydict(), class_names=names)


def _hf_features_in_metadata(metadata: dict | None) -> dict:
    """Parquet written by datasets carries its features (e.g. ClassLabel names) as JSON metadata."""
    try:
        return json.loads((metadata or {})[b"huggingface"])["info"]["features"]
    except (KeyError, ValueError, TypeError):
        return {}


def _class_names_from_hf_features(features: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for column, feature in features.items():
        inner = feature.get("feature", feature) if isinstance(feature, dict) else feature  # a list of ClassLabel
        if isinstance(inner, dict) and inner.get("_type") == "ClassLabel" and inner.get("names"):
            out[str(column)] = [str(n) for n in inner["names"]]
    return out


def is_hf_dataset_folder(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in HF_MARKERS)


def _read_hf_dataset(path: Path) -> dict[str, _Table]:
    """A ``save_to_disk`` folder -> {split: table}; a single Dataset comes back as split ""."""
    try:
        import datasets
    except ImportError:
        raise SftuneError(f"'{path}' is a Hugging Face dataset folder; reading it needs: pip install datasets") from None
    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, arrow errors...
        raise SftuneError(f"'{path}' looks like a saved Hugging Face dataset but cannot be read "
                          f"({_first_line(str(e))}); re-save it with save_to_disk") from None
    if isinstance(obj, datasets.DatasetDict):
        return {name: _table_from_hf(ds, f"{path} [{name}]") for name, ds in obj.items()}
    return {"": _table_from_hf(obj, str(path))}


def _table_from_hf(ds: Any, source: str) -> _Table:
    names = _class_names_from_hf_features(ds.features.to_dict())
    return _Table(source, list(ds.column_names), ds.to_dict(), class_names=names)


def _first_line(message: str) -> str:
    return (message.strip().splitlines() or [""])[0][:200]


# ------------------------------------------------------------------------------- columns


def _is_index(ref: ColumnRef) -> bool:
    return isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit())


def _column(table: _Table, ref: ColumnRef, role: str, flag: str, candidates: tuple[str, ...]) -> str | None:
    """A column the user named (name or 0-based index), else the first known candidate, else None."""
    if ref is not None:
        name = str(ref).strip()
        if name in table.columns:
            return name
        by_lower = {c.lower(): c for c in table.columns}
        if name.lower() in by_lower:
            return by_lower[name.lower()]
        if _is_index(ref) and int(name) < len(table.columns):
            return table.columns[int(name)]
        raise SftuneError(f"'{table.source}' has no {role} column '{name}'{did_you_mean(name, table.columns)}; "
                          f"columns: {', '.join(table.columns) or 'none'}; fix {flag}")
    lowered = {c.lower(): c for c in table.columns}
    return next((lowered[c] for c in candidates if c in lowered), None)


def _guess_headerless_pair(table: _Table) -> tuple[str, str] | None:
    """Headerless ``label<TAB>text`` (or text, label): the label column has few distinct short values."""
    if not table.headerless or len(table.columns) != 2:
        return None
    n = min(len(table), 5000)
    distinct = {c: set(table.data[c][:n]) for c in table.columns}
    label, text = sorted(table.columns, key=lambda c: len(distinct[c]))
    few = len(distinct[label]) <= max(2, n // 10) and len(distinct[label]) < len(distinct[text])
    short = max((len(str(v)) for v in distinct[label]), default=0) <= 40
    return (text, label) if few and short else None


def _resolve_columns(table: _Table, text_ref: ColumnRef, label_ref: ColumnRef, pair_ref: ColumnRef,
                     need_label: bool = True) -> dict[str, str | None]:
    text = _column(table, text_ref, "text", "--text-column", TEXT_COLUMNS)
    label = _column(table, label_ref, "label", "--label-column", LABEL_COLUMNS) if need_label else None
    guess = _guess_headerless_pair(table) if text is None or (need_label and label is None) else None
    if guess:
        text = text or guess[0]
        label = label or (guess[1] if need_label else None)
    if text is None:
        raise SftuneError(f"'{table.source}': no text column found (columns: {', '.join(table.columns) or 'none'}; "
                          f"looked for {', '.join(TEXT_COLUMNS)}); name it with --text-column")
    if need_label and label is None:
        raise SftuneError(f"'{table.source}': no label column found (columns: {', '.join(table.columns) or 'none'}; "
                          f"looked for {', '.join(LABEL_COLUMNS)}); name it with --label-column")
    if text == label:
        raise SftuneError(f"'{table.source}': column '{text}' cannot be both text and label; "
                          f"pass --text-column and --label-column")
    pair = _column(table, pair_ref, "text pair", "--text-pair-column", PAIR_COLUMNS if text.lower() in
                   PAIR_FIRST_COLUMNS else ())
    return {"text": text, "label": label, "text_pair": pair}


def _same_columns(table: _Table, columns: dict[str, str | None]) -> dict[str, str | None]:
    """Validation data must carry the columns chosen for training, by name."""
    out: dict[str, str | None] = {}
    flags = {"text": "--text-column", "label": "--label-column", "text_pair": "--text-pair-column"}
    for role, name in columns.items():
        out[role] = None if name is None else _column(table, name, role.replace("_", " "), flags[role], ())
    return out


# -------------------------------------------------------------------------------- values


def _texts(table: _Table, column: str, role: str) -> list[str]:
    values = [v if isinstance(v, str) else ("" if v is None or _is_nan(v) else str(v)) for v in table.data[column]]
    empty = [i for i, v in enumerate(values) if not v.strip()]
    if empty:
        raise SftuneError(f"'{table.source}': {len(empty)} empty {role}(s) in column '{column}' (first at "
                          f"{table.where(empty[0])}); fill them in or remove those rows")
    return values


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _scalar_label(value: Any, names: list[str] | None) -> str | None:
    """One label value -> its class name (the rule in :mod:`sftune.data.labels`); None when missing."""
    if value is None or _is_nan(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # parquet stores an int column with gaps as float
    if isinstance(value, int) and not isinstance(value, bool) and names is not None:
        # datasets ClassLabel: -1 means unlabeled
        return class_name(names[value]) if 0 <= value < len(names) else None
    return class_name(value)


def _labels(table: _Table, column: str, multi_label: bool, separator: str) -> list:
    names = table.class_names.get(column)
    raw = table.data[column]
    if multi_label:
        out: list[tuple[str, ...] | None] = []
        for v in raw:
            if v is None or _is_nan(v):
                out.append(None)
                continue
            parts = list(v) if isinstance(v, (list, tuple)) else (str(v).split(separator) if isinstance(v, str) else [v])
            labels = [_scalar_label(p.strip() if isinstance(p, str) else p, names) for p in parts]
            out.append(tuple(dict.fromkeys(x for x in labels if x)))  # ordered, deduplicated
    else:
        lists = next((i for i, v in enumerate(raw) if isinstance(v, (list, tuple))), None)
        if lists is not None:
            raise SftuneError(f"'{table.source}' {table.where(lists)}: label column '{column}' holds a list; "
                              f"for several labels per text pass --multi-label")
        memo: dict[tuple[type, Any], str | None] = {}  # a label column holds few distinct values
        out = []
        for v in raw:
            try:
                out.append(memo[(v.__class__, v)])
            except KeyError:
                out.append(memo.setdefault((v.__class__, v), _scalar_label(v, names)))
            except TypeError:  # an unhashable value (a dict): no memo
                out.append(_scalar_label(v, names))
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        raise SftuneError(f"'{table.source}': {len(missing)} row(s) without a label in column '{column}' (first at "
                          f"{table.where(missing[0])}); label them or remove those rows (unlabeled texts go to predict)")
    return out


def _samples(table: _Table, columns: dict[str, str | None], multi_label: bool, separator: str) -> list[TextSample]:
    if len(table) == 0:
        raise SftuneError(f"'{table.source}' has no rows")
    texts = _texts(table, columns["text"], "text")  # type: ignore[arg-type]
    pairs = _texts(table, columns["text_pair"], "text pair") if columns["text_pair"] else [None] * len(texts)
    labels = _labels(table, columns["label"], multi_label, separator)  # type: ignore[arg-type]
    return [TextSample(t, lab, p, w) for t, lab, p, w in zip(texts, labels, pairs, table.wheres())]


def sort_classes(names: set[str]) -> list[str]:
    """Numeric order when every name is an integer ("2" before "10"), else alphabetical."""
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _label_set(samples: list[TextSample]) -> set[str]:
    return set(_label_counts(samples))


def _label_counts(samples: list[TextSample]) -> Counter:
    """How often each class name occurs (each name of a multi-label row counts once)."""
    raw = Counter(s.label for s in samples)  # few distinct values: expand tuples afterwards
    if not any(isinstance(x, tuple) for x in raw):
        return raw
    out: Counter = Counter()
    for value, n in raw.items():
        for name in (value if isinstance(value, tuple) else (value,)):
            out[name] += n
    return out


# --------------------------------------------------------------------------------- split


def _stratified_split(samples: list[TextSample], val_fraction: float, seed: int) -> tuple[list[TextSample], list[TextSample]]:
    """Per class, a seeded shuffle sends round(n * fraction) texts (at least 1 when n >= 2) to val (data/splits.py)."""
    from .splits import split_indices

    return _take(samples, set(split_indices([s.label for s in samples], val_fraction, seed)[1]))


def _random_split(samples: list[TextSample], val_fraction: float, seed: int) -> tuple[list[TextSample], list[TextSample]]:
    """Multi-label rows have no single class to stratify on: a seeded random split (data/splits.py)."""
    from .splits import split_indices

    return _take(samples, set(split_indices([0] * len(samples), val_fraction, seed)[1]))


def _take(samples: list[TextSample], val_idx: set[int]) -> tuple[list[TextSample], list[TextSample]]:
    train = [s for i, s in enumerate(samples) if i not in val_idx]  # file order kept on both sides
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val


def _fingerprint(samples: list[TextSample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        label = "\x1f".join(s.label) if isinstance(s.label, tuple) else s.label
        h.update(f"{s.text}\0{'' if s.text_pair is None else s.text_pair}\0{label}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------- entry


def find_labeled_texts(
    path: str | Path,
    val_path: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 42,
    text_column: ColumnRef = None,
    label_column: ColumnRef = None,
    text_pair_column: ColumnRef = None,
    multi_label: bool = False,
    label_separator: str = ",",
    strict: bool = False,
) -> LabeledTexts:
    """Resolve ``--data`` (and optional ``--val-data``) into checked train/val texts.

    Listed in ``warnings``: labels merged by the class-name rule, labels mixing numbers and
    names, train/val leakage, one text under different labels, repeated texts. ``strict``
    makes the first of them fatal."""
    if not 0 < val_fraction < 1:
        raise SftuneError(f"val_fraction must be between 0 and 1 (got {val_fraction})")
    root = Path(path).expanduser()
    refs = (text_column, label_column, text_pair_column)
    train_table, val_table, split = _read_source(root, refs)
    notes = (split or {}).pop("notes", [])  # how the folder was read (a test file not used)
    split = split or None
    if val_path is not None:
        val_root = Path(val_path).expanduser()
        val_table = _read_val_source(val_root, refs)
        split = {"method": "file", "source": str(val_root)}

    columns = _resolve_columns(train_table, text_column, label_column, text_pair_column)
    train = _samples(train_table, columns, multi_label, label_separator)
    val = None
    if val_table is not None:
        val = _samples(val_table, _same_columns(val_table, columns), multi_label, label_separator)
    # One class per name under the class-name rule: 'Positive'/'positive', '1'/'1.0' merge (with a warning).
    rename, warnings = normalise_labels(_label_counts(train + (val or [])), train_table.source)
    if rename:
        train = _relabel(train, rename)
        val = None if val is None else _relabel(val, rename)
    if len(_label_set(train)) < 2:
        raise SftuneError(f"'{train_table.source}' has fewer than 2 classes ({', '.join(sorted(_label_set(train))) or 'none'}"
                          f" in column '{columns['label']}'); classification needs at least two")
    keys: dict[int, str] = {}  # id(sample) -> text_digest, when the split computed them
    if val is None:
        method = _random_split if multi_label else _stratified_split
        every = train
        train, val = method(train, val_fraction, seed)
        split = {"method": "random" if multi_label else "stratified", "seed": seed, "val_fraction": val_fraction}
        # Copies of one text (as normalised) stay together: the split itself never leaks.
        keys = {id(s): text_digest(s.text, s.text_pair) for s in every}
        train, val, moved = keep_copies_together(train, val, lambda s: keys[id(s)])
        if moved:
            split["copies_kept_in_train"] = moved
            position = {id(s): i for i, s in enumerate(every)}
            train.sort(key=lambda s: position[id(s)])  # file order, as _take keeps it
    classes = sort_classes(_label_set(train))
    if not val:
        raise SftuneError(f"no validation texts: add a val file next to '{root}' or pass --val-data")
    unseen = sort_classes(_label_set(val) - set(classes))
    if unseen:
        where = val_table.source if val_table is not None else root
        raise SftuneError(f"validation data '{where}' has labels that training lacks: {', '.join(unseen[:10])}; "
                          f"add training texts for them or remove them from validation")
    split = {**(split or {}), "val_count": len(val), **({"notes": notes} if notes else {})}
    warnings += mixed_label_warnings(train_table.source, set(classes))
    warnings += missing_class_warnings(val_table.source if val_table is not None else root, classes, _label_set(val))
    if keys:  # hashed once already, for the split
        warnings += text_warnings(train, val, [keys[id(s)] for s in train], [keys[id(s)] for s in val])
    else:
        warnings += text_warnings(train, val)
    if warnings and strict:
        where, problem = warnings[0]
        raise SftuneError(f"{where}: {problem} (or drop --strict to only warn)")
    return LabeledTexts(train=train, val=val, classes=classes, split=split, fingerprint=_fingerprint(train + val),
                        multi_label=multi_label, columns=columns, warnings=warnings)


def _relabel(samples: list[TextSample], rename: dict[str, str]) -> list[TextSample]:
    def one(label: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if isinstance(label, str):
            return rename.get(label, label)
        return tuple(dict.fromkeys(rename.get(x, x) for x in label))  # merged names may now repeat

    return [TextSample(s.text, one(s.label), s.text_pair, s.where) for s in samples]


def _read_source(root: Path, refs: tuple[ColumnRef, ...]) -> tuple[_Table, _Table | None, dict | None]:
    """(train table, val table found alongside it or None, how val was found)."""
    if not root.exists():
        raise SftuneError(f"data path '{root}' does not exist; pass a {FORMATS} file, a folder with train/val files "
                          f"or a Hugging Face dataset folder with --data")
    if root.is_file():
        return _read_file(root, refs), None, None
    if is_hf_dataset_folder(root):
        splits = _read_hf_dataset(root)
        if "" in splits:
            return splits[""], None, None
        if "train" not in splits:
            raise SftuneError(f"'{root}': dataset splits are {', '.join(splits)} but none is 'train'")
        val_split = next((s for s in HF_VAL_SPLITS if s in splits), None)
        val_info = {"method": "dataset_split", "source": str(root), "split": val_split} if val_split else None
        return splits["train"], splits[val_split] if val_split else None, val_info
    train_file = _split_file(root, ("train",))
    if train_file is None:
        raise SftuneError(f"'{root}' has no train file ({FORMATS}) and is not a saved Hugging Face dataset; "
                          f"put train.csv (and val.csv) in it or pass the file itself")
    val_file = _split_file(root, VAL_NAMES)
    val_table = _read_file(val_file, refs) if val_file else None
    split: dict | None = {"method": "folder", "source": str(val_file)} if val_file else None
    test_file = _split_file(root, ("test",))
    if test_file is not None:  # said, not silently dropped; GLUE's test files carry no labels
        note = (f"'{test_file}' is not used (test files are often unlabeled); to validate on it, "
                f"pass --val-data {test_file}")
        split = {**(split or {}), "notes": [note]}
    return _read_file(train_file, refs), val_table, split


def _read_val_source(path: Path, refs: tuple[ColumnRef, ...], flag: str = "--val-data") -> _Table:
    """The validation (or evaluation) table of ``path``; ``flag`` is the option that named it."""
    if not path.exists():
        raise SftuneError(f"validation path '{path}' does not exist ({flag})")
    if path.is_file():
        return _read_file(path, refs)
    if is_hf_dataset_folder(path):
        splits = _read_hf_dataset(path)
        name = "" if "" in splits else next((s for s in HF_VAL_SPLITS if s in splits), None)
        if name is None:
            raise SftuneError(f"'{path}': dataset splits are {', '.join(splits)}; none is a validation split "
                              f"({', '.join(HF_VAL_SPLITS)})")
        return splits[name]
    val_file = _split_file(path, VAL_NAMES)
    if val_file is None:
        raise SftuneError(f"validation folder '{path}' has no val/valid/validation/dev file ({FORMATS})")
    return _read_file(val_file, refs)


def _split_file(folder: Path, stems: tuple[str, ...]) -> Path | None:
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.stem.lower() in stems and p.suffix.lower() in TABLE_SUFFIXES)
    if len(found) > 1:
        raise SftuneError(f"'{folder}' holds {', '.join(p.name for p in found)}; keep one of them (ambiguous split file)")
    return found[0] if found else None


# ---------------------------------------------------------------------------- detection


def is_text_data(path: str | Path) -> bool:
    """True for labeled-text inputs: a table file with a text-like column, a folder of such
    train/val files, or a saved Hugging Face dataset. False for image folders and manifests."""
    p = Path(path).expanduser()
    try:
        if p.is_dir():
            if is_hf_dataset_folder(p):
                return True
            train = _split_file(p, ("train",))
            return train is not None and _file_looks_textual(train)
        if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES + SNIFFED_SUFFIXES:
            return _file_looks_textual(p)
        if p.is_file() and p.suffix.lower() not in NOT_TEXT_SUFFIXES and _is_plain_text(p):
            return _file_looks_textual(p)  # e.g. TREC's train_5500.label: the text reader says what it takes
    except SftuneError as e:
        # Not UTF-8: images never come as such a table, and the text reader names the line.
        return "is not UTF-8" in str(e)
    except OSError:
        return False
    return False


def _file_looks_textual(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        head = _head_lines(path, 50)
        sep = sniff_delimiter(head, "," if suffix == ".csv" else "\t")
        rows = [line.split(sep) for line in head]
        columns = [f.strip().strip('"') for f in rows[0]] if rows else []
        return _looks_textual(columns, rows)
    if suffix not in (".jsonl", ".json", ".parquet"):  # .txt, no extension, .label, ...: sniffed
        head = _head_lines(path, 50)
        if _is_fasttext(head):
            return True
        try:
            sep = _sniff_delimiter(path)
        except SftuneError:
            # Columns not separated: '<class> <text>' lines (TREC) are text data in the wrong
            # form, and the text reader says how to make it; notes and anything else are not.
            return suffix not in SNIFFED_SUFFIXES and _label_first_prose(head)
        rows = [line.split(sep) for line in head]
        columns = [f.strip().strip('"') for f in rows[0]] if rows else []
        return _looks_textual(columns, rows)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=50), None)
        if batch is None:
            return False
        data = batch.to_pydict()
        return _looks_textual(list(data), [list(r) for r in zip(*data.values())])
    table = _read_json_lines(path) if suffix == ".jsonl" else _read_json(path)
    rows = [list(r) for r in zip(*(table.data[c][:50] for c in table.columns))]
    return _looks_textual(table.columns, rows)


def _label_first_prose(lines: list[str]) -> bool:
    """Lines of '<class> <text>': a short first word, then words (several, on most lines)."""
    parts = [line.split(None, 1) for line in lines]
    return (bool(parts) and all(len(p) == 2 and len(p[0]) <= 40 for p in parts)
            and sum(" " in p[1].strip() for p in parts) >= 0.8 * len(parts))


def _looks_textual(columns: list[str], rows: list[list]) -> bool:
    values = [[str(r[j]).strip().strip('"') for r in rows if len(r) > j and r[j] is not None] for j in range(len(columns))]
    for col in values:  # an image manifest: a column of image paths
        if col and sum(v.lower().endswith(IMAGE_EXTENSIONS) for v in col) >= len(col) / 2:
            return False
    if {c.lower() for c in columns} & set(TEXT_COLUMNS):
        return True
    for col in values:  # prose: long-ish values with spaces
        if col and sum(len(v) for v in col) / len(col) >= 15 and sum(" " in v for v in col) >= len(col) / 2:
            return True
    return False


# ---------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class TextInput:
    """One input of ``sftune predict --file``: its text (and second text), and its place in the file."""

    text: str  # "" for a blank line or an empty cell: predicted as null, with the reason
    text_pair: str | None = None
    line: int | None = None  # 1-based line number in the file (None: JSON/Parquet rows)
    where: str = ""  # "<file> line N" or "<file> row N", for messages


def read_prediction_inputs(path: str | Path, text_column: ColumnRef = None, text_pair_column: ColumnRef = None,
                           pairs: bool = False, trained: tuple[ColumnRef, ColumnRef] = (None, None)) -> list[TextInput]:
    """Every input of a file to classify, one per line or row, empty ones included (so that the
    output lines up with the input). A ``.txt`` file holds one text per line; a
    CSV/TSV/JSONL/JSON/Parquet file gives its text column (named, or found as in training) and,
    when ``pairs``, its second-text column (named, or ``sentence2``/``hypothesis``...). A column
    not named is the one the model was trained on (``trained``: text, text pair) when the file
    has it, else found by the usual names, as in training.

    Raises SftuneError when the file does not exist, is empty, or lacks the column(s)."""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "a CSV/TSV/JSONL/Parquet file with both text columns" if pairs else \
            "a .txt file (one text per line) or a CSV/TSV/JSONL/Parquet file"
        raise SftuneError(f"'{p}' does not exist; pass {what}")
    if p.suffix.lower() == ".txt" and text_column is None and not pairs:
        out = [TextInput(text, None, n, f"{p} line {n}") for n, text in _every_line(p)]
        if not any(i.text.strip() for i in out):
            raise SftuneError(f"'{p}' has no texts (it is empty or blank)")
        return out
    table = _read_file(p, tuple(r for r in (text_column, text_pair_column, *trained) if r is not None),
                       keep_blank_lines=True)
    if text_column is None and trained[0] is not None and _has_column(table, trained[0]) and not table.headerless:
        text_column = trained[0]
    if text_pair_column is None and trained[1] is not None and _has_column(table, trained[1]) and not table.headerless:
        text_pair_column = trained[1]
    if pairs:
        first = _column(table, text_column, "text", "--text-column", TEXT_COLUMNS)
        second = _column(table, text_pair_column, "text pair", "--text-pair-column", PAIR_COLUMNS)
        if first is None or second is None:
            raise SftuneError(f"'{p}': this model classifies sentence pairs; the file needs a text and a second-text "
                              f"column (it has {', '.join(table.columns)}); name them with --text-column and "
                              f"--text-pair-column")
        seconds: list[str | None] = list(_cells(table, second))
    elif text_column is None and len(table.columns) == 1:
        first = table.columns[0]  # one column: nothing to guess, unless its first line may be a text
        if table.line_base == 2 and first.lower() not in TEXT_COLUMNS:
            raise SftuneError(f"'{p}': is its first line '{first[:40]}' a header or a text? pass --text-column "
                              f"'{first[:40]}' if it is a header, or give the texts as a .txt file (one per line)")
        seconds = [None] * len(table)
    else:
        first = _resolve_columns(table, text_column, None, None, need_label=False)["text"]  # type: ignore[assignment]
        seconds = [None] * len(table)
    lines = table.lines or ([table.line_base + i for i in range(len(table))] if table.line_base is not None else None)
    return [TextInput(t, b, None if lines is None else lines[i], f"{p} {table.where(i)}")
            for i, (t, b) in enumerate(zip(_cells(table, first), seconds))]


def _every_line(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for every line of a text file, blank lines included; a bad byte names its line."""
    out: list[tuple[int, str]] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                out.append((line_no, raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\r\n")))
            except UnicodeDecodeError as e:
                raise SftuneError(_utf8_message(path, line_no, raw, e)) from None
    return out


def _cells(table: _Table, column: str) -> list[str]:
    """A column's values as strings; a missing value (None, NaN) is ""."""
    return [v if isinstance(v, str) else ("" if v is None or _is_nan(v) else str(v)) for v in table.data[column]]


def read_texts_for_prediction(path: str | Path, text_column: ColumnRef = None) -> list[str]:
    """The non-empty texts of a file to classify (:func:`read_prediction_inputs`), for uses that
    need no one-to-one output (drift checks); ``sftune predict`` keeps every input."""
    texts = [i.text for i in read_prediction_inputs(path, text_column) if i.text.strip()]
    if not texts:
        raise SftuneError(f"'{Path(path).expanduser()}' has no texts (every one is empty)")
    return texts


# ---------------------------------------------------------------------------- evaluation


def read_labeled_texts(path: str | Path, text_column: ColumnRef = None, label_column: ColumnRef = None,
                       text_pair_column: ColumnRef = None, multi_label: bool = False,
                       label_separator: str = ",", trained: tuple[ColumnRef, ColumnRef, ColumnRef] = (None, None, None),
                       flag: str = "--data") -> list[TextSample]:
    """Every labeled text of an evaluation source: a table file, a folder's val/dev file, or a
    saved Hugging Face dataset's validation split (no split is made).

    Columns are found as training finds them: a column named by ``text_column``/``label_column``/
    ``text_pair_column`` (the command line's flags) must exist; else the column the model was
    trained on (``trained``: text, label, text pair) when this data has it; else the usual names
    (``text``, ``sentence``, ... / ``label``, ...). A model trained on sentence pairs needs a
    second-text column. ``flag`` is the option that named ``path`` (named in messages).

    Raises SftuneError for a missing path or column, empty texts and missing labels."""
    given = (text_column, label_column, text_pair_column)
    table = _read_val_source(Path(path).expanduser(), tuple(r for r in given + tuple(trained) if r is not None), flag)
    refs = [g if g is not None else (t if t is not None and _has_column(table, t) else None)
            for g, t in zip(given, trained)]
    columns = _resolve_columns(table, *refs)
    if trained[2] is not None and columns["text_pair"] is None:
        columns["text_pair"] = _column(table, None, "text pair", "--text-pair-column", PAIR_COLUMNS)
        if columns["text_pair"] is None:
            raise SftuneError(f"'{table.source}': the model classifies sentence pairs (trained on column "
                              f"'{trained[2]}'); no second-text column found (columns: {', '.join(table.columns)}); "
                              f"name it with --text-pair-column")
    return _samples(table, columns, multi_label, label_separator)


def _has_column(table: _Table, ref: ColumnRef) -> bool:
    name = str(ref).strip()
    if name in table.columns or name.lower() in {c.lower() for c in table.columns}:
        return True
    return table.headerless and _is_index(ref) and int(name) < len(table.columns)
