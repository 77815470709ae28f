"""Issue 17, items 1-4: silent data loss or wrong classes, each example as a test with its right value.

1. folder links are followed (loop-safe) when training and predicting; what is not used is named;
2. labels that differ only by case, whitespace or number form are one class (merged with a warning,
   fatal with --strict), from every source: folders, manifests, text tables, JSON/Parquet values;
3. class names are NFC: a macOS (NFD) ``café`` folder and an NFC one are the same class;
4. text train/val leakage, one text under two labels and repeated texts are warned (fatal with strict).

Recipes are small: real ants/bees JPEGs from ../shared/data/hymenoptera_data, real SST-2 sentences,
or the UCI digits of conftest.write_digits.
"""

from __future__ import annotations

import csv
import json
import shutil
import unicodedata
from pathlib import Path

import pytest

from conftest import HYMENOPTERA, SHARED_DATA, write_digits
from sftune import bundle as B
from sftune.data.labels import align_to_classes, class_key, class_name, merge_variants
from sftune.data.sources import find_labeled_images, find_unlabeled_images
from sftune.data.texts import find_labeled_texts, read_labeled_texts
from sftune.errors import SftuneError

from .conftest import cli_run, train_args

SST2 = SHARED_DATA / "SST-2"
CAFE_NFC, THE_NFC = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFC", "thé")
CAFE_NFD, THE_NFD = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFD", "thé")
assert CAFE_NFC != CAFE_NFD and THE_NFC != THE_NFD


