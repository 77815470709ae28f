"""Artifacts: a crash at any point leaves the old bundle or the new one (never half, never neither);
files and checkpoints are replaced atomically; two runs cannot write one --out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import tiny_run
from sftune import bundle as B
from sftune.errors import SftuneError
from sftune.resilience import AtomicCheckpointIO

from .conftest import assert_clear_error, cli_run, good_images, train_args


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return good_images(tmp_path_factory.mktemp("artifacts") / "data", per_class=4)


class Crash(Exception):
    pass


def _crash(*args, **kwargs):
    raise Crash("simulated crash")


def test_replacing_a_bundle_is_one_atomic_exchange_here(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "x").write_text("b")
    assert B.exchange_paths(a, b), "renameat2(RENAME_EXCHANGE) unavailable: commit falls back to two renames"
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


@pytest.mark.parametrize("crash_at", ["before the swap", "after the swap"])
def test_overwrite_crash_leaves_the_old_or_the_new_bundle(crash_at, data, tmp_path, monkeypatch, one_thread, bad_input):
    out = tmp_path / "run"
    old = tiny_run(data, out, train__epochs=1, train__seed=1)
    old_metrics = (out / B.METRICS).read_text()
    if crash_at == "before the swap":
        monkeypatch.setattr(B, "exchange_paths", _crash)
    else:  # swapped, then the process dies while deleting the old bundle
        monkeypatch.setattr(B.shutil, "rmtree", _crash)
    with pytest.raises(Crash):
        tiny_run(data, out, train__epochs=1, train__seed=2, overwrite=True)
    monkeypatch.undo()
    assert B.is_bundle(out)
    import sftune

    sftune.load(out)  # whole and loadable
    now = (out / B.METRICS).read_text()
    if crash_at == "before the swap":
        assert now == old_metrics  # the old bundle
    else:
        assert json.loads(now)["seconds"] != json.loads(old_metrics)["seconds"] or now != old_metrics  # the new one
    assert old.path == out
    bad_input(f"crash while replacing a bundle ({crash_at})", "handled")


def test_atomic_write_keeps_the_old_file_on_a_crash(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    B.atomic_write_json(target, {"acc": 1})
    monkeypatch.setattr(B.os, "replace", _crash)
    with pytest.raises(Crash):
        B.atomic_write_json(target, {"acc": 0})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"acc": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_checkpoint_write_crash_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def half_written(obj, fh):  # the process dies after writing part of the new file
        fh.write(b"PK\x03\x04 partial")
        raise Crash("simulated crash")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(Crash):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_second_writer_of_one_out_is_refused(data, tmp_path, bad_input):
    holder = B.RunFolder.open(tmp_path / "run")  # a real flock, as another process would hold it
    try:
        result = cli_run(*train_args(data, tmp_path / "run"))
        assert_clear_error(result, "another sftune process is writing", str(tmp_path / "run"), "choose another --out")
        assert not (tmp_path / "run").exists()  # and the holder's work folder was left alone
        assert B.partial_dir((tmp_path / "run").absolute()).is_dir()
    finally:
        holder.release()
    bad_input("two runs writing to the same --out", "clear error")


def test_stale_lock_file_of_a_killed_run_does_not_block(data, tmp_path, one_thread):
    (tmp_path / ".run.lock").write_text("")  # left by a kill -9: the file stays, the flock went with the process
    result = cli_run(*train_args(data, tmp_path / "run"))
    assert result.exit_code == 0, result.output[-2000:]


def test_out_that_cannot_be_created_is_one_line(data, tmp_path, bad_input):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = cli_run(*train_args(data, blocker / "run"))
    assert_clear_error(result, "cannot create the output folder", str(blocker), "choose another --out")
    bad_input("--out below a regular file", "clear error")


def test_default_out_folders_of_two_runs_never_collide(data, tmp_path, monkeypatch, one_thread):
    """Two runs started in the same second without --out: the second is refused rather than mixed in."""
    monkeypatch.chdir(tmp_path)
    import sftune

    first = sftune.default_out_dir()
    monkeypatch.setattr(sftune, "default_out_dir", lambda: first)
    tiny_run(data, None, train__epochs=1)
    with pytest.raises(SftuneError, match="already exists"):
        tiny_run(data, None, train__epochs=1)
