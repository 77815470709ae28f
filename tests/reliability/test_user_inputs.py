"""Issue 17, items 7-15: inputs real users have, each example as a test with its right value.

7. text predict: an empty cell or a blank line gets a null prediction with its line, never an abort or a drop;
8. texts longer than max_length: counted at train, eval and predict; --long-texts windows reads all of them;
9. eval and predict take train's column flags and find columns as train does; every hint names a real flag;
10. a ';'-separated .csv is read as such (texts and image/segmentation/detection manifests);
11. a manifest written on Windows (train\\ants\\x.jpg) is read; paths that do not exist are counted;
12. a class named 'train' in a flat layout; train/ + test/ uses test/ as validation; a text test file is named;
13. a file of '<class> <text>' lines says what text formats exist and how to make one; fastText lines are read;
14. __MACOSX/ (archive litter) is ignored like .DS_Store, at the top of an image folder too;
15. a class without validation examples: warned, and null / "—" (not 0.000, not shaded) in every report.

Real data: SST-2 sentences from ../shared/data and the UCI digits (conftest.write_digits).
"""

from __future__ import annotations

import ast
import csv
import json
import re
import shutil
from pathlib import Path

import click
import pytest
import torch

from conftest import SHARED_DATA, validate_report, write_digits
from sftune import bundle as B
from sftune.cli.main import cli
from sftune.data.sources import find_labeled_images, find_unlabeled_images
from sftune.data.texts import find_labeled_texts, is_text_data
from sftune.errors import SftuneError

from .conftest import assert_clear_error, cli_run, train_args

SST2 = SHARED_DATA / "SST-2"
SRC = Path(__file__).resolve().parents[2] / "src" / "sftune"


def _sst(name: str, n: int) -> list[tuple[str, str]]:
    if not (SST2 / name).is_file():
        pytest.skip(f"real data not found at {SST2 / name} (tests read ../shared/data)")
    with (SST2 / name).open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [(s, y) for s, y in reader][:n]


def _tsv(path: Path, rows, header: str = "sentence\tlabel") -> Path:
    path.write_text(header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return path


def _ok(result) -> str:
    assert result.exit_code == 0, (result.exit_code, repr(result.exception), result.output[-3000:])
    assert "Traceback" not in result.output
    return result.output


def _json(result):
    lines = _ok(result).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("{", "[")))
    end = max(i for i, line in enumerate(lines) if line.startswith(("}", "]")))
    return json.loads("\n".join(lines[start:end + 1]))


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory) -> list[str]:
    """A tiny random BERT (hidden 32, 2 layers) with MiniLM's tokenizer, as the text tests use."""
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


MAX_LENGTH = 16


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_text) -> dict:
    """A text bundle trained on 160 SST-2 sentences (column 'sentence') at --max-length 16, and its train output."""
    root = tmp_path_factory.mktemp("sst_inputs")
    train = _tsv(root / "train.tsv", _sst("train.tsv", 160))
    dev = _tsv(root / "dev.tsv", _sst("dev.tsv", 40))
    out = root / "bundle"
    result = cli_run("train", "--data", train, "--val-data", dev, *tiny_text, "--strategy", "full", "--epochs", "1",
                     "--max-length", MAX_LENGTH, "--out", out)
    return {"bundle": out, "output": _ok(result), "train": train, "dev": dev, "root": root}


def _tokens(texts: list[str]) -> list[int]:
    from transformers import AutoTokenizer

    from sftune.backbones.text import ZOO_TEXT

    tokenizer = AutoTokenizer.from_pretrained(ZOO_TEXT.get("minilm").folder(), local_files_only=True)
    return [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]


# ------------------------------------------------------------------------ 7: predict keeps every input


