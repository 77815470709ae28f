"""report.json / report.html from training and from `sftune eval` (one bundle, and two compared)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from sftune.cli.main import cli
from sftune.eval.outputs import Outputs
from sftune.eval.report import comparison_report, evaluation_report, write_report

from .conftest import N_VAL, validate_report


def _eval(*args: str):
    result = CliRunner().invoke(cli, ["eval", *args])
    assert result.exit_code == 0, result.output
    return result


def test_training_leaves_a_valid_report_with_every_section(trained_bundle):
    report = json.loads((trained_bundle / "report.json").read_text())
    validate_report(report)
    assert report["run"]["bundle"] == str(trained_bundle)  # where the bundle lives, not its .partial work folder
    assert report["run"]["strategy"] == "full" and report["data"]["n"] == N_VAL
    metrics = json.loads((trained_bundle / "metrics.json").read_text())
    assert report["metrics"]["acc"] == pytest.approx(metrics["acc"], abs=1e-6)  # same weights, same examples
    assert sum(map(sum, report["confusion_matrix"])) == N_VAL
    assert report["intervals"]["acc"]["low"] <= report["metrics"]["acc"] <= report["intervals"]["acc"]["high"]
    history = report["run"]["history"]
    assert len(history) == 2 and any(k.startswith("lr-") for k in history[0])  # LR per epoch for the curves
    page = (trained_bundle / "report.html").read_text()
    for section in ("Summary", "Metrics", "Confusion matrix", "Per class", "Training curves", "Calibration",
                    "Most confident mistakes", "Configuration"):
        assert f"<h2>{section}" in page, section
    assert "http://" not in page and "https://" not in page and "<script" not in page  # offline, self-contained
    assert page.count("data:image/png;base64,") >= 3  # confusion, curves, calibration
    if report["mistakes"]:
        assert "data:image/jpeg;base64," in page  # thumbnails of the mistaken images


def test_eval_writes_the_report_beside_the_bundle_and_prints_intervals(trained_bundle, report_digits, tmp_path):
    bundle = shutil.copytree(trained_bundle, tmp_path / "b")
    result = _eval(str(bundle), "--data", str(report_digits / "val"), "--bootstrap", "200")
    folder = bundle / "reports" / f"{report_digits.name}-val"  # <root>-val: "val" alone names nothing
    report = json.loads((folder / "report.json").read_text())
    validate_report(report)
    assert report["intervals"]["resamples"] == 200
    assert "95% interval" in result.output and str(folder / "report.html") in result.output
    assert "confusion matrix" in result.output
    trained = json.loads((bundle / "report.json").read_text())
    assert report["metrics"]["acc"] == pytest.approx(trained["metrics"]["acc"], abs=1e-6)


def test_eval_json_and_no_report(trained_bundle, report_digits, tmp_path):
    bundle = shutil.copytree(trained_bundle, tmp_path / "b")
    result = _eval(str(bundle), "--data", str(report_digits / "val"), "--json", "--no-report")
    data = json.loads(result.output)
    assert data["report"] is None and not (bundle / "reports").exists()
    for key in ("acc", "balanced_acc", "f1", "f1_weighted", "roc_auc", "pr_auc", "ece", "log_loss", "loss", "intervals",
                "per_class"):
        assert key in data, key


def test_comparing_two_bundles(trained_bundle, report_digits, tmp_path, one_thread):
    from conftest import tiny_run

    other = tiny_run(report_digits, tmp_path / "probe", strategy="linear_probe", train__epochs=1).path
    out = tmp_path / "cmp"
    result = _eval(str(trained_bundle), str(other), "--data", str(report_digits / "val"), "--out", str(out),
                   "--bootstrap", "200")
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    sig = report["comparison"]["significance"]
    assert sig["a_only_right"] + sig["b_only_right"] + sig["both_right"] + sig["both_wrong"] == N_VAL
    assert "McNemar" in result.output and "B − A" in result.output
    page = (out / "report.html").read_text()
    assert "Where they disagree" in page and "F1 per class" in page
    json_out = json.loads(_eval(str(trained_bundle), str(other), "--data", str(report_digits / "val"),
                                "--json", "--no-report", "--bootstrap", "100").output)
    assert set(json_out) >= {"a", "b", "differences", "significance"}


def test_eval_refuses_three_bundles(trained_bundle, report_digits):
    result = CliRunner().invoke(cli, ["eval", str(trained_bundle)] * 1 + [str(trained_bundle)] * 2 + ["--data", str(report_digits)])
    assert result.exit_code == 2 and "one bundle, or two" in result.output


def test_text_and_multi_label_reports_render_snippets(tmp_path):
    """Reports of text models show text snippets (escaped), per-label tables, no confusion matrix."""
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(40, 3, generator=g) < 0.4).float()
    logits = torch.randn(40, 3, generator=g) + (targets * 2 - 1)
    items = [f"<b>review {i}</b> & a long text " + "word " * 80 for i in range(40)]
    out = Outputs(["sports", "politics", "tech"], logits, targets, items, multi_label=True)
    report = evaluation_report(out, tmp_path / "no_bundle", "news.csv", "text", bootstrap=100)
    validate_report(report)
    assert report["confusion_matrix"] is None and report["metrics"]["exact_match"] is not None
    _, html_path = write_report(tmp_path / "r", report, items_are_files=False)
    page = html_path.read_text()
    assert "&lt;b&gt;review" in page and "<b>review" not in page  # escaped, never injected
    assert "Per class" in page and "Confusion matrix" not in page
    validate_report(json.loads((tmp_path / "r" / "report.json").read_text()))
    cmp = comparison_report(out, out, tmp_path / "a", tmp_path / "b", "news.csv", "text", bootstrap=100)
    validate_report(cmp)


def test_report_can_be_turned_off(report_digits, tmp_path, one_thread):
    from conftest import tiny_run

    run = tiny_run(report_digits, tmp_path / "quiet", train__epochs=1, report__enabled=False)
    assert (run.path / "metrics.json").is_file() and not (run.path / "report.html").exists()


def test_tensorboard_and_mlflow_loggers(report_digits, tmp_path, monkeypatch, one_thread):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from conftest import tiny_run

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    run = tiny_run(report_digits, tmp_path / "logged", train__epochs=1, logging__tensorboard=True,
                   logging__mlflow=True, logging__mlflow_tracking_uri=uri)
    assert list((run.path / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (run.path / "logs" / "metrics.csv").is_file()  # CSV always
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("sftune")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and "val/acc" in runs[0].data.metrics
    assert runs[0].data.params["strategy.name"] == "linear_probe"


def test_an_unreachable_mlflow_server_is_a_one_line_error(report_digits, tmp_path):
    pytest.importorskip("mlflow")
    result = CliRunner().invoke(cli, ["train", "--data", str(report_digits), "--out", str(tmp_path / "x"),
                                      "--set", "logging.mlflow=true", "--set", "logging.mlflow_tracking_uri=nosuch://x",
                                      "--model", "timm:test_efficientnet", "--set", "model.pretrained=false",
                                      "--image-size", "32", "--workers", "0", "--no-progress", "--accelerator", "cpu"])
    assert result.exit_code == 2 and "MLflow tracking at 'nosuch://x' failed" in result.output
    assert "Traceback" not in result.output


def test_python_api_evaluate_writes_a_report(trained_bundle, report_digits, tmp_path):
    import sftune

    metrics = sftune.evaluate(trained_bundle, report_digits / "val", report=tmp_path / "api")
    validate_report(json.loads((tmp_path / "api" / "report.json").read_text()))
    assert (tmp_path / "api" / "report.html").is_file()
    assert metrics["acc"] == pytest.approx(sftune.evaluate(trained_bundle, report_digits / "val")["acc"], abs=1e-6)
    assert metrics["intervals"]["acc"]["low"] <= metrics["acc"]


def test_train_json_stdout_is_the_json_document_alone(report_digits, tmp_path, one_thread):
    """For cron jobs: `sftune train --json > out.json` must parse, progress and info lines elsewhere."""
    from conftest import TINY_FLAGS

    flags = [f for f in TINY_FLAGS if f != "--no-progress"]  # --json alone must silence the progress bar
    result = CliRunner().invoke(cli, ["train", "--data", str(report_digits), *flags, "--epochs", "1",
                                      "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["bundle"] == str(tmp_path / "run") and "acc" in document
    assert "data:" in result.stderr  # the info lines went to stderr
