"""find_labeled_texts / is_text_data / read_texts_for_prediction on real SST-2 and SMS text."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from sftune.data.texts import TextSample, find_labeled_texts, is_text_data, read_texts_for_prediction
from sftune.errors import SftuneError

from .conftest import SMS, SST2, needs_sms, needs_sst2, read_sst2


def _pairs(samples: list[TextSample]) -> list[tuple[str, str]]:
    return [(s.text, s.label) for s in samples]  # type: ignore[misc]


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(SftuneError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "json", "parquet", "hf"])
def test_every_format_loads_the_same_samples(sst_files, fmt):
    reference = find_labeled_texts(sst_files["csv"], seed=0)
    data = find_labeled_texts(sst_files[fmt], seed=0)
    assert data.classes == ["0", "1"]
    assert data.columns == {"text": "sentence", "label": "label", "text_pair": None}
    assert _pairs(data.train) == _pairs(reference.train)
    assert _pairs(data.val) == _pairs(reference.val)
    assert data.fingerprint == reference.fingerprint
    assert data.multi_label is False


def test_csv_samples_match_the_source_rows(sst_files, sst_rows):
    data = find_labeled_texts(sst_files["csv"])
    assert sorted(_pairs(data.train + data.val)) == sorted((s, str(y)) for s, y in sst_rows)
    assert data.class_to_idx == {"0": 0, "1": 1}


def test_stratified_split_is_seeded_and_keeps_class_proportions(sst_files, sst_rows):
    a = find_labeled_texts(sst_files["csv"], val_fraction=0.25, seed=7)
    b = find_labeled_texts(sst_files["csv"], val_fraction=0.25, seed=7)
    c = find_labeled_texts(sst_files["csv"], val_fraction=0.25, seed=8)
    assert _pairs(a.val) == _pairs(b.val) and a.fingerprint == b.fingerprint
    assert _pairs(a.val) != _pairs(c.val)
    per_class = Counter(str(y) for _, y in sst_rows)
    val_per_class = Counter(s.label for s in a.val)
    assert val_per_class == {k: round(n * 0.25) for k, n in per_class.items()}
    assert len(a.train) + len(a.val) == len(sst_rows)
    assert a.split == {"method": "stratified", "seed": 7, "val_fraction": 0.25, "val_count": len(a.val)}


def test_val_file_is_used_instead_of_a_split(sst_files, tmp_path):
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"sentence": "a moving , funny film", "label": 1}) + "\n"
                   + json.dumps({"sentence": "a tedious mess", "label": 0}) + "\n")
    data = find_labeled_texts(sst_files["csv"], val_path=val)
    assert _pairs(data.val) == [("a moving , funny film", "1"), ("a tedious mess", "0")]
    assert len(data.train) == 60
    assert data.split["method"] == "file" and data.split["source"] == str(val)


def test_folder_with_train_and_dev_files(tmp_path, sst_rows):
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f'"{s}",{y}\n' for s, y in sst_rows[:40]))
    (tmp_path / "dev.csv").write_text("text,label\n" + "".join(f'"{s}",{y}\n' for s, y in sst_rows[40:]))
    data = find_labeled_texts(tmp_path)
    assert [s.text for s in data.val] == [s for s, _ in sst_rows[40:]]
    assert data.split["method"] == "folder" and data.split["source"].endswith("dev.csv")


def test_hf_dataset_dict_with_class_label_names(tmp_path, sst_rows):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    rows = {"sentence": [s for s, _ in sst_rows], "label": [y for _, y in sst_rows]}
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({k: v[:45] for k, v in rows.items()}, features=features),
        "validation": datasets.Dataset.from_dict({k: v[45:] for k, v in rows.items()}, features=features),
    })
    dd.save_to_disk(str(tmp_path / "ds"))
    data = find_labeled_texts(tmp_path / "ds")
    assert data.classes == ["negative", "positive"]
    assert len(data.train) == 45 and len(data.val) == 15
    assert data.split["method"] == "dataset_split" and data.split["split"] == "validation"
    assert is_text_data(tmp_path / "ds")


def test_integer_labels_sort_numerically(tmp_path, sst_rows):
    f = tmp_path / "many.jsonl"
    f.write_text("".join(json.dumps({"text": s, "label": i % 11}) + "\n" for i, (s, _) in enumerate(sst_rows * 2)))
    data = find_labeled_texts(f)
    assert data.classes == [str(i) for i in range(11)]  # "2" before "10"


def test_multi_label_from_lists_and_from_separated_strings(tmp_path, sst_rows):
    tags = [("neg",) if y == 0 else ("pos", "long") if len(s) > 60 else ("pos",) for s, y in sst_rows]
    as_lists = tmp_path / "ml.jsonl"
    as_lists.write_text("".join(json.dumps({"text": s, "labels": list(t)}) + "\n" for (s, _), t in zip(sst_rows, tags)))
    as_strings = tmp_path / "ml.tsv"
    as_strings.write_text("text\tlabels\n" + "".join(f"{s}\t{'|'.join(t)}\n" for (s, _), t in zip(sst_rows, tags)))
    a = find_labeled_texts(as_lists, multi_label=True)
    b = find_labeled_texts(as_strings, multi_label=True, label_separator="|")
    assert a.multi_label and a.classes == ["long", "neg", "pos"]
    assert _pairs(a.train) == _pairs(b.train) and _pairs(a.val) == _pairs(b.val)
    assert a.split["method"] == "random"
    assert sorted(_pairs(a.train + a.val)) == sorted(zip((s for s, _ in sst_rows), tags))
    message = _error(find_labeled_texts, as_lists)
    assert "--multi-label" in message and "ml.jsonl" in message


def test_sentence_pairs_auto_and_explicit(tmp_path, sst_rows):
    f = tmp_path / "pairs.csv"
    f.write_text("sentence1,sentence2,label\n" + "".join(
        f'"{a}","{b}",{int(ya == yb)}\n' for (a, ya), (b, yb) in zip(sst_rows[:30], sst_rows[30:])))
    data = find_labeled_texts(f)
    assert data.columns == {"text": "sentence1", "label": "label", "text_pair": "sentence2"}
    assert {s.text_pair for s in data.train + data.val} == {b for b, _ in sst_rows[30:]}
    nli = tmp_path / "nli.jsonl"
    nli.write_text("".join(json.dumps({"premise": a, "hypothesis": b, "label": "entailment" if i % 2 else "neutral"})
                           + "\n" for i, ((a, _), (b, _)) in enumerate(zip(sst_rows[:30], sst_rows[30:]))))
    assert find_labeled_texts(nli).columns["text_pair"] == "hypothesis"
    plain = find_labeled_texts(f, text_column="sentence2")  # not a pair-first column: no automatic pair
    assert plain.columns["text_pair"] is None
    explicit = find_labeled_texts(f, text_column="sentence2", text_pair_column="sentence1")
    assert explicit.columns == {"text": "sentence2", "label": "label", "text_pair": "sentence1"}


# ---------------------------------------------------------------------------- real files


@needs_sst2()
def test_sst2_full_train_loads_fast():
    start = time.perf_counter()
    data = find_labeled_texts(SST2 / "train_full.tsv", val_path=SST2 / "dev.tsv")
    elapsed = time.perf_counter() - start
    assert len(data.train) == 67_349 and len(data.val) == 872
    assert data.classes == ["0", "1"]
    assert elapsed < 5, f"reading SST-2 took {elapsed:.1f}s"  # ~0.3 s measured; generous for slow CI


@needs_sst2()
def test_sst2_folder_and_crlf_test_file():
    data = find_labeled_texts(SST2, val_path=SST2 / "test-labeled.tsv")  # train.tsv (1,000 rows); CRLF val
    assert len(data.train) == 1000 and len(data.val) == 1821
    assert {s.label for s in data.val} == {"0", "1"}
    assert not any(s.text.endswith("\r") for s in data.val)
    folder = find_labeled_texts(SST2)  # train.tsv + dev.tsv; test.tsv (unlabeled) is ignored
    assert folder.split["method"] == "folder" and len(folder.val) == 872
    assert _pairs(folder.val[:1]) == [(s, str(y)) for s, y in read_sst2("dev.tsv", 1)]


@needs_sms()
def test_headerless_sms_collection_auto_and_by_index():
    auto = find_labeled_texts(SMS)
    assert auto.classes == ["ham", "spam"] and auto.columns == {"text": "1", "label": "0", "text_pair": None}
    assert Counter(s.label for s in auto.train + auto.val) == {"ham": 4827, "spam": 747}
    first = next(s for s in auto.train + auto.val if s.text.startswith("Go until jurong point"))
    assert first.label == "ham"  # the file's first line is data, not a header
    by_index = find_labeled_texts(SMS, text_column=1, label_column="0")
    assert by_index.fingerprint == auto.fingerprint
    assert is_text_data(SMS)


# -------------------------------------------------------------------------------- errors


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    return f


ROWS = "text,label\na fine film,1\na dull film,0\nwarm and witty,1\nflat and long,0\n"


def test_missing_file_and_unsupported_type(tmp_path):
    assert "does not exist" in _error(find_labeled_texts, tmp_path / "nope.csv")
    message = _error(find_labeled_texts, _write(tmp_path, "data.xlsx", b"PK\x03\x04"))
    assert "data.xlsx" in message and "unsupported" in message and ".csv" in message


def test_non_utf8_names_the_line(tmp_path):
    f = _write(tmp_path, "latin.csv", ROWS.encode() + "caf\xe9 cr\xe8me,1\n".encode("latin-1"))
    message = _error(find_labeled_texts, f)
    assert "latin.csv" in message and "line 6" in message and "UTF-8" in message
    j = _write(tmp_path, "latin.jsonl", b'{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 0}\n')
    assert "line 2" in _error(find_labeled_texts, j)


def test_missing_column_lists_columns_and_suggests(tmp_path):
    f = _write(tmp_path, "d.csv", ROWS)
    message = _error(find_labeled_texts, f, label_column="lable")
    assert "d.csv" in message and "'lable'" in message and "did you mean 'label'" in message and "text, label" in message
    no_text = _write(tmp_path, "cols.csv", "tweet,label\nhello there,1\nbye now,0\n")
    message = _error(find_labeled_texts, no_text)
    assert "cols.csv" in message and "tweet" in message and "--text-column" in message


def test_empty_texts_and_missing_labels_name_the_first_row(tmp_path):
    f = _write(tmp_path, "empty.csv", ROWS + "   ,1\nok,0\n,1\n")
    message = _error(find_labeled_texts, f)
    assert "empty.csv" in message and "2 empty text" in message and "line 6" in message
    g = _write(tmp_path, "nolabel.csv", ROWS + "no label here,\n")
    message = _error(find_labeled_texts, g)
    assert "nolabel.csv" in message and "without a label" in message and "line 6" in message
    j = _write(tmp_path, "nolabel.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": null}\n')
    assert "line 3" in _error(find_labeled_texts, j)


def test_one_class_and_unseen_val_labels(tmp_path):
    one = _write(tmp_path, "one.csv", "text,label\na,pos\nb,pos\nc,pos\n")
    assert "fewer than 2 classes" in _error(find_labeled_texts, one)
    val = _write(tmp_path, "val.csv", "text,label\nx,1\ny,2\n")
    message = _error(find_labeled_texts, _write(tmp_path, "d.csv", ROWS), val_path=val)
    assert "val.csv" in message and "training lacks: 2" in message


def test_csv_parse_errors(tmp_path):
    extra = _write(tmp_path, "extra.csv", ROWS + "funny, sad and long,1\n")
    message = _error(find_labeled_texts, extra)
    assert "extra.csv" in message and "line 6" in message and "quote" in message
    unclosed = _write(tmp_path, "unclosed.csv", 'text,label\n"fine",1\n"never closed,0\nok,1\n')
    message = _error(find_labeled_texts, unclosed)
    assert "unclosed.csv" in message and "line 3" in message and "never closes" in message
    bad_json = _write(tmp_path, "bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n')
    message = _error(find_labeled_texts, bad_json)
    assert "bad.jsonl" in message and "line 2" in message


def test_bad_val_fraction_and_ambiguous_folder(tmp_path):
    assert "val_fraction" in _error(find_labeled_texts, _write(tmp_path, "d.csv", ROWS), val_fraction=1.0)
    folder = tmp_path / "both"
    folder.mkdir()
    _write(folder, "train.csv", ROWS)
    _write(folder, "train.tsv", ROWS.replace(",", "\t"))
    assert "train.csv" in _error(find_labeled_texts, folder)


# ----------------------------------------------------------------------------- detection


def test_is_text_data_true_cases(sst_files, tmp_path):
    for fmt in ("csv", "tsv", "jsonl", "json", "parquet", "hf"):
        assert is_text_data(sst_files[fmt]), fmt
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text(sst_files["jsonl"].read_text())
    assert is_text_data(folder)
    unnamed = _write(tmp_path, "reviews.csv", "body,stars\nthis was a really lovely little film,5\n"
                                              "i walked out after twenty minutes,1\n")
    assert is_text_data(unnamed)


def test_is_text_data_false_for_images_and_others(digits_dir, tmp_path):
    assert not is_text_data(digits_dir)
    manifest = _write(tmp_path, "manifest.csv", "path,label\n" + "".join(
        f"{p.relative_to(digits_dir)},{p.parent.name}\n" for p in sorted(digits_dir.rglob("*.png"))[:10]))
    assert not is_text_data(manifest)
    assert not is_text_data(tmp_path / "missing.csv")
    assert not is_text_data(_write(tmp_path, "sheet.xlsx", b"PK\x03\x04"))
    assert not is_text_data(_write(tmp_path, "notes.txt", "just one line of notes\nand another\n"))


# ---------------------------------------------------------------------------- prediction


def test_read_texts_for_prediction(sst_files, tmp_path, sst_rows):
    txt = _write(tmp_path, "in.txt", "a great movie\r\n\n  \nthe worst film, ever\n")
    assert read_texts_for_prediction(txt) == ["a great movie", "the worst film, ever"]
    assert read_texts_for_prediction(sst_files["parquet"]) == [s for s, _ in sst_rows]
    assert read_texts_for_prediction(sst_files["jsonl"], text_column="sentence") == [s for s, _ in sst_rows]
    message = _error(read_texts_for_prediction, sst_files["csv"], text_column="txt")
    assert "sst.csv" in message and "sentence" in message
    assert "does not exist" in _error(read_texts_for_prediction, tmp_path / "nope.txt")
    one_column = _write(tmp_path, "one.csv", "what a film\nnot for me\n")
    assert "header or a text" in _error(read_texts_for_prediction, one_column)
    assert read_texts_for_prediction(one_column, text_column="what a film") == ["not for me"]


def test_empty_val_file_is_an_error_not_a_silent_split(tmp_path):
    val = _write(tmp_path, "val.csv", "text,label\n")
    message = _error(find_labeled_texts, _write(tmp_path, "d.csv", ROWS), val_path=val)
    assert "val.csv" in message