def test_text_predict_gives_one_record_per_input_and_null_for_empty_ones(text_run, tmp_path, bad_input):
    sentences = [s for s, _ in _sst("dev.tsv", 10)]
    table = tmp_path / "in.csv"
    with table.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sentence", "id"])
        w.writerows([("" if i == 4 else s), i] for i, s in enumerate(sentences))  # row 5 (line 6): an empty cell
    result = cli_run("predict", text_run["bundle"], "--file", table, "--json")
    records = _json(result)
    assert len(records) == 10 and [r["line"] for r in records] == list(range(2, 12))
    assert [r["index"] for r in records] == list(range(1, 11))
    empty = records[4]
    assert empty["label"] is None and empty["score"] is None and empty["skipped"].startswith("empty text")
    assert empty["line"] == 6 and all(r["label"] is not None for i, r in enumerate(records) if i != 4)
    assert [r["text"] for i, r in enumerate(records) if i != 4] == sentences[:4] + sentences[5:]
    assert "1 of 10 input(s) skipped" in result.output
    bad_input("text predict: one empty cell in a CSV", "skipped with warning")

    txt = tmp_path / "in.txt"
    txt.write_text("a gripping film\n\n  \nthe worst film, ever\n", encoding="utf-8")
    records = _json(cli_run("predict", text_run["bundle"], "--file", txt, "--json"))
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert [r["label"] is None for r in records] == [False, True, True, False]
    assert records[3]["text"] == "the worst film, ever"
    bad_input("text predict: blank lines in a .txt", "skipped with warning")

    only_empty = tmp_path / "blank.csv"
    only_empty.write_text("text\n\"\"\n\"\"\n", encoding="utf-8")
    assert_clear_error(cli_run("predict", text_run["bundle"], "--file", only_empty), "nothing could be predicted",
                       "line 2", "empty text")
    bad_input("text predict: every text empty", "clear error")

    from sftune import load

    model = load(text_run["bundle"])
    out = model.predict(["a fine film", ""])
    assert out[0].label is not None and out[1].label is None and out[1].skipped.startswith("empty text")
    bad_input("Python predict() with an empty text", "skipped with warning")


# ------------------------------------------------------------------------ 8: long texts


def test_long_texts_are_counted_at_train_eval_predict(text_run, tmp_path, bad_input):
    train_texts = [s for s, _ in _sst("train.tsv", 160)]
    dev_texts = [s for s, _ in _sst("dev.tsv", 40)]
    n_train = sum(n > MAX_LENGTH for n in _tokens(train_texts))
    n_dev = sum(n > MAX_LENGTH for n in _tokens(dev_texts))
    assert n_train > 0 and n_dev > 0
    assert (f"{n_train} of 160 training and {n_dev} of 40 validation texts are longer than --max-length 16 tokens"
            in text_run["output"])
    lineage = json.loads((text_run["bundle"] / B.LINEAGE).read_text())
    assert lineage["data"]["truncated"] == {"train": n_train, "val": n_dev, "max_length": 16}

    report_dir = tmp_path / "report"
    result = cli_run("eval", text_run["bundle"], "--data", text_run["dev"], "--out", report_dir, "--bootstrap", 0)
    assert f"warning: {n_dev} of 40 texts are longer than max_length 16 tokens and were truncated" in _ok(result)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["data"]["truncated"] == n_dev
    bad_input("eval on texts longer than max_length", "warning")

    records = _json(cli_run("predict", text_run["bundle"], "--file", text_run["dev"], "--json"))
    assert sum(r.get("truncated", False) for r in records) == n_dev
    bad_input("predict on texts longer than max_length", "warning")