def _needs(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (tests read ../shared/data)")


def _jpgs(split: str, cls: str) -> list[Path]:
    _needs(HYMENOPTERA)
    return sorted(p for p in (HYMENOPTERA / split / cls).iterdir() if p.suffix.lower() == ".jpg")


def _copy(files: list[Path], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, dest / f.name)
    return dest


def _sst(name: str, n: int | None = None) -> list[tuple[str, str]]:
    _needs(SST2 / name)
    with (SST2 / name).open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        rows = [(sentence, label) for sentence, label in reader]
    return rows[:n] if n else rows


def _write_tsv(path: Path, rows, header: str = "sentence\tlabel") -> Path:
    path.write_text(header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return path


@pytest.fixture
def linked_ants(tmp_path) -> Path:
    """The issue's example: train/ants (15) + train/bees (15), val 5 + 5, and
    train/ants/more_ants -> elsewhere/ants_extra/ holding 10 more real ants."""
    ants = _jpgs("train", "ants")
    data = tmp_path / "data"
    _copy(ants[:15], data / "train" / "ants")
    _copy(_jpgs("train", "bees")[:15], data / "train" / "bees")
    _copy(_jpgs("val", "ants")[:5], data / "val" / "ants")
    _copy(_jpgs("val", "bees")[:5], data / "val" / "bees")
    extra = _copy(ants[15:25], tmp_path / "elsewhere" / "ants_extra")
    (data / "train" / "ants" / "more_ants").symlink_to(extra, target_is_directory=True)
    return data


# ------------------------------------------------------------------ 1. folder links


def test_folder_link_is_followed_for_training_and_prediction(linked_ants, bad_input):
    data = find_labeled_images(linked_ants)
    assert len(data.train) == 40 and sum(s.label == "ants" for s in data.train) == 25  # was 30 and 15
    assert len(data.val) == 10 and not data.skipped and not data.warnings
    assert sum("more_ants" in s.path.parts for s in data.train) == 10
    assert len(find_unlabeled_images([linked_ants / "train" / "ants"])) == 25  # predict train/ants: was 15
    bad_input("class folder holding a link to a folder of more images", "handled")


def test_folder_link_counts_in_a_run_and_in_predict(linked_ants, tmp_path, bad_input):
    out = tmp_path / "run"
    result = cli_run(*train_args(linked_ants, out))
    assert result.exit_code == 0, result.output
    lineage = json.loads((out / B.LINEAGE).read_text())["data"]
    assert lineage["train_images"] == 40 and lineage["val_images"] == 10 and lineage["warnings"] == []
    assert json.loads((out / B.METRICS).read_text())["data_warnings"] == 0
    predicted = cli_run("predict", out, linked_ants / "train" / "ants", "--json")
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.stdout[predicted.stdout.index("["):])
    assert len(rows) == 25 and sum("more_ants" in r["path"] for r in rows) == 10
    bad_input("train and predict through a folder link", "handled")


def test_looping_and_repeated_links_are_not_followed_and_are_named(linked_ants, tmp_path, bad_input):
    ants = linked_ants / "train" / "ants"
    (ants / "self").symlink_to(ants, target_is_directory=True)
    (ants / "to_train").symlink_to(linked_ants / "train", target_is_directory=True)  # would pull in bees
    (ants / "to_root").symlink_to(linked_ants, target_is_directory=True)
    (ants / "again").symlink_to(tmp_path / "elsewhere" / "ants_extra", target_is_directory=True)  # a second link
    (tmp_path / "elsewhere" / "ants_extra" / "back").symlink_to(ants, target_is_directory=True)  # loop via the link
    (linked_ants / "train" / "up").symlink_to(linked_ants, target_is_directory=True)  # a "class" that is the root
    data = find_labeled_images(linked_ants)
    assert len(data.train) == 40 and sum(s.label == "ants" for s in data.train) == 25 and data.classes == ["ants", "bees"]
    named = {Path(p).name: problem for p, problem in data.warnings}
    assert set(named) == {"self", "to_train", "to_root", "more_ants", "back", "up"}, data.warnings
    assert "a loop" in named["self"] and "a loop" in named["to_train"] and "a loop" in named["up"]
    assert "already read as" in named["more_ants"]  # again/ and more_ants/ are one folder: read once
    with pytest.raises(SftuneError, match="a loop.*drop --strict"):
        find_labeled_images(linked_ants, strict=True)
    unused: list[tuple[str, str]] = []
    assert len(find_unlabeled_images([ants], unused)) == 25 and len(unused) == 5  # predict: same walk, no hang
    bad_input("folder links that loop (to itself, a parent, the root) or repeat a folder", "warning")


def test_files_that_are_not_images_are_counted_and_named(linked_ants, bad_input):
    (linked_ants / "train" / "ants" / "notes.txt").write_text("ants from the garden")
    (linked_ants / "train" / "bees" / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (linked_ants / "train" / "bees" / ".DS_Store").write_bytes(b"\x00")  # OS litter: silent
    (linked_ants / "train" / "bees" / "Thumbs.db").write_bytes(b"\x00")
    (linked_ants / "val" / "ants" / "broken").symlink_to(linked_ants / "gone", target_is_directory=True)
    data = find_labeled_images(linked_ants)
    assert len(data.train) == 40 and not data.skipped
    assert sorted(Path(p).name for p, _ in data.warnings) == ["IMG_0001.heic", "broken", "notes.txt"]
    assert all("not used" in problem for _, problem in data.warnings)
    unused: list[tuple[str, str]] = []
    find_unlabeled_images([linked_ants / "train"], unused)
    assert sorted(Path(p).name for p, _ in unused) == ["IMG_0001.heic", "notes.txt"]
    with pytest.raises(SftuneError, match="not an image file"):
        find_labeled_images(linked_ants, strict=True)
    bad_input("non-image files in class folders", "warning")


# ------------------------------------------------------------------ 2. one class per name


def test_the_rule_on_values_of_every_type():
    assert [class_name(v) for v in (1, 1.0, "1", " 1 ", " Positive", "positive", True, None, float("nan"), "  ")] == \
        ["1", "1", "1", "1", "Positive", "positive", "True", None, None, None]
    assert class_key("1") == class_key("1.0") == class_key("01") == class_key("+1") == class_key("1e0")
    assert class_key("Positive") == class_key("POSITIVE") == class_key("positive")
    assert class_key("very  good") == class_key("Very good") and class_key("1") != class_key("1.5")
    assert class_key(CAFE_NFD) == class_key(CAFE_NFC) and class_name(CAFE_NFD) == CAFE_NFC
    rename, merged = merge_variants({"positive": 5, "Positive": 2, "negative": 7, "1": 3, "1.0": 3})
    assert rename == {"Positive": "positive", "1.0": "1"}  # most frequent spelling; a tie: first in order
    assert merged == [("1", [("1", 3), ("1.0", 3)]), ("positive", [("positive", 5), ("Positive", 2)])]
    assert align_to_classes(["Positive", "1.0", CAFE_NFD, "other"], ["positive", "1", CAFE_NFC]) == \
        {"Positive": "positive", "1.0": "1", CAFE_NFD: CAFE_NFC}


def test_text_labels_differing_by_case_are_one_class(tmp_path, bad_input):
    rows = [(s, "positive" if y == "1" else "negative") for s, y in _sst("train.tsv", 60)]
    positives = [i for i, (_, y) in enumerate(rows) if y == "positive"]
    for i in positives[:3]:
        rows[i] = (rows[i][0], "Positive")
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    data = find_labeled_texts(path)
    assert data.classes == ["negative", "positive"]  # was 3 classes, silently
    n = len(positives)
    assert [p for _, p in data.warnings if "one class" in p] == [
        f"labels 'positive' ({n - 3}), 'Positive' (3) are one class (labels are one class when they match "
        f"ignoring case, surrounding/repeated whitespace, Unicode form (NFC) and number form (1 = 1.0 = 01)); "
        f"merged as 'positive', the most frequent spelling — write each label one way"]
    assert {s.label for s in data.train + data.val} == {"negative", "positive"}
    bad_input("text labels positive/negative with a few Positive", "warning")
    with pytest.raises(SftuneError, match="'positive' .*'Positive' \\(3\\) are one class.*drop --strict"):
        find_labeled_texts(path, strict=True)
    bad_input("text labels differing by case with --strict", "clear error")


def test_text_labels_differing_by_number_form_are_one_class(tmp_path, bad_input):
    rows = _sst("train.tsv", 80)
    spelled = [(s, {"1": ("1", "1.0"), "0": ("0", "0.0")}[y][i % 2]) for i, (s, y) in enumerate(rows)]
    data = find_labeled_texts(_write_tsv(tmp_path / "train.tsv", spelled))
    assert data.classes == ["0", "1"]  # was 4 classes: 0, 0.0, 1, 1.0 (a whole number is named by its digits)
    merged = [p for _, p in data.warnings if "one class" in p]
    assert len(merged) == 2 and "'0'" in merged[0] and "'0.0'" in merged[0] and "'1.0'" in merged[1]
    bad_input("text labels 1, 0, 1.0, 0.0", "warning")


def test_json_and_parquet_label_values_of_any_type(tmp_path, bad_input):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _sst("train.tsv", 60)
    ones = [1, 1.0, "1", " 1 ", "1.0"]
    zeros = [0, 0.0, "0", "0", "0.0"]
    values = [(ones if y == "1" else zeros)[i % 5] for i, (_, y) in enumerate(rows)]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps({"text": s, "label": v}) + "\n" for (s, _), v in zip(rows, values)))
    data = find_labeled_texts(jsonl)
    assert data.classes == ["0", "1"]
    assert sorted(p.split(" are one class")[0] for _, p in data.warnings if "one class" in p) == [
        f"labels '0' ({sum(v in (0, '0') for v in values)}), '0.0' ({values.count('0.0')})",
        f"labels '1' ({sum(v in (1, '1', ' 1 ') for v in values)}), '1.0' ({values.count('1.0')})"]
    spellings = {"1": ["positive", " Positive", "positive", "POSITIVE"], "0": ["negative", "Negative ", "negative"]}
    seen = {"0": 0, "1": 0}
    words = []
    for _, y in rows:  # per class in turn: 'positive' half the time, the others a quarter each
        words.append(spellings[y][seen[y] % len(spellings[y])])
        seen[y] += 1
    parquet = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": [s for s, _ in rows], "label": words,
                             "score": [float(y) for _, y in rows]}), parquet)
    assert find_labeled_texts(parquet).classes == ["negative", "positive"]
    assert find_labeled_texts(parquet, label_column="score").classes == ["0", "1"]  # 1.0 is 1, no warning
    assert not [w for w in find_labeled_texts(parquet, label_column="score").warnings if "one class" in w[1]]
    bad_input("JSON/Parquet label values 1, 1.0, '1', '1.0', ' Positive', 'POSITIVE'", "warning")


