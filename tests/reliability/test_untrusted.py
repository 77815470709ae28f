"""Untrusted files: pickles that would run code are refused (weights, resume checkpoints, bundles,
configs) and never executed; --trust-pickle is the one explicit way to unpickle a weight file."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch

from conftest import tiny_run
from sftune import bundle as B
from sftune.config import build_config, dump_yaml
from conftest import TINY

from .conftest import assert_clear_error, cli_run, good_images, train_args


class Payload:
    """Unpickling this runs open(marker, 'w'): proof that a loader executed pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return good_images(tmp_path_factory.mktemp("untrusted") / "data", per_class=4)


@pytest.fixture(scope="module")
def bundle(data, tmp_path_factory, one_thread) -> Path:
    return tiny_run(data, tmp_path_factory.mktemp("b") / "run", train__epochs=1).path


def _backbone_state() -> dict[str, torch.Tensor]:
    import timm

    return timm.create_model("test_efficientnet", pretrained=False, num_classes=0).state_dict()


def test_the_payload_is_live(tmp_path):
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(Payload(marker))).close()
    assert marker.exists()  # so its absence below means the loader did not run it


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
def test_malicious_weight_file_is_refused_and_never_run(writer, suffix, data, tmp_path, bad_input):
    marker = tmp_path / "PWNED"
    weights = tmp_path / f"evil{suffix}"
    state = {**_backbone_state(), "evil": Payload(marker)}
    if writer == "torch.save":
        torch.save(state, weights)
    else:
        weights.write_bytes(pickle.dumps(state))
    result = cli_run(*train_args(data, tmp_path / "run", "--model", f"file:{weights}", "--arch", "test_efficientnet"))
    assert not marker.exists(), "pickled code ran"
    assert_clear_error(result, str(weights), "refused to load", "could run code", "--trust-pickle")
    assert not (tmp_path / "run").exists()
    bad_input(f"malicious pickle as a {suffix} backbone ({writer})", "clear error")


def test_trust_pickle_loads_a_pickled_checkpoint_only_when_asked(data, tmp_path, bad_input):
    """A real-world checkpoint: tensors plus a pickled argparse.Namespace. Refused by default
    (weights_only cannot rebuild the Namespace); --trust-pickle reads it and trains."""
    weights = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": _backbone_state(), "args": argparse.Namespace(lr=0.1, epochs=90)}, weights)
    args = train_args(data, tmp_path / "run", "--model", f"file:{weights}", "--arch", "test_efficientnet")
    assert_clear_error(cli_run(*args), str(weights), "--trust-pickle")
    bad_input("pickled checkpoint without --trust-pickle", "clear error")
    result = cli_run(*args, "--trust-pickle")
    assert result.exit_code == 0, result.output[-2000:]
    assert B.is_bundle(tmp_path / "run")
    bad_input("pickled checkpoint with --trust-pickle", "handled")


def _unfinished_run(data, tmp_path, last_ckpt: bytes):
    """An interrupted run's work folder (config + the given last.ckpt), then `train --resume` on it."""
    out = tmp_path / "run"
    work = B.partial_dir(out.absolute())
    (work / "checkpoints").mkdir(parents=True)
    # solver sgd: a run with a training loop, hence checkpoints (the L-BFGS head fit has none to resume)
    cfg = build_config(overrides={"data.path": str(data), **TINY, "train.epochs": 2, "strategy.solver": "sgd"})
    (work / B.CONFIG).write_text(dump_yaml(cfg))
    (work / "checkpoints" / "last.ckpt").write_bytes(last_ckpt)
    return cli_run("train", "--out", out, "--resume", "--no-progress")


def test_malicious_resume_checkpoint_is_refused(data, tmp_path, bad_input):
    marker = tmp_path / "PWNED"
    result = _unfinished_run(data, tmp_path, pickle.dumps({"state_dict": {}, "x": Payload(marker)}))
    assert not marker.exists(), "pickled code ran"
    assert_clear_error(result, "cannot resume from", "last.ckpt", "would run pickled code")
    bad_input("malicious last.ckpt in an unfinished run, --resume", "clear error")


def test_damaged_resume_checkpoint_is_refused(data, tmp_path, bad_input):
    good = tmp_path / "good.ckpt"
    torch.save({"epoch": 0, "state_dict": {"w": torch.zeros(1000)}}, good)
    result = _unfinished_run(data, tmp_path, good.read_bytes()[:300])  # a truncated file
    assert_clear_error(result, "cannot resume from", "last.ckpt", f"delete {B.partial_dir((tmp_path / 'run').absolute())}")
    bad_input("truncated last.ckpt, --resume", "clear error")


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_bundle_with_pickled_weights_is_refused(command, bundle, data, tmp_path, bad_input):
    import shutil

    evil = tmp_path / "evil_bundle"
    shutil.copytree(bundle, evil)
    marker = tmp_path / "PWNED"
    (evil / B.WEIGHTS).write_bytes(pickle.dumps({"x": Payload(marker)}))
    args = ["predict", evil, next(data.rglob("*.png"))] if command == "predict" else ["eval", evil, "--data", data]
    result = cli_run(*args)
    assert not marker.exists()
    assert_clear_error(result, str(evil / B.WEIGHTS), "not a readable safetensors file")
    bad_input(f"bundle whose model.safetensors is a pickle ({command})", "clear error")


def test_bundle_config_with_a_python_tag_is_refused(bundle, data, tmp_path, bad_input):
    import shutil

    evil = tmp_path / "evil_bundle"
    shutil.copytree(bundle, evil)
    marker = tmp_path / "PWNED"
    (evil / B.CONFIG).write_text(f"task: !!python/object/apply:os.system ['touch {marker}']\n")
    result = cli_run("predict", evil, next(data.rglob("*.png")))
    assert not marker.exists()
    assert_clear_error(result, str(evil / B.CONFIG), "not valid YAML")
    bad_input("bundle config.yaml with a !!python tag", "clear error")
