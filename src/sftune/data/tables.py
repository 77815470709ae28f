"""What every delimited table sftune reads has in common: its delimiter and its paths.

Used by the text tables (:mod:`sftune.data.texts`), the image manifests
(:mod:`sftune.data.sources`) and the segmentation and detection manifests, so that a
``;``-separated ``.csv`` (what a spreadsheet writes in many locales) or a manifest written
on Windows (``train\\ants\\x.jpg``) is read the same way everywhere.
"""

from __future__ import annotations

from pathlib import Path

DELIMITERS = (",", "\t", ";", "|")
DELIMITER_NAMES = {",": "','", "\t": "tab", ";": "';'", "|": "'|'"}


def sniff_delimiter(lines: list[str], default: str) -> str:
    """The delimiter of a table from its first non-blank ``lines`` (the header first).

    ``default`` (what the file's extension says: ``,`` for .csv, tab for .tsv) wins whenever
    the first line holds it. Otherwise the first of tab, ``;``, ``,``, ``|`` that the first
    line holds and that at least 90% of the lines hold as often is taken (a header such as
    ``text;label`` over rows ``great, really great;1``); failing that, ``default``."""
    if not lines or default in lines[0]:
        return default
    header = lines[0]
    for delimiter in ("\t", ";", ",", "|"):
        n = header.count(delimiter)
        if delimiter == default or n == 0:
            continue
        if sum(line.count(delimiter) >= n for line in lines) >= 0.9 * len(lines):
            return delimiter
    return default


def read_head(path: Path, n: int = 50) -> list[str]:
    """The first ``n`` non-blank lines of a file, decoded as UTF-8 with bad bytes replaced
    (for sniffing only: the readers themselves report bad bytes). [] when unreadable."""
    out: list[str] = []
    try:
        with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as fh:
            for line in fh:
                if line.strip():
                    out.append(line.rstrip("\r\n"))
                if len(out) >= n:
                    break
    except OSError:
        return []
    return out


def file_delimiter(path: Path) -> str:
    """The delimiter of the table at ``path``: tab for .tsv, ``,`` otherwise, unless its first
    lines say another (:func:`sniff_delimiter`)."""
    default = "\t" if path.suffix.lower() == ".tsv" else ","
    return sniff_delimiter(read_head(path), default)


def manifest_path(value: str, base: Path) -> Path:
    """A path written in a manifest row, resolved against the manifest's folder ``base``.

    A Windows path (``train\\ants\\x.jpg``) names the same file as ``train/ants/x.jpg`` when
    no file of its literal name exists (``\\`` is a legal file-name character on Linux)."""
    file = Path(value)
    file = file if file.is_absolute() else base / file
    if "\\" in value and not file.exists():
        posix = Path(value.replace("\\", "/"))
        posix = posix if posix.is_absolute() else base / posix
        if posix.exists():
            return posix
    return file


def missing_paths_hint(paths: list[str]) -> str:
    """`` (Windows separators?)`` when the paths that do not exist are written with ``\\``, else ""."""
    return " (Windows separators? write paths with /)" if paths and any("\\" in p for p in paths) else ""
