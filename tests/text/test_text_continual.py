"""The continual loop on a text bundle, through the CLI: registry, drift (labeled and unlabeled
texts), update with replayed old sentences, lineage. A tiny random BERT: this checks the text
paths work end to end, not how well drift is detected (bench/drift_bench.py measures that)."""

from __future__ import annotations

import json

import pytest

from .conftest import read_sst2, write_tsv
from .test_text_cli import invoke, json_out, ok


@pytest.fixture(scope="module")
def text_champion(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("text_loop")
    train = write_tsv(root / "train.tsv", read_sst2("train.tsv", 120))
    dev = write_tsv(root / "dev.tsv", read_sst2("dev.tsv", 40))
    out = root / "v1"
    json_out(invoke("train", "--data", train, "--val-data", dev, *tiny, "--epochs", "2", "--max-length", "48",
                    "--out", out, "--json"))
    return root, out


def test_text_bundle_keeps_reference_and_replay(text_champion):
    _, bundle = text_champion
    replay = json.loads((bundle / "replay.json").read_text())
    assert replay["kind"] == "text" and replay["train"] and "text" in replay["train"][0]
    assert (bundle / "reference.safetensors").is_file()


def test_text_drift_labeled_and_unlabeled(text_champion):
    root, bundle = text_champion
    new = write_tsv(root / "new.tsv", read_sst2("train.tsv", 400)[300:400])
    r = invoke("drift", bundle, "--data", new, "--json", "--permutations", "99", "--html", root / "drift.html")
    assert r.exit_code in (0, 3), r.output
    report = json.loads(r.stdout)
    assert report["labeled"] and set(report["tests"]) >= {"features", "predicted_classes", "confidence", "accuracy"}
    assert (r.exit_code == 3) == report["drift"]
    assert "data:image/png;base64," in (root / "drift.html").read_text()
    texts = root / "new.txt"
    texts.write_text("".join(s.replace("\n", " ") + "\n" for s, _ in read_sst2("train.tsv", 400)[300:360]))
    r = invoke("drift", bundle, "--data", texts, "--json", "--permutations", "99")
    assert r.exit_code in (0, 3), r.output
    assert not json.loads(r.stdout)["labeled"]


def test_text_update_through_the_registry(text_champion):
    root, bundle = text_champion
    models = root / "models"
    ok(invoke("registry", "--registry", models, "register", bundle, "--name", "sst", "--alias", "champion", "--json"))
    new = write_tsv(root / "new_train.tsv", read_sst2("train.tsv", 400)[200:300])
    r = invoke("update", "sst", "--registry", models, "--data", new, "--out", root / "v2", "--epochs", "1",
               "--min-gain", "-1", "--max-drop", "1", "--no-progress", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["promoted"] and result["registry"]["champion"] == 2
    assert result["data"]["replay"] > 0
    lineage = json.loads((root / "v2" / "lineage.json").read_text())
    assert lineage["parent"]["is_bundle"] and lineage["update"]["data"]["replay"] == result["data"]["replay"]
    shown = json.loads(ok(invoke("registry", "--registry", models, "show", "sst@champion", "--json")))
    assert shown["version"] == 2
