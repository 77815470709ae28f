"""Every bad CLI input: exit status 2, one line starting with 'error:', no traceback, no network."""

from __future__ import annotations

import os
import pickle
import time
import warnings

import pytest
import torch
from click.testing import CliRunner

from conftest import TINY_FLAGS
from sftune.cli.main import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(result, *needles: str, only_line: bool = True) -> str:
    """Exit 2 with an 'error: ...' line (the only output line unless only_line=False); returns it."""
    out = result.output
    assert "Traceback" not in out, out
    assert result.exit_code == 2, (result.exit_code, repr(result.exception), out)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "no output"
    if only_line:
        assert len(lines) == 1, out
    line = lines[-1]
    assert line.startswith("error: "), out
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def train(data, out, *extra):
    return invoke("train", "--data", data, "--out", out, *extra)


class _Payload:
    """Unpickling this runs open(marker, 'w'): proof that a loader executed pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------------------- train


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "no_such_data"
    assert_user_error(train(missing, tmp_path / "run"), str(missing), "does not exist")
    assert not (tmp_path / "run").exists()


def test_no_data_at_all(tmp_path):
    assert_user_error(invoke("train", "--out", tmp_path / "run"), "--data")


def test_unknown_model_lists_the_zoo(tmp_path, digits_dir):
    line = assert_user_error(train(digits_dir, tmp_path / "run", "--model", "resnet_nope"), "'resnet_nope'")
    assert "efficientnet_lite0" in line and "timm:<name>" in line and "file:<path>" in line


def test_misspelt_zoo_model_did_you_mean(tmp_path, digits_dir):
    assert_user_error(train(digits_dir, tmp_path / "run", "--model", "efficientnet_lite"),
                      "did you mean 'efficientnet_lite")


def test_local_path_without_file_prefix(tmp_path, digits_dir):
    weights = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    assert_user_error(train(digits_dir, tmp_path / "run", "--model", weights), f"file:{weights}")


def test_unknown_strategy_lists_available(tmp_path, digits_dir):
    line = assert_user_error(train(digits_dir, tmp_path / "run", *TINY_FLAGS, "--strategy", "bogus"),
                             "unknown strategy 'bogus'")
    assert "linear_probe" in line and "freeze_unfreeze" in line and "full" in line


def test_bad_set_key(tmp_path, digits_dir):
    assert_user_error(train(digits_dir, tmp_path / "run", "--set", "train.epoch=3"),
                      "train.epoch", "did you mean 'epochs'")


def test_set_without_equals(tmp_path, digits_dir):
    assert_user_error(train(digits_dir, tmp_path / "run", "--set", "train.lr"), "--set 'train.lr'", "section.key=value")


def test_bad_flag_value_names_the_field(tmp_path, digits_dir):
    assert_user_error(train(digits_dir, tmp_path / "run", "--batch-size", "0"), "train.batch_size")
    assert_user_error(train(digits_dir, tmp_path / "run", "--lr", "-1"), "train.lr")
    assert_user_error(train(digits_dir, tmp_path / "run", "--image-size", "8"), "data.image_size")


def test_missing_config_file(tmp_path, digits_dir):
    missing = tmp_path / "nope.yaml"
    assert_user_error(invoke("train", "-c", missing, "--data", digits_dir, "--out", tmp_path / "run"), str(missing))


def test_invalid_yaml_config(tmp_path, digits_dir):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train: {epochs: 3\n")
    assert_user_error(invoke("train", "-c", cfg, "--data", digits_dir, "--out", tmp_path / "run"),
                      str(cfg), "not valid YAML")


def test_unfreeze_epoch_not_below_epochs(tmp_path, digits_dir):
    assert_user_error(train(digits_dir, tmp_path / "run", *TINY_FLAGS, "--strategy", "freeze_unfreeze",
                            "--epochs", "2", "--set", "strategy.unfreeze_epoch=2"),
                      "strategy.unfreeze_epoch (2)", "train.epochs (2)")


def test_timm_pretrained_offline_is_one_clear_line(tmp_path, digits_dir):
    try:  # only meaningful when the weights are not already in the local HF cache
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache("timm/resnet50.a1_in1k", "model.safetensors")
        if isinstance(cached, str):
            pytest.skip("timm/resnet50 weights are cached locally; the offline path cannot be exercised")
    except ImportError:  # pragma: no cover
        pass
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest before anything imported the hub
    started = time.monotonic()
    result = train(digits_dir, tmp_path / "run", "--model", "timm:resnet50", "--epochs", "1", "--no-progress")
    elapsed = time.monotonic() - started
    line = assert_user_error(result, "timm:resnet50", "could not get pretrained weights")
    assert "file:" in line and "sftune models" in line  # says what to do offline
    assert elapsed < 30, f"took {elapsed:.0f} s: looks like it waited on the network"


def test_timm_unknown_architecture(tmp_path, digits_dir):
    assert_user_error(train(digits_dir, tmp_path / "run", "--model", "timm:resnet_nope"),
                      "timm has no architecture 'resnet_nope'")


def test_file_model_that_does_not_exist(tmp_path, digits_dir):
    missing = tmp_path / "missing.pth"
    assert_user_error(train(digits_dir, tmp_path / "run", "--model", f"file:{missing}"),
                      f"file:{missing}", "does not exist")


def test_file_model_without_arch(tmp_path, digits_dir):
    weights = tmp_path / "x.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    assert_user_error(train(digits_dir, tmp_path / "run", "--model", f"file:{weights}"),
                      f"file:{weights}", "--arch")


def test_file_model_with_unknown_weight_format(tmp_path, digits_dir):
    weights = tmp_path / "x.onnx"
    weights.write_bytes(b"\x00")
    assert_user_error(train(digits_dir, tmp_path / "run", *TINY_FLAGS, "--model", f"file:{weights}",
                            "--arch", "test_efficientnet"), "unknown weight format '.onnx'")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, digits_dir, writer):
    marker = tmp_path / "PWNED"
    # The payload is live: a plain unpickle does create the marker.
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()
    marker.unlink()

    weights = tmp_path / "evil.pth"
    state = {"conv_stem.weight": torch.zeros(1), "evil": _Payload(marker)}
    if writer == "torch.save":
        torch.save(state, weights)
    else:
        with weights.open("wb") as fh:
            pickle.dump(state, fh)
    result = train(digits_dir, tmp_path / "run", *TINY_FLAGS, "--model", f"file:{weights}",
                   "--arch", "test_efficientnet")
    assert not marker.exists(), "pickled code ran while loading the weights"
    assert_user_error(result, str(weights), "refused to load", ".safetensors")
    assert not (tmp_path / "run").exists()


def test_malicious_pickle_refusal_emits_no_warning_noise(tmp_path, digits_dir):
    weights = tmp_path / "evil.pth"
    with weights.open("wb") as fh:
        pickle.dump({"evil": _Payload(tmp_path / "PWNED")}, fh)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(digits_dir, tmp_path / "run", *TINY_FLAGS, "--model", f"file:{weights}",
                       "--arch", "test_efficientnet")
    assert_user_error(result, "refused to load")
    noisy = [str(w.message)[:80] for w in caught if "pickle" in str(w.message).lower()]
    assert noisy == []


def test_resume_with_nothing_to_resume(tmp_path, digits_dir):
    out = tmp_path / "run"
    assert_user_error(train(digits_dir, out, *TINY_FLAGS, "--resume"), "cannot resume", str(out))
    assert not out.exists()


def test_resume_without_out():
    assert_user_error(invoke("train", "--resume"), "--resume needs --out")


def test_output_folder_exists_without_overwrite(tmp_path, digits_dir):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_user_error(train(digits_dir, out, *TINY_FLAGS, "--epochs", "1"), str(out), "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # no partial/lock folder left behind


def test_val_data_missing(tmp_path, digits_dir):
    missing = tmp_path / "nv"
    assert_user_error(train(digits_dir, tmp_path / "run", "--val-data", missing), str(missing))


def test_data_is_a_text_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert_user_error(train(notes, tmp_path / "run"), str(notes), ".csv/.tsv")


def test_csv_with_extra_fields(tmp_path, digits_dir):
    manifest = tmp_path / "m.csv"
    rows = [f"{f},{f.parent.name},oops" for f in sorted(digits_dir.rglob("*.png"))[:6]]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    assert_user_error(train(manifest, tmp_path / "run", *TINY_FLAGS), str(manifest))


@pytest.mark.parametrize(
    "flag, value, field",
    [("--devices", "foo", "trainer.devices"), ("--accelerator", "tpu", "trainer.accelerator"),
     ("--distributed", "bogus", "trainer.distributed")],
)
def test_bad_trainer_settings(tmp_path, digits_dir, flag, value, field):
    result = train(digits_dir, tmp_path / "run", *TINY_FLAGS, "--epochs", "1", flag, value)
    assert_user_error(result, field, only_line=False)  # a 'data: ...' info line may come first


# --------------------------------------------------------------------------- eval, predict


def test_eval_on_folder_that_is_not_a_bundle(tmp_path, digits_dir):
    folder = tmp_path / "not_a_bundle"
    folder.mkdir()
    (folder / "config.yaml").write_text("train: {epochs: 1}\n")  # config alone is not enough
    assert_user_error(invoke("eval", folder, "--data", digits_dir), "not an sftune bundle", "model.safetensors")


def test_eval_on_missing_bundle(tmp_path, digits_dir):
    missing = tmp_path / "gone"
    assert_user_error(invoke("eval", missing, "--data", digits_dir), str(missing), "does not exist")


def test_eval_points_at_unfinished_run(tmp_path, digits_dir):
    out = tmp_path / "run"
    (tmp_path / ".run.partial").mkdir()
    assert_user_error(invoke("eval", out, "--data", digits_dir), "--resume")


def test_predict_on_folder_that_is_not_a_bundle(tmp_path, digits_dir):
    assert_user_error(invoke("predict", digits_dir, digits_dir / "0"), "not an sftune bundle", str(digits_dir))


def test_predict_on_missing_bundle(tmp_path, digits_dir):
    assert_user_error(invoke("predict", tmp_path / "gone", digits_dir), "does not exist")