def test_windows_read_the_deciding_sentence_that_truncation_cuts(text_run, bad_input):
    """The issue's example: two reviews whose verdict comes last score the same when cut at 16 tokens."""
    from sftune import load

    opening = ("the film follows a family across three summers in a small coastal town , and the story "
               "moves slowly through its many characters and places before it ends .")
    reviews = [f"{opening} in the end it is a wonderful , moving triumph .",
               f"{opening} in the end it is a dull , lifeless failure ."]
    assert min(_tokens(reviews)) > 2 * MAX_LENGTH
    model = load(text_run["bundle"])
    cut = model.predict(reviews, top_k=2)
    assert dict(cut[0].top_k) == dict(cut[1].top_k)  # the same first 16 tokens: the same scores
    assert cut[0].truncated and "2 of 2 texts are longer than max_length 16" in model.notes[0]
    windows = model.predict(reviews, top_k=2, long_texts="windows")
    assert dict(windows[0].top_k) != dict(windows[1].top_k) and not windows[0].truncated
    assert "read as overlapping windows of 16 tokens" in model.notes[0]
    # A text no longer than max_length is one window: the same scores as truncation.
    short = ["a fine film"]
    assert model.predict(short, long_texts="windows")[0].score == pytest.approx(
        model.predict(short, long_texts="truncate")[0].score, abs=1e-6)
    result = cli_run("predict", text_run["bundle"], "--text", reviews[0], "--text", reviews[1], "--long-texts",
                     "windows", "--json", "--top-k", "2")
    records = _json(result)
    assert records[0]["score"] != records[1]["score"] or records[0]["label"] != records[1]["label"]
    bad_input("two long reviews whose verdict comes last (--long-texts windows)", "handled")


# ------------------------------------------------------------------------ 9: column flags and hints


def test_eval_and_predict_find_columns_as_train_does(text_run, tmp_path, bad_input):
    rows = _sst("dev.tsv", 40)
    other = _tsv(tmp_path / "dev_text.tsv", rows, header="text\tlabel")  # training used 'sentence'
    a = _json(cli_run("eval", text_run["bundle"], "--data", text_run["dev"], "--no-report", "--json", "--bootstrap", 0))
    b = _json(cli_run("eval", text_run["bundle"], "--data", other, "--no-report", "--json", "--bootstrap", 0))
    assert a["n"] == b["n"] == 40 and a["acc"] == b["acc"]
    bad_input("eval data whose text column is 'text' where training used 'sentence'", "handled")

    custom = _tsv(tmp_path / "custom.tsv", rows, header="review\tverdict")
    c = _json(cli_run("eval", text_run["bundle"], "--data", custom, "--text-column", "review", "--label-column",
                      "verdict", "--no-report", "--json", "--bootstrap", 0))
    assert c["acc"] == a["acc"]
    line = assert_clear_error(cli_run("eval", text_run["bundle"], "--data", custom, "--no-report"), "--label-column")
    assert "verdict" in line and "no label column" in line
    bad_input("eval data with unknown column names", "clear error")

    by_flag = _json(cli_run("predict", text_run["bundle"], "--file", custom, "--text-column", "review", "--json"))
    by_old_flag = _json(cli_run("predict", text_run["bundle"], "--file", custom, "--column", "review", "--json"))
    assert len(by_flag) == 40 and [r["label"] for r in by_flag] == [r["label"] for r in by_old_flag]
    assert [r["text"] for r in by_flag] == [s for s, _ in rows]
    bad_input("predict --text-column (train's flag name)", "handled")


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        out[f"{prefix}{name}"] = command
        if isinstance(command, click.Group):
            out.update(_commands(command, f"{prefix}{name} "))
    return out


def _flags(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])
            if opt.startswith("--")}


# Flags of other programs that sftune's messages name (pip, torchrun, iconv, python -m, sed...).
OTHER_PROGRAMS = {"--index-url", "--extra-index-url", "--nproc_per_node", "--nproc-per-node", "--nnodes",
                  "--node_rank", "--master_addr", "--master_port", "--rdzv_endpoint", "--upgrade", "--no-deps",
                  "--user", "--force-reinstall", "--break-system-packages", "--shm-size", "--ipc", "--version"}


def test_every_flag_a_message_names_exists(bad_input):
    """Walks every string in src/sftune (messages, hints, help): each --flag it names is an option of
    some sftune command (or of another program it tells the user to run)."""
    every = set().union(*(_flags(c) for c in _commands(cli).values())) | {"--help"}
    unknown: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", node.value):
                    if flag not in every and flag not in OTHER_PROGRAMS:
                        unknown.setdefault(flag, f"{path.relative_to(SRC)}:{node.lineno}")
    assert unknown == {}
    bad_input("every --flag named in a message or help text", "handled")


