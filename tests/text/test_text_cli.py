"""The text commands through the CLI (in process): train, predict --text/--file, eval, lr-find,
and every bad text input as one `error:` line with exit status 2 and no traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import TINY_FLAGS
from sftune import bundle as B
from sftune.cli.main import cli

from .conftest import read_sst2, write_tsv

N_TRAIN, N_VAL = 160, 40


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(result) -> str:
    assert result.exit_code == 0, (result.exit_code, repr(result.exception), result.output)
    assert "Traceback" not in result.output
    return result.stdout


def json_out(result):
    """The JSON document of a --json command (train prints info lines before it)."""
    lines = ok(result).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("{", "[")))
    return json.loads("\n".join(lines[start:]))


def assert_user_error(result, *needles: str) -> str:
    """Exit 2, no traceback, the last output line 'error: ...' holding every needle; returns it."""
    out = result.output
    assert "Traceback" not in out, out
    assert result.exit_code == 2, (result.exit_code, repr(result.exception), out)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), out
    assert all(not line.startswith("error: ") for line in lines[:-1]), out
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def sst(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sst_cli")
    return {"train": write_tsv(root / "train.tsv", read_sst2("train.tsv", N_TRAIN)),
            "dev": write_tsv(root / "dev.tsv", read_sst2("dev.tsv", N_VAL))}


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory, sst, tiny) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("text_bundle") / "sst"
    printed = json_out(invoke("train", "--data", sst["train"], "--val-data", sst["dev"], *tiny, "--strategy", "full",
                              "--epochs", "1", "--text-column", "sentence", "--label-column", "label",
                              "--max-length", "64", "--out", out, "--json"))
    return out, printed


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory, digits_dir) -> Path:
    out = tmp_path_factory.mktemp("image_bundle") / "digits"
    ok(invoke("train", "--data", digits_dir, *TINY_FLAGS, "--epochs", "1", "--out", out))
    return out


# ------------------------------------------------------------------------------- train


def test_train_writes_a_text_bundle(text_bundle, tiny_bert_dir):
    path, printed = text_bundle
    assert Path(printed["bundle"]) == path.absolute() and printed["n"] == N_VAL and "history" not in printed
    saved = yaml.safe_load((path / B.CONFIG).read_text())
    assert saved["task"] == "text_classification" and saved["model"]["name"] == f"hf:{tiny_bert_dir}"
    assert saved["data"]["text_column"] == "sentence" and saved["data"]["label_column"] == "label"
    assert saved["data"]["max_length"] == 64 and saved["strategy"]["name"] == "full"
    assert (path / B.ENCODER / "config.json").is_file() and (path / B.ENCODER / "tokenizer.json").is_file()
    metrics = json.loads((path / B.METRICS).read_text())
    assert printed["acc"] == metrics["acc"] and metrics["epochs_run"] == 1


def test_train_task_flag_forces_text(tmp_path, sst, tiny):
    out = tmp_path / "run"
    ok(invoke("train", "--data", sst["train"], "--val-data", sst["dev"], *tiny, "--task", "text_classification",
              "--strategy", "linear_probe", "--epochs", "1", "--out", out))
    assert yaml.safe_load((out / B.CONFIG).read_text())["task"] == "text_classification"


def test_train_and_predict_multi_label(tmp_path, tiny):
    rows = read_sst2("train.tsv", 120)
    data = tmp_path / "tags.jsonl"
    data.write_text("".join(json.dumps({"review": s, "tags": ("pos" if y else "neg") + ("|long" if len(s) > 60 else "")})
                            + "\n" for s, y in rows))
    out = tmp_path / "run"
    printed = json_out(invoke("train", "--data", data, *tiny, "--multi-label", "--set", 'data.label_separator="|"',
                              "--text-column", "review", "--label-column", "tags", "--epochs", "1", "--strategy", "full",
                              "--out", out, "--json"))
    assert {"f1_micro", "exact_match"} <= set(printed)
    labels = json.loads((out / B.LABELS).read_text())
    assert labels["classes"] == ["long", "neg", "pos"] and len(labels["thresholds"]) == 3
    items = json_out(invoke("predict", out, "--text", "a gripping, beautiful film", "--json", "--top-k", "3"))
    assert len(items) == 1 and isinstance(items[0]["label"], list) and set(items[0]["label"]) <= set(labels["classes"])
    evaluated = json_out(invoke("eval", out, "--data", data, "--json"))
    assert evaluated["n"] == 120 and "exact_match" in evaluated


def test_set_label_separator_pipe():
    from sftune.config import build_config

    assert build_config(sets=["data.label_separator=|"]).data.label_separator == "|"


# ----------------------------------------------------------------------------- predict


def test_predict_texts_as_json(text_bundle):
    path, _ = text_bundle
    items = json_out(invoke("predict", path, "--text", "a gripping, beautiful film", "--text", "dull and far too long",
                            "--json"))
    assert [item["text"] for item in items] == ["a gripping, beautiful film", "dull and far too long"]
    for item in items:
        assert {"text", "label", "score", "top_k"} <= set(item)
        assert item["label"] in ("0", "1") and 0.5 <= item["score"] <= 1  # two classes: the winner has >= 0.5
        assert item["top_k"] == [{"label": item["label"], "score": item["score"]}]


def test_predict_table_output_names_the_texts(text_bundle):
    path, _ = text_bundle
    out = ok(invoke("predict", path, "--text", "an unexpectedly tender story", "--top-k", "2"))
    assert "an unexpectedly tender story" in out


def test_predict_from_a_txt_file(text_bundle, tmp_path):
    path, _ = text_bundle
    lines = tmp_path / "lines.txt"
    lines.write_text("a gripping, beautiful film\r\n\n   \ndull and far too long\nthe cast is wonderful\n", encoding="utf-8")
    items = json_out(invoke("predict", path, "--file", lines, "--json", "--top-k", "2"))
    # One record per line (issue 17 item 7): the blank lines 2 and 3 get a null prediction in place.
    assert [i["text"] for i in items] == ["a gripping, beautiful film", "", "   ", "dull and far too long",
                                          "the cast is wonderful"]
    assert [i["line"] for i in items] == [1, 2, 3, 4, 5]
    assert [i["label"] is None and i["skipped"].startswith("empty text") for i in items] == [False, True, True, False, False]
    predicted = [i for i in items if i["label"] is not None]
    assert all(len(i["top_k"]) == 2 and abs(sum(t["score"] for t in i["top_k"]) - 1) < 1e-4 for i in predicted)


def test_predict_from_a_csv_column_matches_eval(text_bundle, tmp_path, sst):
    import csv

    path, _ = text_bundle
    rows = read_sst2("dev.tsv", N_VAL)
    table = tmp_path / "x.csv"
    with table.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "sentence", "label"])
        w.writerows((i, s, y) for i, (s, y) in enumerate(rows))
    items = json_out(invoke("predict", path, "--file", table, "--column", "sentence", "--json"))
    assert [i["text"] for i in items] == [s for s, _ in rows]
    evaluated = json_out(invoke("eval", path, "--data", sst["dev"], "--json"))
    correct = sum(i["label"] == str(y) for i, (_, y) in zip(items, rows))
    assert correct / N_VAL == pytest.approx(evaluated["acc"], abs=1e-6)
    # --text and --file together: the --text inputs first
    both = json_out(invoke("predict", path, "--text", "first", "--file", table, "--column", "sentence", "--json"))
    assert len(both) == N_VAL + 1 and both[0]["text"] == "first"


def test_predict_column_missing_lists_the_columns(text_bundle, tmp_path):
    path, _ = text_bundle
    table = tmp_path / "x.csv"
    table.write_text("id,review\n1,a fine film indeed\n", encoding="utf-8")
    assert_user_error(invoke("predict", path, "--file", table, "--column", "sentence"), "x.csv", "review")


def test_predict_image_bundle_with_text_is_an_error(image_bundle, tmp_path):
    assert_user_error(invoke("predict", image_bundle, "--text", "a fine film"), "classifies images", "--text")
    lines = tmp_path / "lines.txt"
    lines.write_text("a fine film\n")
    assert_user_error(invoke("predict", image_bundle, "--file", lines), "classifies images")


def test_predict_text_bundle_with_image_paths_is_an_error(text_bundle, digits_dir):
    path, _ = text_bundle
    assert_user_error(invoke("predict", path, digits_dir / "0"), "classifies texts", "--text", "--file")


def test_predict_text_bundle_without_inputs_or_with_empty_text(text_bundle):
    path, _ = text_bundle
    assert_user_error(invoke("predict", path), "nothing to classify", "--text")
    # An empty text gets a null prediction with the reason, in place (issue 17 item 7); all empty: an error.
    items = json_out(invoke("predict", path, "--text", "fine", "--text", "   ", "--json"))
    assert [i["index"] for i in items] == [1, 2] and items[0]["label"] is not None
    assert items[1]["label"] is None and items[1]["skipped"] == "empty text: nothing to classify"
    assert_user_error(invoke("predict", path, "--text", "   "), "nothing could be predicted", "text 1", "empty text")


def test_predict_missing_file(text_bundle, tmp_path):
    path, _ = text_bundle
    assert_user_error(invoke("predict", path, "--file", tmp_path / "nope.txt"), "nope.txt", "does not exist")


# -------------------------------------------------------------------------------- eval


def test_eval_json_matches_the_bundle_metrics(text_bundle, sst):
    path, _ = text_bundle
    evaluated = json_out(invoke("eval", path, "--data", sst["dev"], "--json"))
    metrics = json.loads((path / B.METRICS).read_text())
    assert evaluated["n"] == N_VAL and evaluated["skipped"] == 0
    for key in ("acc", "f1", "precision", "recall", "loss"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6), key
    table = ok(invoke("eval", path, "--data", sst["dev"]))
    assert "accuracy" in table and "examples" in table


def test_eval_with_unknown_labels_is_an_error(text_bundle, tmp_path):
    path, _ = text_bundle
    data = write_tsv(tmp_path / "other.tsv", [("a fine film", "1"), ("a sad film", "2")])
    assert_user_error(invoke("eval", path, "--data", data), "not trained on: 2", "0, 1")


def test_eval_data_missing(text_bundle, tmp_path):
    path, _ = text_bundle
    assert_user_error(invoke("eval", path, "--data", tmp_path / "missing.tsv"), "missing.tsv", "does not exist")


# --------------------------------------------------------------------------- bad inputs


def _latin1_tsv(tmp_path: Path) -> Path:
    rows = read_sst2("train.tsv", 20)
    bad = tmp_path / "latin.tsv"
    bad.write_bytes(("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows[:3])).encode()
                    + "caf\xe9 cr\xe8me , a dull film\t0\n".encode("latin-1")
                    + "".join(f"{s}\t{y}\n" for s, y in rows[3:]).encode())
    return bad


def test_non_utf8_tsv(tmp_path, tiny):
    bad = _latin1_tsv(tmp_path)
    assert_user_error(invoke("train", "--data", bad, *tiny, "--out", tmp_path / "run"),
                      "latin.tsv", "line 5", "UTF-8", "0xe9")
    assert not (tmp_path / "run").exists()


def test_non_utf8_tsv_without_model_is_still_read_as_text(tmp_path):
    bad = _latin1_tsv(tmp_path)
    line = assert_user_error(invoke("train", "--data", bad, "--no-progress", "--out", tmp_path / "run"),
                             "latin.tsv", "UTF-8")
    assert "line 5" in line and "manifest" not in line


def test_missing_label_column_lists_the_columns(tmp_path, sst, tiny):
    line = assert_user_error(invoke("train", "--data", sst["train"], *tiny, "--label-column", "sentiment",
                                    "--out", tmp_path / "run"), "'sentiment'", "sentence, label")
    assert "train.tsv" in line
    assert_user_error(invoke("train", "--data", sst["train"], *tiny, "--text-column", "review",
                             "--out", tmp_path / "run"), "'review'", "sentence, label")
    assert not (tmp_path / "run").exists()


def test_empty_text_rows(tmp_path, tiny):
    rows = read_sst2("train.tsv", 20)
    data = write_tsv(tmp_path / "gaps.tsv", rows[:5] + [("   ", 1)] + rows[5:] + [("", 0)])
    for model_flags in (tiny, ["--no-progress"]):  # explicit text model, and detected from the data
        assert_user_error(invoke("train", "--data", data, *model_flags, "--out", tmp_path / "run"),
                          "gaps.tsv", "2 empty text", "line 7")
    assert not (tmp_path / "run").exists()


def test_val_labels_unseen_in_training(tmp_path, sst, tiny):
    val = write_tsv(tmp_path / "val.tsv", [("a fine film", "1"), ("a so-so film", "neutral"), ("a bad film", "0")])
    assert_user_error(invoke("train", "--data", sst["train"], "--val-data", val, *tiny, "--out", tmp_path / "run"),
                      "val.tsv", "training lacks: neutral")
    assert not (tmp_path / "run").exists()


def test_multi_label_data_without_the_flag(tmp_path, tiny):
    rows = read_sst2("train.tsv", 20)
    data = tmp_path / "tags.jsonl"
    data.write_text("".join(json.dumps({"text": s, "labels": [str(y), "x"]}) + "\n" for s, y in rows))
    assert_user_error(invoke("train", "--data", data, *tiny, "--out", tmp_path / "run"), "tags.jsonl", "--multi-label")


def test_hub_model_offline_fails_fast(tmp_path, sst):
    started = time.monotonic()
    result = invoke("train", "--data", sst["train"], "--model", "hf:bert-base-uncased", "--no-progress",
                    "--out", tmp_path / "run")
    elapsed = time.monotonic() - started
    line = assert_user_error(result, "hf:bert-base-uncased", "local Hugging Face cache", "hf:<local folder>")
    assert "minilm" in line
    assert elapsed < 15, f"took {elapsed:.0f} s: looks like it waited on the network"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no partial folder


def test_unknown_text_model_name(tmp_path, sst):
    assert_user_error(invoke("train", "--data", sst["train"], "--model", "hf:" + str(tmp_path / "no" / "such"),
                             "--out", tmp_path / "run"), "does not exist")


def test_bad_text_config_values(tmp_path, sst, tiny):
    assert_user_error(invoke("train", "--data", sst["train"], *tiny, "--max-length", "4", "--out", tmp_path / "run"),
                      "data.max_length")
    assert_user_error(invoke("train", "--data", sst["train"], *tiny, "--set", "data.truncation_side=middle",
                             "--out", tmp_path / "run"), "data.truncation_side")
    assert_user_error(invoke("train", "--data", sst["train"], *tiny, "--set", "model.pooling=max",
                             "--out", tmp_path / "run"), "model.pooling")


# ------------------------------------------------------------------------------ lr-find


def _lr_find(sst, tiny_bert_dir, plot: Path, *extra):
    return invoke("lr-find", "--data", sst["train"], "--model", f"hf:{tiny_bert_dir}", "--set", "model.pretrained=false",
                  "--steps", "20", "--plot", plot, "--json", "--accelerator", "cpu", *extra)


def test_lr_find_on_text(tmp_path, sst, tiny_bert_dir):
    plot = tmp_path / "lr.png"
    printed = json_out(_lr_find(sst, tiny_bert_dir, plot, "--no-progress"))
    assert "suggested_lr" in printed and printed["strategy"] == "linear_probe" and Path(printed["plot"]) == plot
    assert printed["suggested_lr"] is None or 1e-6 <= printed["suggested_lr"] <= 1.0
    assert len(printed["lr"]) == len(printed["loss"]) > 0
    assert printed["lr"] == sorted(printed["lr"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    full = json_out(_lr_find(sst, tiny_bert_dir, tmp_path / "full.png", "--no-progress", "--strategy", "full"))
    assert full["strategy"] == "full" and "suggested_lr" in full and (tmp_path / "full.png").is_file()


def test_lr_find_no_progress_prints_no_bar(tmp_path, sst, tiny_bert_dir):
    result = _lr_find(sst, tiny_bert_dir, tmp_path / "lr.png", "--no-progress")
    ok(result)
    assert "Finding best initial lr" not in result.output and "it/s" not in result.output
