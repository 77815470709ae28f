"""find_labeled_images: folder layouts, CSV/TSV manifests, splits, errors, fingerprints."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

from conftest import write_digits
from sftune.data.sources import find_labeled_images
from sftune.errors import SftuneError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _small(tmp_path: Path, name: str = "data", classes=(0, 1, 2), per_class: int = 5) -> Path:
    return write_digits(tmp_path / name, classes=classes, per_class=per_class)


def _manifest_rows(root: Path, data_dir: Path) -> list[tuple[str, str]]:
    """(path relative to root, label) for every image under data_dir/<class>/."""
    return [(f.relative_to(root).as_posix(), f.parent.name) for f in sorted(data_dir.rglob("*.png"))]


# ------------------------------------------------------------------------------ layouts


def test_train_val_layout(digits_split_dir):
    data = find_labeled_images(digits_split_dir)
    assert data.classes == ["0", "1", "2"]
    assert len(data.train) == 90 and len(data.val) == 30
    assert all(s.path.parent.parent.name == "train" for s in data.train)
    assert all(s.path.parent.parent.name == "val" for s in data.val)
    assert data.split["method"] == "given"
    assert data.split["val_files"][0].startswith("val/")
    assert data.skipped == []
    assert data.class_to_idx == {"0": 0, "1": 1, "2": 2}


def test_flat_layout_makes_a_stratified_seeded_split(digits_dir):
    data = find_labeled_images(digits_dir, val_fraction=0.2, seed=7)
    assert data.classes == ["0", "1", "2"]
    # 30 per class, 20 % -> 6 val images per class
    assert len(data.val) == 18 and len(data.train) == 72
    assert {s.label for s in data.val} == set(data.classes)
    for c in data.classes:
        assert sum(s.label == c for s in data.val) == 6
    assert not {s.path for s in data.train} & {s.path for s in data.val}
    assert data.split["method"] == "stratified"
    assert data.split["seed"] == 7 and data.split["val_fraction"] == 0.2
    assert data.split["val_files"] == sorted(str(s.path.relative_to(digits_dir)) for s in data.val)


def test_same_seed_same_split_other_seed_other_split(digits_dir):
    a = find_labeled_images(digits_dir, seed=3)
    b = find_labeled_images(digits_dir, seed=3)
    c = find_labeled_images(digits_dir, seed=4)
    assert [s.path for s in a.val] == [s.path for s in b.val]
    assert a.split == b.split
    assert {s.path for s in a.val} != {s.path for s in c.val}


def test_every_class_reaches_val_even_when_tiny(tmp_path):
    root = _small(tmp_path, per_class=2)  # round(2 * 0.2) = 0, but at least one goes to val
    data = find_labeled_images(root, val_fraction=0.2)
    assert {s.label for s in data.val} == {"0", "1", "2"}
    assert {s.label for s in data.train} == {"0", "1", "2"}


def test_separate_val_path(tmp_path):
    train = _small(tmp_path, "train_only", per_class=4)
    val = _small(tmp_path, "held_out", classes=(0, 1), per_class=2)
    data = find_labeled_images(train, val_path=val)
    assert len(data.train) == 12 and len(data.val) == 4
    assert data.split["method"] == "given" and data.split["source"] == str(val)


def test_csv_manifest_relative_paths_resolve_against_manifest_folder(tmp_path, monkeypatch):
    root = tmp_path / "project"
    images = _small(root, "imgs", per_class=5)
    rows = _manifest_rows(root, images)
    manifest = root / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{lbl}\n" for p, lbl in rows), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the manifest, not the working directory
    data = find_labeled_images(manifest)
    assert data.classes == ["0", "1", "2"]
    assert len(data.train) + len(data.val) == 15
    assert all(s.path.is_file() and s.path.is_relative_to(root) for s in data.train + data.val)
    assert data.split["method"] == "stratified"
    assert all(v.startswith("imgs/") for v in data.split["val_files"])
    assert data.skipped == []


def test_csv_manifest_with_split_column(tmp_path):
    root = tmp_path / "project"
    images = _small(root, "imgs", per_class=4)
    rows = _manifest_rows(root, images)
    lines = ["Path,Label,Split"]  # header case does not matter
    for i, (p, lbl) in enumerate(rows):
        lines.append(f"{p},{lbl},{'val' if i % 4 == 0 else 'train'}")
    manifest = root / "m.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = find_labeled_images(manifest)
    assert len(data.val) == 3 and len(data.train) == 9
    assert data.split["method"] == "given"
    expected_val = sorted(p for i, (p, _) in enumerate(rows) if i % 4 == 0)
    assert data.split["val_files"] == expected_val


def test_csv_manifest_with_bom_and_absolute_paths(tmp_path):
    images = _small(tmp_path, "imgs", classes=(3, 4), per_class=3)
    rows = [(str(f), f.parent.name) for f in sorted(images.rglob("*.png"))]
    manifest = tmp_path / "sub" / "abs.csv"
    manifest.parent.mkdir()
    manifest.write_bytes(("path,label\n" + "".join(f"{p},{lbl}\n" for p, lbl in rows)).encode("utf-8-sig"))
    with pytest.raises(SftuneError, match="outside the manifest's folder"):  # a stranger's manifest cannot reach out
        find_labeled_images(manifest)
    data = find_labeled_images(manifest, allow_outside_root=True)
    assert data.classes == ["3", "4"]
    assert len(data.train) + len(data.val) == 6


def test_tsv_manifest(tmp_path):
    root = tmp_path / "project"
    images = _small(root, "imgs", classes=(5, 6), per_class=4)
    rows = _manifest_rows(root, images)
    manifest = root / "m.tsv"
    manifest.write_text("path\tlabel\n" + "".join(f"{p}\t{lbl}\n" for p, lbl in rows), encoding="utf-8")
    data = find_labeled_images(manifest)
    assert data.classes == ["5", "6"]
    assert len(data.train) + len(data.val) == 8


# ------------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(SftuneError, match="does not exist") as e:
        find_labeled_images(missing)
    assert str(missing) in str(e.value)


def test_missing_val_path(tmp_path, digits_dir):
    missing = tmp_path / "no_val"
    with pytest.raises(SftuneError) as e:
        find_labeled_images(digits_dir, val_path=missing)
    assert str(missing) in str(e.value) and "data.val_path" in str(e.value)


def test_folder_without_class_subfolders(tmp_path):
    root = tmp_path / "loose"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    with pytest.raises(SftuneError, match="no class sub-folders") as e:
        find_labeled_images(root)
    assert str(root) in str(e.value)


def test_empty_class_folder(tmp_path, digits_dir):
    root = _copy(digits_dir, tmp_path / "d")
    (root / "9").mkdir()
    with pytest.raises(SftuneError, match="has no images") as e:
        find_labeled_images(root)
    assert str(root / "9") in str(e.value)


def test_only_one_class(tmp_path):
    root = _small(tmp_path, classes=(1,), per_class=5)
    with pytest.raises(SftuneError, match="only one class") as e:
        find_labeled_images(root)
    assert str(root) in str(e.value) and "'1'" in str(e.value)


def test_val_class_missing_from_train(tmp_path):
    root = tmp_path / "tv"
    write_digits(root / "train", classes=(0, 1), per_class=4)
    write_digits(root / "val", classes=(0, 1, 2), per_class=2)
    with pytest.raises(SftuneError, match="validation has classes that training lacks") as e:
        find_labeled_images(root)
    assert ": 2;" in str(e.value)  # names the class


def test_csv_without_label_column(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("path,category\na.png,cat\n", encoding="utf-8")
    with pytest.raises(SftuneError) as e:
        find_labeled_images(manifest)
    msg = str(e.value)
    assert str(manifest) in msg and "'label'" in msg and "path, category" in msg


def test_csv_without_header(tmp_path):
    manifest = tmp_path / "empty.csv"
    manifest.write_text("", encoding="utf-8")
    with pytest.raises(SftuneError, match="no 'path' column") as e:
        find_labeled_images(manifest)
    assert str(manifest) in str(e.value)


def test_non_utf8_csv(tmp_path):
    manifest = tmp_path / "latin1.csv"
    manifest.write_bytes("path,label\ncaf\xe9/a.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(SftuneError, match="not UTF-8") as e:
        find_labeled_images(manifest)
    assert str(manifest) in str(e.value)


def test_csv_empty_label_names_the_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,x\nb.png,\n", encoding="utf-8")
    with pytest.raises(SftuneError, match="line 3: empty path or label") as e:
        find_labeled_images(manifest)
    assert str(manifest) in str(e.value)


def test_csv_unknown_split_value(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\na.png,x,test\n", encoding="utf-8")
    with pytest.raises(SftuneError, match="line 2: split 'test' must be train or val"):
        find_labeled_images(manifest)


def test_csv_row_with_extra_fields_is_a_user_error(tmp_path):
    root = tmp_path / "project"
    images = _small(root, "imgs", classes=(0, 1), per_class=3)
    rows = _manifest_rows(root, images)
    manifest = root / "m.csv"
    # one field too many per row (e.g. an unquoted comma in a hand-edited manifest)
    manifest.write_text("path,label\n" + "".join(f"{p},{lbl},extra\n" for p, lbl in rows), encoding="utf-8")
    with pytest.raises(SftuneError) as e:
        find_labeled_images(manifest)
    assert str(manifest) in str(e.value)


def test_non_manifest_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hi")
    with pytest.raises(SftuneError, match="not a .csv/.tsv manifest"):
        find_labeled_images(path)


def test_corrupt_images_skipped_with_count_or_refused_when_strict(tmp_path, digits_dir):
    root = _copy(digits_dir, tmp_path / "d")
    (root / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "1" / "empty.jpg").write_bytes(b"")
    (root / "2" / "text.jpg").write_text("hello")
    data = find_labeled_images(root)
    assert len(data.skipped) == 3
    assert sorted(Path(p).name for p, _ in data.skipped) == ["broken.png", "empty.jpg", "text.jpg"]
    assert all(reason for _, reason in data.skipped)
    assert len(data.train) + len(data.val) == 90  # every good image kept, no bad one
    assert not any(s.path.name in ("broken.png", "empty.jpg", "text.jpg") for s in data.train + data.val)

    with pytest.raises(SftuneError) as e:
        find_labeled_images(root, strict=True)
    assert any(name in str(e.value) for name in ("broken.png", "empty.jpg", "text.jpg"))
    assert "--strict" in str(e.value)


def test_all_images_of_the_only_train_source_unreadable(tmp_path):
    root = tmp_path / "bad"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "x.png").write_bytes(b"junk")
    with pytest.raises(SftuneError, match="no readable training images") as e:
        find_labeled_images(root)
    assert str(root) in str(e.value)


# -------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_content_sensitive(tmp_path):
    root = _small(tmp_path, per_class=4)
    first = find_labeled_images(root).fingerprint
    assert len(first) == 64
    assert find_labeled_images(root).fingerprint == first
    assert find_labeled_images(root, seed=99).fingerprint == first  # the split does not enter it

    target = sorted((root / "1").iterdir())[0]
    Image.new("L", (8, 8), 3).save(target)  # same name, different (still valid) bytes
    changed = find_labeled_images(root).fingerprint
    assert changed != first


def test_fingerprint_changes_with_a_relabel(tmp_path):
    root = _small(tmp_path, per_class=4)
    before = find_labeled_images(root).fingerprint
    moved = sorted((root / "1").iterdir())[0]
    moved.rename(root / "2" / moved.name)
    assert find_labeled_images(root).fingerprint != before


# ------------------------------------------------------------------- hidden files, loops


def test_hidden_files_and_folders_are_ignored(tmp_path, digits_dir):
    root = _copy(digits_dir, tmp_path / "d")
    (root / "0" / ".hidden.png").write_bytes(b"junk")  # would be 'skipped' if it were scanned
    (root / "0" / "._0001.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    (root / "1" / ".thumbs").mkdir()
    Image.new("L", (8, 8)).save(root / "1" / ".thumbs" / "t.png")
    (root / ".cache").mkdir()  # a hidden folder is not a class
    Image.new("L", (8, 8)).save(root / ".cache" / "c.png")
    (root / "2" / "README.txt").write_text("not an image")
    data = find_labeled_images(root)
    assert data.classes == ["0", "1", "2"]
    assert data.skipped == []
    assert len(data.train) + len(data.val) == 90
    assert not any(part.startswith(".") for s in data.train + data.val for part in s.path.relative_to(root).parts)


def test_symlink_loop_does_not_hang(tmp_path, digits_dir):
    root = _copy(digits_dir, tmp_path / "d")
    os.symlink(root / "0", root / "0" / "again")  # 0/again -> 0
    os.symlink(root, root / "1" / "up")  # 1/up -> the data root
    result: dict = {}

    def scan():
        try:
            result["data"] = find_labeled_images(root)
        except BaseException as e:  # pragma: no cover - reported below
            result["error"] = e

    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "find_labeled_images hangs on a symlink loop"
    assert "error" not in result, result.get("error")
    data = result["data"]
    assert len(data.train) + len(data.val) == 90  # links to folders are not followed
    assert data.classes == ["0", "1", "2"]