def test_multi_label_variants_merge(tmp_path):
    rows = _sst("train.tsv", 40)
    tags = ["drama,comedy", "drama", "comedy", "DRAMA , Comedy"]
    path = _write_tsv(tmp_path / "train.tsv", [(s, tags[i % 4]) for i, (s, _) in enumerate(rows)])
    data = find_labeled_texts(path, multi_label=True)
    assert data.classes == ["comedy", "drama"] and len([w for w in data.warnings if "one class" in w[1]]) == 2


def test_image_labels_differing_by_case_are_one_class(tmp_path, bad_input):
    root = write_digits(tmp_path / "digits", per_class=8)
    for digit, name in (("0", "zero"), ("1", "Seven"), ("2", "two")):
        (root / digit).rename(root / name)
    shutil.copytree(write_digits(tmp_path / "more", classes=(7,), per_class=4) / "7", root / "seven ")
    data = find_labeled_images(root)
    assert data.classes == ["Seven", "two", "zero"]  # the folders 'Seven' (8) and 'seven ' (4): one class
    assert sum(s.label == "Seven" for s in data.train + data.val) == 12
    assert data.warnings == [(str(root),
        "labels 'Seven' (8), 'seven' (4) are one class (labels are one class when they match ignoring case, "
        "surrounding/repeated whitespace, Unicode form (NFC) and number form (1 = 1.0 = 01)); merged as "
        "'Seven', the most frequent spelling — write each label one way")]
    labels = {"zero": ["zero"], "two": ["two", " Two"], "Seven": ["SEVEN"], "seven ": ["seven"]}
    rows = [f"{p.relative_to(root)},{labels[p.parent.name][i % len(labels[p.parent.name])]}\n"
            for i, p in enumerate(sorted(root.rglob("*.png")))]
    (root / "labels.csv").write_text("path,label\n" + "".join(rows))
    data = find_labeled_images(root / "labels.csv")
    assert data.classes == ["SEVEN", "Two", "zero"]  # 'two' 4 = 'Two' 4: a tie goes to the first in order
    assert [p.split(" are one class")[0] for _, p in data.warnings] == [
        "labels 'SEVEN' (8), 'seven' (4)", "labels 'Two' (4), 'two' (4)"]
    with pytest.raises(SftuneError, match="are one class"):
        find_labeled_images(root / "labels.csv", strict=True)
    bad_input("image class folders / manifest labels differing by case or whitespace", "warning")