TEXT_COMMAND_FLAGS = ("--text-column", "--label-column", "--text-pair-column")


def test_every_text_column_hint_names_a_flag_of_that_command(text_run, tmp_path, tiny_text, bad_input):
    """The column errors of train, eval and predict: each --flag in the error line is an option of that command."""
    commands = _commands(cli)
    rows = _sst("dev.tsv", 40)
    no_text = _tsv(tmp_path / "no_text.tsv", rows, header="words\tlabel")
    no_label = _tsv(tmp_path / "no_label.tsv", rows, header="sentence\tverdict")
    runs = {
        "train": [cli_run("train", "--data", no_text, "--out", tmp_path / "a", *tiny_text),
                  cli_run("train", "--data", no_label, "--out", tmp_path / "b", *tiny_text),
                  cli_run("train", "--data", text_run["train"], "--text-column", "nope", "--out", tmp_path / "c",
                          *tiny_text)],
        "eval": [cli_run("eval", text_run["bundle"], "--data", no_text, "--no-report"),
                 cli_run("eval", text_run["bundle"], "--data", no_label, "--no-report"),
                 cli_run("eval", text_run["bundle"], "--data", text_run["dev"], "--label-column", "nope"),
                 cli_run("eval", text_run["bundle"], "--data", tmp_path / "missing.tsv")],
        "predict": [cli_run("predict", text_run["bundle"], "--file", no_text),
                    cli_run("predict", text_run["bundle"], "--file", text_run["dev"], "--text-column", "nope")],
    }
    named = 0
    for name, results in runs.items():
        options = _flags(commands[name])
        assert set(TEXT_COMMAND_FLAGS[:1]) <= options
        for result in results:
            line = assert_clear_error(result)
            for flag in re.findall(r"--[a-z][a-z-]*", line):
                assert flag in options, (name, flag, line)
                named += 1
            assert "--val-data" not in line or name == "train", line
    assert named >= 7
    bad_input("text column errors of train, eval and predict (the flags they name)", "clear error")


# ------------------------------------------------------------------------ 10: delimiters


def test_semicolon_separated_csv_is_read_as_such(tmp_path, bad_input):
    rows = _sst("train.tsv", 60)
    semi = tmp_path / "reviews.csv"
    semi.write_text("text;label\n" + "".join(f"{s};{y}\n" for s, y in rows), encoding="utf-8")
    assert "," in "".join(s for s, _ in rows)  # texts with commas: a ',' reader sees ragged rows
    data = find_labeled_texts(semi, val_fraction=0.25)
    assert len(data.train) + len(data.val) == 60 and data.classes == ["0", "1"] and is_text_data(semi)
    assert sorted(s.text for s in data.train + data.val) == sorted(s for s, _ in rows)
    same_bytes = tmp_path / "reviews.txt"
    shutil.copy(semi, same_bytes)
    assert find_labeled_texts(same_bytes, val_fraction=0.25).fingerprint == data.fingerprint
    bad_input("a ';'-separated .csv of texts", "handled")

    digits = write_digits(tmp_path / "digits", per_class=5)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path;label\n" + "".join(f"{p.relative_to(tmp_path)};{p.parent.name}\n"
                                                 for p in sorted(digits.rglob("*.png"))), encoding="utf-8")
    images = find_labeled_images(manifest, val_fraction=0.4)
    assert len(images.train) + len(images.val) == 15 and images.classes == ["0", "1", "2"]
    bad_input("a ';'-separated image manifest", "handled")

    from sftune.tasks.detection.data import _is_box_csv
    from sftune.tasks.segmentation.data import _read_manifest, is_segmentation_data

    seg = tmp_path / "seg.csv"
    pngs = sorted(digits.rglob("*.png"))
    seg.write_text("image;mask\n" + "".join(f"{p.relative_to(tmp_path)};{p.relative_to(tmp_path)}\n" for p in pngs),
                   encoding="utf-8")
    assert is_segmentation_data(seg) and len(_read_manifest(seg, False).train) == 15
    det = tmp_path / "boxes.csv"
    det.write_text("path;xmin;ymin;xmax;ymax;label\n" + f"{pngs[0].relative_to(tmp_path)};1;1;5;5;digit\n",
                   encoding="utf-8")
    assert _is_box_csv(det)
    bad_input("';'-separated segmentation and detection manifests", "handled")


