"""One bad input never costs the others in `sftune predict` (image classification; the
segmentation predictor is covered in tests/tasks): every good file is predicted, each bad one is
listed with its reason (in --json too), the exit status is 0 unless nothing could be predicted."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import tiny_run
from sftune.cli.main import cli


@pytest.fixture(scope="module")
def bundle_and_inputs(small_digits, tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("predict-faults")
    run = tiny_run(small_digits, root / "run", **{"train.epochs": 1})
    inputs = root / "inputs"
    inputs.mkdir()
    good = sorted((small_digits / "0").iterdir())[:2]
    for i, f in enumerate(good):
        shutil.copy(f, inputs / f"good{i}.png")
    (inputs / "empty.jpg").write_bytes(b"")  # zero bytes
    (inputs / "text.jpg").write_text("not an image")
    return run.path, inputs


def test_bad_files_are_listed_and_good_ones_predicted(bundle_and_inputs):
    bundle, inputs = bundle_and_inputs
    result = CliRunner().invoke(cli, ["predict", str(bundle), str(inputs), "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["path"].rsplit("/", 1)[1] for r in records] == ["empty.jpg", "good0.png", "good1.png", "text.jpg"]
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in records}
    assert by_name["empty.jpg"]["label"] is None and "empty file" in by_name["empty.jpg"]["skipped"]
    assert by_name["text.jpg"]["label"] is None and by_name["text.jpg"]["skipped"]
    assert by_name["good0.png"]["label"] in ("0", "1", "2") and "skipped" not in by_name["good0.png"]
    assert "2 of 4 input(s) skipped" in result.stderr and "--strict" not in result.output


def test_nothing_readable_is_one_line_exit_2(bundle_and_inputs):
    bundle, inputs = bundle_and_inputs
    result = CliRunner().invoke(cli, ["predict", str(bundle), str(inputs / "text.jpg")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "nothing could be predicted" in result.output


def test_python_api_keeps_one_prediction_per_file(bundle_and_inputs):
    import sftune

    bundle, inputs = bundle_and_inputs
    predictions = sftune.load(bundle).predict(inputs)
    assert len(predictions) == 4 and sum(p.skipped is not None for p in predictions) == 2
