"""Bad CSV/TSV manifests: missing files, bad encodings and bytes, missing/extra columns, mixed labels,
paths that escape the data root. Each: a warning + count, or one clear line naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftune.data.sources import find_labeled_images
from sftune.errors import SftuneError

from .conftest import assert_clear_error, cli_run, good_images, train_args


def _rows(root: Path) -> list[tuple[str, str]]:
    return [(f.relative_to(root).as_posix(), f.parent.name) for f in sorted(root.rglob("*.png"))]


def _manifest(root: Path, text: str, name: str = "labels.csv", encoding: str = "utf-8") -> Path:
    path = root / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    return good_images(tmp_path / "data", per_class=4)


def _csv(images: Path, extra_rows: str = "", header: str = "path,label") -> str:
    return header + "\n" + "".join(f"{p},{y}\n" for p, y in _rows(images)) + extra_rows


def test_missing_files_are_skipped_counted_and_fatal_when_strict(images, tmp_path, bad_input):
    manifest = _manifest(images, _csv(images, "0/gone.png,0\nnowhere/else.jpg,1\n"))
    data = find_labeled_images(manifest)
    assert [(Path(p).name, r) for p, r in data.skipped] == [
        ("gone.png", "file not found; fix its path or remove it from the data"),
        ("else.jpg", "file not found; fix its path or remove it from the data")]
    bad_input("manifest rows naming missing files", "skipped with warning")

    out = tmp_path / "run"
    result = cli_run(*train_args(manifest, out))
    assert result.exit_code == 0, result.output
    assert f"warning: skipped {images / '0' / 'gone.png'}: file not found" in result.output
    assert json.loads((out / "metrics.json").read_text())["skipped"] == 2
    assert_clear_error(cli_run(*train_args(manifest, tmp_path / "strict", "--strict")), "gone.png", "file not found",
                       "--strict")
    bad_input("manifest rows naming missing files, --strict", "clear error")


BROKEN = {
    # name: (manifest bytes builder, words the error must hold)
    "latin-1 encoding": (lambda rows: ("path,label\n" + rows + "0/x.png,caf\xe9\n").encode("latin-1"),
                         ["not UTF-8 text", "save it as UTF-8"]),
    "UTF-16 encoding": (lambda rows: ("path,label\n" + rows).encode("utf-16"), ["not UTF-8 text"]),
    "NUL bytes": (lambda rows: ("path,label\n" + rows + "0/a\x00.png,0\n").encode(), ["line 14", "NUL byte"]),
    "field over the csv size limit": (lambda rows: ("path,label\n" + rows + '"' + "x" * 200_000 + '",0\n').encode(),
                                      ["not a readable CSV", "field larger than field limit"]),
    "binary garbage": (lambda rows: bytes(range(256)) * 4, ["labels.csv"]),
    "no label column": (lambda rows: ("path,class_name\n" + rows).encode(), ["no 'label' column", "path,label"]),
    "no header": (lambda rows: rows.encode(), ["no 'path' column"]),
    "empty file": (lambda rows: b"", ["no 'path' column", "columns: none"]),
    "a row with an extra field": (lambda rows: ("path,label\n" + rows + "0/a.png,0,oops\n").encode(),
                                  ["line 14", "3 fields but the header names 2"]),
    "a row with a missing field": (lambda rows: ("path,label\n" + rows + "0/a.png\n").encode(),
                                   ["line 14", "empty path or label"]),
    "an unknown split value": (lambda rows: ("path,label,split\n" + rows.replace("\n", ",train\n") + "0/a.png,0,tset\n").encode(),
                               ["line 14", "split 'tset' must be train or val"]),
    "header only": (lambda rows: b"path,label\n", ["no readable training images"]),
    "path escaping with ../": (lambda rows: ("path,label\n" + rows + "../../../../etc/passwd,0\n").encode(),
                               ["line 14", "outside the manifest's folder", "data.allow_outside_root=true"]),
    "absolute path outside": (lambda rows: ("path,label\n" + rows + "/etc/hostname,0\n").encode(),
                              ["line 14", "'/etc/hostname' points outside"]),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_manifest_is_one_clear_line(kind, images, tmp_path, bad_input):
    build, needles = BROKEN[kind]
    rows = "".join(f"{p},{y}\n" for p, y in _rows(images))
    manifest = images / "labels.csv"
    manifest.write_bytes(build(rows))
    with pytest.raises(SftuneError) as e:
        find_labeled_images(manifest)
    message = str(e.value)
    assert "\n" not in message and str(manifest) in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    result = cli_run(*train_args(manifest, tmp_path / "run"))
    assert_clear_error(result, str(manifest))
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()
    bad_input(f"manifest: {kind}", "clear error")


def test_symlink_out_of_the_root_is_refused(images, tmp_path, bad_input):
    outside = good_images(tmp_path / "elsewhere", per_class=1, classes=(0,))
    (images / "sneaky.png").symlink_to(next(outside.rglob("*.png")))
    manifest = _manifest(images, _csv(images, "sneaky.png,0\n"))
    with pytest.raises(SftuneError, match="line 14: 'sneaky.png' points outside"):
        find_labeled_images(manifest)
    bad_input("manifest: symlink leading outside the root", "clear error")


def test_outside_paths_are_read_when_allowed(images, tmp_path, bad_input):
    other = good_images(tmp_path / "other", per_class=2)
    lines = "".join(f"{f},{f.parent.name}\n" for f in sorted(other.rglob("*.png")))  # absolute paths
    manifest = _manifest(images, _csv(images, lines + "../other/0/" + sorted(p.name for p in (other / "0").iterdir())[0] + ",0\n"))
    data = find_labeled_images(manifest, allow_outside_root=True)
    assert len(data.train) + len(data.val) == 12 + 6 + 1 and not data.skipped
    out = tmp_path / "run"
    result = cli_run(*train_args(manifest, out, "--set", "data.allow_outside_root=true"))
    assert result.exit_code == 0, result.output
    bad_input("manifest: outside paths with data.allow_outside_root", "handled")


def test_harmless_oddities_are_read(images, bad_input):
    """BOM, CRLF line ends, upper-case/space-padded header, an extra notes column, quoted commas, blank lines."""
    rows = "".join(f' {p} ,"{y}",note "with, comma"\r\n'.replace('note "with, comma"', '"note, with comma"')
                   for p, y in _rows(images))
    manifest = _manifest(images, "\ufeffPath , LABEL,Notes\r\n\r\n" + rows)
    data = find_labeled_images(manifest)
    assert len(data.train) + len(data.val) == 12 and data.classes == ["0", "1", "2"] and not data.warnings
    bad_input("manifest: BOM, CRLF, odd header case, extra column, quoted commas", "handled")


def test_labels_mixing_numbers_and_names_are_warned_and_fatal_when_strict(images, bad_input):
    relabel = {"0": "0", "1": "cat", "2": "2.0"}
    lines = [f"{p},{relabel[y] if i % 2 or y != '2' else '2'}\n" for i, (p, y) in enumerate(_rows(images))]
    manifest = _manifest(images, "path,label\n" + "".join(lines))  # class 2 written as 2 and as 2.0
    data = find_labeled_images(manifest)
    assert data.classes == ["0", "2", "cat"]  # '2' and '2.0' are one class by the class-name rule (issue 17)
    problems = [p for _, p in data.warnings]
    assert any("labels mix numbers (0, 2) and names (cat)" in p for p in problems), problems
    assert any("labels '2' (2), '2.0' (2) are one class" in p and "merged as '2'" in p for p in problems), problems
    bad_input("manifest: labels that are numbers in one row and strings in the next", "warning")
    with pytest.raises(SftuneError, match="'2.0' \\(2\\) are one class"):
        find_labeled_images(manifest, strict=True)
    bad_input("manifest: mixed labels with --strict", "clear error")


def test_tsv_given_a_comma_file(images, bad_input):
    # Issue 17 item 10: the delimiter of every table is read from its header, so a .tsv written
    # with commas is read as such (it was an error: "no 'path' column (columns: path,label)").
    manifest = _manifest(images, _csv(images), name="labels.tsv")
    data = find_labeled_images(manifest)
    assert len(data.train) + len(data.val) == len(_rows(images)) == 12 and data.skipped == []
    bad_input("manifest: .tsv holding commas", "handled")