def test_a_run_counts_merged_labels_in_its_data_warnings(tmp_path, bad_input):
    root = write_digits(tmp_path / "digits", classes=(0, 1), per_class=10)
    more = sorted((write_digits(tmp_path / "more", classes=(1,), per_class=13) / "1").iterdir())
    _copy(more[10:], root / "01")  # 3 other real 1s (the first 10 are in 1/ already)
    out = tmp_path / "run"
    result = cli_run(*train_args(root, out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / B.LABELS).read_text())["classes"] == ["0", "1"]
    assert json.loads((out / B.METRICS).read_text())["data_warnings"] == 1
    assert "'1' (10), '01' (3) are one class" in json.loads((out / B.LINEAGE).read_text())["data"]["warnings"][0]["problem"]
    assert "are one class" in result.output
    bad_input("class folders 1 and 01 in a training run", "warning")


# ------------------------------------------------------------------ 3. NFC everywhere


def _nfd_nfc_digits(tmp_path: Path) -> Path:
    src = write_digits(tmp_path / "src", classes=(3, 5), per_class=16)
    data = tmp_path / "data"
    for digit, (nfd, nfc) in (("3", (CAFE_NFD, CAFE_NFC)), ("5", (THE_NFD, THE_NFC))):
        files = sorted((src / digit).iterdir())
        _copy(files[:12], data / "train" / nfd)  # as macOS writes folder names
        _copy(files[12:], data / "val" / nfc)  # as typed on Linux/Windows
    return data


def test_nfd_and_nfc_class_folders_are_one_class(tmp_path, bad_input):
    data = find_labeled_images(_nfd_nfc_digits(tmp_path))  # was: "validation has classes that training lacks"
    assert data.classes == [CAFE_NFC, THE_NFC] and not data.warnings
    assert {s.label for s in data.train} == {s.label for s in data.val} == {CAFE_NFC, THE_NFC}
    bad_input("class folders in NFD (macOS) in train/ and NFC in val/", "handled")