# ------------------------------------------------------------------------ 11: Windows paths


def test_windows_separators_in_manifests(tmp_path, bad_input):
    digits = write_digits(tmp_path / "train", per_class=5)
    files = sorted(digits.rglob("*.png"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n" + "".join(f"train\\{p.parent.name}\\{p.name},{p.parent.name}\n" for p in files),
                        encoding="utf-8")
    data = find_labeled_images(manifest, val_fraction=0.4)
    assert len(data.train) + len(data.val) == 15 and data.skipped == []
    assert all("\\" not in str(s.path) and s.path.is_file() for s in data.train)
    bad_input("a manifest written on Windows (train\\ants\\x.jpg)", "handled")

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("path,label\n" + "".join(f"photos\\{p.parent.name}\\{p.name},{p.parent.name}\n" for p in files),
                     encoding="utf-8")
    with pytest.raises(SftuneError) as e:
        find_labeled_images(wrong)
    assert "15 of 15 paths do not exist, e.g." in str(e.value) and "(Windows separators?" in str(e.value)
    bad_input("a manifest whose 15 paths do not exist", "clear error")

    from sftune.tasks.segmentation.data import _read_manifest

    seg = tmp_path / "seg.csv"
    seg.write_text("image,mask\n" + "".join(f"train\\{p.parent.name}\\{p.name},train/{p.parent.name}/{p.name}\n"
                                            for p in files), encoding="utf-8")
    assert all(s.image.is_file() for s in _read_manifest(seg, False).train)
    bad_input("a segmentation manifest written on Windows", "handled")

    from sftune.tasks.detection.data import _read_coco

    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"train\\{p.parent.name}\\{p.name}", "width": 8, "height": 8}
                   for i, p in enumerate(files)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 4, 4]} for i in range(len(files))],
        "categories": [{"id": 1, "name": "digit"}]}), encoding="utf-8")
    source = _read_coco(coco)
    assert len(source.records) == 15 and source.faults == [] and all(r.image.is_file() for r in source.records)
    bad_input("a COCO file written on Windows (file_name with '\\')", "handled")


# ------------------------------------------------------------------------ 12: train/ and test/