def test_nfd_labels_in_manifests_and_text_tables_are_nfc(tmp_path):
    root = write_digits(tmp_path / "digits", classes=(3, 5), per_class=6)
    lines = [f"{p.relative_to(root)},{CAFE_NFD if p.parent.name == '3' else THE_NFC}\n" for p in sorted(root.rglob("*.png"))]
    (root / "m.csv").write_text("path,label\n" + "".join(lines), encoding="utf-8")
    assert find_labeled_images(root / "m.csv").classes == [CAFE_NFC, THE_NFC]
    rows = _sst("train.tsv", 40)
    train = _write_tsv(tmp_path / "train.tsv", [(s, CAFE_NFD if y == "1" else THE_NFD) for s, y in rows])
    dev = _write_tsv(tmp_path / "dev.tsv", [(s, CAFE_NFC if y == "1" else THE_NFC) for s, y in _sst("dev.tsv", 20)])
    data = find_labeled_texts(train, val_path=dev)
    assert data.classes == [CAFE_NFC, THE_NFC] and not [w for w in data.warnings if "one class" in w[1]]
    assert {s.label for s in read_labeled_texts(train)} == {CAFE_NFC, THE_NFC}  # eval reads the same names


def test_nfd_folders_train_and_predict_nfc_names(tmp_path, bad_input):
    data = _nfd_nfc_digits(tmp_path)
    out = tmp_path / "run"
    result = cli_run(*train_args(data, out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / B.LABELS).read_text())["classes"] == [CAFE_NFC, THE_NFC]
    predicted = cli_run("predict", out, data / "val", "--json")
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.stdout[predicted.stdout.index("["):])
    assert len(rows) == 8 and {r["label"] for r in rows} <= {CAFE_NFC, THE_NFC}
    evaluated = cli_run("eval", out, "--data", data / "train", "--json")  # NFD folders against the NFC classes
    assert evaluated.exit_code == 0, evaluated.output
    bad_input("train on NFD folders, then predict and eval", "handled")


# ------------------------------------------------------------------ 4. text leakage and duplicates


def _leaky(tmp_path: Path, transform=lambda s: s) -> tuple[Path, Path, list[tuple[str, str]]]:
    """SST-2's 1,000-row train.tsv with 30 dev sentences copied in (the issue's example)."""
    train, dev = _sst("train.tsv"), _sst("dev.tsv")
    copied = dev[100:130]
    path = _write_tsv(tmp_path / "train.tsv", train[:500] + [(transform(s), y) for s, y in copied] + train[500:])
    return path, SST2 / "dev.tsv", copied


def test_dev_sentences_copied_into_training_are_warned(tmp_path, bad_input):
    train, dev, copied = _leaky(tmp_path)
    clean = find_labeled_texts(SST2 / "train.tsv", val_path=dev)
    assert clean.warnings == []  # SST-2's own train/dev have no overlap and no duplicates
    data = find_labeled_texts(train, val_path=dev)
    assert len(data.warnings) == 30 and len(data.train) == 1030
    where, problem = data.warnings[0]
    assert where == f"{dev} line 102" and problem == (
        f"same text as training {train} line 502 (train/val leakage inflates the validation score); keep it on one side")
    bad_input("text: 30 dev sentences copied into the training file", "warning")
    with pytest.raises(SftuneError, match="line 102: same text as training .* drop --strict"):
        find_labeled_texts(train, val_path=dev, strict=True)
    bad_input("text: train/val leakage with strict", "clear error")


def test_leakage_is_found_through_case_whitespace_and_unicode_form(tmp_path):
    train, dev, _ = _leaky(tmp_path, lambda s: "  " + unicodedata.normalize("NFD", s.upper()).replace(" ", "   "))
    assert len(find_labeled_texts(train, val_path=dev).warnings) == 30


def test_same_text_under_two_labels_and_repeated_texts(tmp_path, bad_input):
    rows = _sst("train.tsv", 100)
    flipped = (rows[10][0], "0" if rows[10][1] == "1" else "1")
    again = (" " + rows[20][0].upper().replace(" ", "  "), rows[20][1])  # the same text, as normalised
    train = _write_tsv(tmp_path / "train.tsv", rows + [rows[3], rows[3], flipped, again])
    dev = _write_tsv(tmp_path / "dev.tsv", _sst("dev.tsv", 20))
    data = find_labeled_texts(train, val_path=dev)
    assert data.warnings == [
        (f"{train} line 12", f"the same text is labelled differently: '{rows[10][1]}' at {train} line 12; "
                             f"'{flipped[1]}' at {train} line 104; keep one label per text"),
        (f"{train} line 5", f"the same text occurs 3 times in training (also at {train} line 102, {train} line 103); "
                            f"each copy counts again — keep one"),
        (f"{train} line 22", f"the same text occurs 2 times in training (also at {train} line 105); "
                             f"each copy counts again — keep one")]
    bad_input("text: one text under two labels, and texts repeated in training", "warning")
    with pytest.raises(SftuneError, match="labelled differently.*drop --strict"):
        find_labeled_texts(train, val_path=dev, strict=True)
    bad_input("text: one text under two labels with strict", "clear error")


def test_text_run_counts_leaked_sentences_in_its_data_warnings(tmp_path, bad_input, tiny_text_flags):
    train, dev, _ = _leaky(tmp_path)
    out = tmp_path / "run"
    result = cli_run("train", "--data", train, "--val-data", dev, "--out", out, *tiny_text_flags, "--epochs", "1",
                     "--strategy", "linear_probe")
    assert result.exit_code == 0, result.output
    assert json.loads((out / B.METRICS).read_text())["data_warnings"] == 30
    assert "data warnings: 30" in result.output
    bad_input("text run on a training file holding 30 dev sentences", "warning")


def test_text_run_lists_leakage_in_lineage_and_strict_fails(tmp_path, tiny_text_flags):
    train, dev, _ = _leaky(tmp_path)
    out = tmp_path / "run"
    result = cli_run("train", "--data", train, "--val-data", dev, "--out", out, *tiny_text_flags, "--epochs", "1",
                     "--strategy", "linear_probe")
    assert result.exit_code == 0, result.output
    assert "same text as training" in result.output
    assert len(json.loads((out / B.LINEAGE).read_text())["data"]["warnings"]) == 30
    strict = cli_run("train", "--data", train, "--val-data", dev, "--out", tmp_path / "strict", *tiny_text_flags,
                     "--epochs", "1", "--strict")
    assert strict.exit_code == 2 and "same text as training" in strict.output


@pytest.fixture(scope="module")
def tiny_text_flags(tmp_path_factory) -> list[str]:
    """A tiny random BERT (hidden 32, 2 layers) with MiniLM's tokenizer, as the text tests use."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sftune.backbones.text import ZOO_TEXT

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(ZOO_TEXT.get("minilm").folder(), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ["--model", f"hf:{folder}", "--set", "model.pretrained=false", "--no-progress", "--accelerator", "cpu",
            "--batch-size", "32"]


def test_a_split_sftune_makes_keeps_copies_on_the_training_side(tmp_path, bad_input):
    """No val file: the stratified split itself must not leak. Copies of a text (as normalised) or of an
    image file stay in training; they are still warned about as repeats."""
    rows = _sst("train.tsv", 100)
    copies = [(s.upper(), y) for s, y in rows[:20]]
    data = find_labeled_texts(_write_tsv(tmp_path / "train.tsv", rows + copies), val_fraction=0.3, seed=1)
    train_texts = {s.text.lower() for s in data.train}
    assert not any(s.text.lower() in train_texts for s in data.val) and len(data.train) + len(data.val) == 120
    assert data.split["copies_kept_in_train"] >= 1 and data.split["val_count"] == len(data.val)
    assert [p for _, p in data.warnings if "times in" not in p] == [] and len(data.warnings) == 20
    sms = SHARED_DATA / "smsspamcollection" / "SMSSpamCollection"
    if sms.is_file():  # real data with ~400 repeated messages
        real = find_labeled_texts(sms)
        assert real.split["copies_kept_in_train"] > 0
        assert not [p for _, p in real.warnings if "same text as training" in p]
    root = write_digits(tmp_path / "digits", per_class=10)
    for f in sorted((root / "0").iterdir())[:5]:
        shutil.copy(f, f.with_name("copy_" + f.name))
    images = find_labeled_images(root, val_fraction=0.3, seed=3)
    assert images.split["copies_kept_in_train"] == 3 and len(images.train) + len(images.val) == 35
    assert [p.split(" (")[0] for _, p in images.warnings] == ["2 identical files in training"] * 5  # none leaks
    bad_input("repeated texts/images when sftune makes the split", "handled")