def test_a_class_named_train_and_a_train_test_layout(tmp_path, bad_input):
    flat = write_digits(tmp_path / "flat", classes=(0, 1), per_class=8)
    (flat / "0").rename(flat / "train")
    (flat / "1").rename(flat / "plane")
    data = find_labeled_images(flat, val_fraction=0.25)
    assert data.classes == ["plane", "train"] and len(data.train) + len(data.val) == 16
    assert "read as the class 'train'" in data.split["notes"][0]
    bad_input("a class named 'train' in a flat layout", "handled")

    lone = tmp_path / "lone"
    shutil.copytree(flat / "train", lone / "train")
    with pytest.raises(SftuneError, match="holds no class sub-folders; a folder named train/ is read as the training"):
        find_labeled_images(lone)
    bad_input("train/ holding images but no class folders", "clear error")

    split = tmp_path / "split"
    write_digits(split / "train", per_class=8)
    write_digits(split / "test", per_class=3)
    data = find_labeled_images(split)
    assert data.split["method"] == "given" and len(data.val) == 9 and len(data.train) == 24
    assert data.split["notes"] == [f"no val/ folder: '{split / 'test'}' is used as the validation set"]
    result = cli_run(*train_args(split, tmp_path / "run"))
    assert "note: no val/ folder" in _ok(result)
    bad_input("a train/ + test/ layout without val/", "handled")

    rows = _sst("train.tsv", 50)
    folder = tmp_path / "texts"
    folder.mkdir()
    _tsv(folder / "train.tsv", rows[:40])
    (folder / "test.tsv").write_text("sentence\n" + "".join(f"{s}\n" for s, _ in rows[40:]), encoding="utf-8")
    texts = find_labeled_texts(folder)
    assert texts.split["method"] == "stratified" and "test.tsv' is not used" in texts.split["notes"][0]
    bad_input("a text folder with train and test files", "warning")

    from sftune.tasks.detection.data import _read_yolo
    from sftune.tasks.segmentation.data import _read_source as read_segmentation

    seg = tmp_path / "seg"
    for side in ("images", "masks"):
        write_digits(seg / side / "train", classes=(0,), per_class=3)
    write_digits(seg / "images" / "test", classes=(0,), per_class=2)
    assert "images/test/ not used for training" in read_segmentation(seg, False).description
    yolo = tmp_path / "yolo"
    write_digits(yolo / "images" / "train", classes=(0,), per_class=3)
    write_digits(yolo / "images" / "test", classes=(0,), per_class=2)
    for f in (yolo / "images" / "train" / "0").iterdir():
        (yolo / "labels" / "train" / "0").mkdir(parents=True, exist_ok=True)
        (yolo / "labels" / "train" / "0" / f"{f.stem}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    assert _read_yolo(yolo).notes == ["images/test/ is not used (test images; pass them to sftune eval)"]
    bad_input("segmentation and YOLO layouts with a test/ split", "warning")


# ------------------------------------------------------------------------ 13: '<class> <text>' and fastText


def test_label_first_lines_say_how_and_fasttext_lines_are_read(tmp_path, tiny_text, bad_input):
    rows = _sst("train.tsv", 60)
    trec = tmp_path / "train_5500.label"
    trec.write_text("".join(f"{'POS' if y == '1' else 'NEG'} {s}\n" for s, y in rows), encoding="utf-8")
    assert is_text_data(trec)
    line = assert_clear_error(cli_run("train", "--data", trec, "--out", tmp_path / "run", *tiny_text),
                              "fastText", ".jsonl", "sed 's/^/__label__/' train_5500.label > train_5500.fasttext.txt")
    assert "manifest" not in line
    bad_input("a file of '<class> <text>' lines (TREC .label)", "clear error")
    as_txt = tmp_path / "trec.txt"
    shutil.copy(trec, as_txt)
    assert_clear_error(cli_run("train", "--data", as_txt, "--out", tmp_path / "run2", *tiny_text),
                       "fastText", "sed 's/^/__label__/'")
    bad_input("a .txt of '<class> <text>' lines", "clear error")

    fasttext = tmp_path / "train.fasttext.txt"
    fasttext.write_text("".join(f"__label__{'pos' if y == '1' else 'neg'} {s}\n" for s, y in rows), encoding="utf-8")
    data = find_labeled_texts(fasttext, val_fraction=0.25)
    assert data.classes == ["neg", "pos"] and len(data.train) + len(data.val) == 60
    assert sorted(s.text for s in data.train + data.val) == sorted(s.strip() for s, _ in rows)
    result = cli_run("train", "--data", fasttext, "--out", tmp_path / "ft", *tiny_text, "--epochs", "1")
    assert "48 train / 12 val texts, 2 classes" in _ok(result)
    bad_input("fastText '__label__x text' lines", "handled")

    multi = tmp_path / "multi.txt"
    multi.write_text("".join(f"__label__a{' __label__b' if i % 2 else ''} {s}\n" for i, (s, _) in enumerate(rows[:20])),
                     encoding="utf-8")
    with pytest.raises(SftuneError, match="--multi-label"):
        find_labeled_texts(multi)
    multi_data = find_labeled_texts(multi, multi_label=True, val_fraction=0.25)
    assert multi_data.classes == ["a", "b"] and multi_data.multi_label
    bad_input("fastText lines with several labels", "handled")


# ------------------------------------------------------------------------ 14: __MACOSX


def test_macosx_archive_litter_is_ignored(tmp_path, bad_input):
    root = write_digits(tmp_path / "digits", per_class=6)
    litter = root / "__MACOSX"
    (litter / "0").mkdir(parents=True)
    for f in sorted((root / "0").iterdir()):
        (litter / "0" / f"._{f.name}").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # AppleDouble resource forks
    (root / "1" / "__MACOSX").mkdir()
    ((root / "1" / "__MACOSX") / "._x.png").write_bytes(b"\x00\x05\x16\x07")
    data = find_labeled_images(root, val_fraction=0.3)
    assert data.classes == ["0", "1", "2"] and len(data.train) + len(data.val) == 18
    assert data.skipped == [] and data.warnings == []
    assert len(find_unlabeled_images([root])) == 18
    bad_input("__MACOSX/ at the top of an image folder and inside a class", "handled")

    from sftune.tasks.segmentation.data import _pair_folders

    seg = tmp_path / "seg"
    write_digits(seg / "images", classes=(0,), per_class=4)
    write_digits(seg / "masks", classes=(0,), per_class=4)
    for side in ("images", "masks"):
        (seg / side / "__MACOSX" / "0").mkdir(parents=True)
        (seg / side / "__MACOSX" / "0" / "._junk.png").write_bytes(b"\x00\x05\x16\x07")
    pairs, faults = _pair_folders(seg / "images", seg / "masks")
    assert len(pairs) == 4 and faults == []
    bad_input("__MACOSX/ in a segmentation folder", "handled")


# ------------------------------------------------------------------------ 15: classes without examples


def test_a_class_without_validation_examples_is_null_not_zero(tmp_path, bad_input):
    from sftune.eval.html import render
    from sftune.eval.outputs import Outputs
    from sftune.eval.report import evaluation_report

    logits = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    out = Outputs(["ants", "bees", "wasps"], logits, torch.tensor([0, 0, 1, 1, 1]), [f"x{i}.jpg" for i in range(5)])
    report = evaluation_report(out, tmp_path / "no-bundle", "val", "images", bootstrap=0)
    pc = report["per_class"]
    assert pc["support"] == [2, 3, 0] and pc["f1"][2] is None and pc["recall"][2] is None
    assert pc["precision"][2] == 0.0  # predicted once, wrongly: defined
    assert pc["f1"][:2] == pytest.approx([1.0, 0.8])
    assert "has no example of 1 class(es): wasps" in report["data"]["notes"][0]
    validate_report(report, "report")
    html = render(report, thumbnails=False)
    row = re.search(r"<tr><td>wasps</td>(.*?)</tr>", html).group(1)
    assert "—" in row and " low" not in row
    assert "warning: the evaluation data has no example of 1 class(es): wasps" in html
    never = Outputs(["ants", "bees", "wasps"], logits[:4], torch.tensor([0, 0, 1, 1]), [f"x{i}" for i in range(4)])
    assert evaluation_report(never, tmp_path, "val", "images", bootstrap=0)["per_class"]["precision"][2] is None
    bad_input("a class with no example in the evaluated data (report)", "warning")


def test_training_and_eval_warn_about_a_class_without_validation_examples(tmp_path, bad_input):
    root = tmp_path / "data"
    write_digits(root / "train", per_class=12)
    for digit in ("0", "1"):  # 4 images each move to val/; digit 2 keeps all 12 in training
        (root / "val" / digit).mkdir(parents=True)
        for f in sorted((root / "train" / digit).iterdir())[8:]:
            f.rename(root / "val" / digit / f.name)
    result = cli_run(*train_args(root, tmp_path / "run"))
    assert "validation has no example of 1 class(es): 2" in _ok(result)
    strict = cli_run(*train_args(root, tmp_path / "strict", "--strict"))
    assert_clear_error(strict, "no example of 1 class(es): 2")
    bad_input("validation without an example of one class (train)", "warning")

    evaluated = cli_run("eval", tmp_path / "run", "--data", root / "val", "--out", tmp_path / "report", "--bootstrap", 0)
    assert "warning: the evaluation data has no example of 1 class(es): 2" in _ok(evaluated)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["per_class"]["f1"][2] is None and report["per_class"]["support"][2] == 0
    bad_input("eval data without an example of one class", "warning")
