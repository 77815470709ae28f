"""The local registry: versions, aliases, rollback, audit; concurrent writers; crashes mid-write."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from sftune.continual.registry import LocalRegistry, open_registry, parse_ref
from sftune.errors import SftuneError


def fake_bundle(folder: Path, acc: float, parent: str | None = None) -> Path:
    """The files the registry reads; no model needed."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("task: image_classification\n")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"x" * 1000)
    (folder / "metrics.json").write_text(json.dumps({"acc": acc, "f1": acc, "history": [1, 2]}))
    (folder / "lineage.json").write_text(json.dumps({"data": {"path": "/data", "fingerprint_sha256": "abc"},
                                                     "parent": {"path": parent} if parent else None}))
    return folder


def test_register_alias_promote_rollback_audit(tmp_path):
    with pytest.raises(SftuneError, match="no registry at"):  # reading never creates one: a typo is not "empty"
        open_registry(tmp_path / "models")
    assert not (tmp_path / "models").exists()
    reg = open_registry(tmp_path / "models", create=True)
    assert isinstance(reg, LocalRegistry)
    v1 = reg.register(fake_bundle(tmp_path / "a", 0.8), "m", alias="champion")
    v2 = reg.register(fake_bundle(tmp_path / "b", 0.9, parent=v1.path), "m", note="second")
    assert (v1.version, v2.version) == (1, 2)
    assert v2.parent == "m/1"  # lineage's parent path resolved to the registered version
    assert v2.metrics == {"acc": 0.9, "f1": 0.9} and v2.fingerprint == "abc"
    assert not (Path(v2.path) / "checkpoints").exists()
    assert reg.get("m", "champion").version == 1
    reg.set_alias("m", "champion", 2)
    assert reg.get("m", "champion").version == 2 and reg.get(*parse_ref("m")).version == 2
    assert reg.rollback("m") == 1
    assert reg.get("m", "champion").aliases == ["champion"]
    actions = [e["action"] for e in reversed(reg.audit("m"))]
    assert actions == ["register", "set_alias", "register", "set_alias", "rollback"]
    with pytest.raises(SftuneError, match="no version or alias 'nope'"):
        reg.get("m", "nope")
    with pytest.raises(SftuneError, match="has no version 7"):
        reg.set_alias("m", "champion", 7)
    assert reg.check()["ok"]


def _register(args):
    root, bundle, i = args
    return LocalRegistry(Path(root)).register(bundle, "m", note=str(i)).version


def test_concurrent_writers_get_distinct_versions(tmp_path):
    bundle = fake_bundle(tmp_path / "a", 0.5)
    LocalRegistry(tmp_path / "models")
    with ProcessPoolExecutor(4) as pool:
        versions = list(pool.map(_register, [(str(tmp_path / "models"), str(bundle), i) for i in range(8)]))
    assert sorted(versions) == list(range(1, 9))
    reg = LocalRegistry(tmp_path / "models")
    assert reg.check()["ok"] and not reg.check()["orphan_folders"]
    assert len(reg.audit("m")) == 8


CRASH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from sftune.continual import registry as R
    reg = R.LocalRegistry(Path(sys.argv[1]))
    point = sys.argv[2]
    real_log = R.LocalRegistry._log
    def crash(self, db, action, *a, **k):
        if action == point:  # the row/alias change is executed, the transaction not committed
            os._exit(9)
        return real_log(self, db, action, *a, **k)
    R.LocalRegistry._log = crash
    if point == "register":
        reg.register(sys.argv[3], "m")
    else:
        reg.set_alias("m", "champion", 2)
""")


def _crash(root: Path, point: str, bundle: Path | str = "") -> None:
    proc = subprocess.run([sys.executable, "-c", CRASH, str(root), point, str(bundle)], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr


def test_crash_during_register_leaves_no_row_and_is_cleaned(tmp_path):
    reg = LocalRegistry(tmp_path / "models")
    reg.register(fake_bundle(tmp_path / "a", 0.5), "m", alias="champion")
    _crash(tmp_path / "models", "register", fake_bundle(tmp_path / "b", 0.6))
    report = reg.check()
    assert report["ok"] and report["orphan_folders"] == ["versions/m/2"]  # files without a row, harmless
    assert [v.version for v in reg.versions("m")] == [1]
    v = reg.register(tmp_path / "b", "m")  # the next writer reuses the number and removes the orphan
    assert v.version == 2 and reg.check()["orphan_folders"] == []


def test_crash_during_promotion_keeps_old_champion(tmp_path):
    reg = LocalRegistry(tmp_path / "models")
    reg.register(fake_bundle(tmp_path / "a", 0.5), "m", alias="champion")
    reg.register(fake_bundle(tmp_path / "b", 0.6), "m")
    before = len(reg.audit("m"))
    _crash(tmp_path / "models", "set_alias")
    assert reg.get("m", "champion").version == 1  # rolled back: not half promoted
    assert len(reg.audit("m")) == before
    assert reg.check()["ok"]
    reg.set_alias("m", "champion", 2)  # the registry stays writable (no stale lock)
    assert reg.get("m", "champion").version == 2


def test_mlflow_registry_on_a_local_store(tmp_path, monkeypatch):
    """Runs where mlflow-skinny is installed (`pip install 'sftune[mlflow]'`); MLflow 3 needs an
    opt-in for its file store, the only registry store mlflow-skinny has without SQLAlchemy."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    reg = open_registry(f"mlflow:file://{tmp_path / 'mlruns'}")
    reg.register(fake_bundle(tmp_path / "a", 0.5), "m", alias="champion")
    v2 = reg.register(fake_bundle(tmp_path / "b", 0.6), "m", parent="m/1")
    assert v2.parent == "m/1" and v2.metrics["acc"] == 0.6 and v2.fingerprint == "abc"
    reg.set_alias("m", "champion", 2)
    assert reg.get("m", "champion").version == 2
    assert reg.rollback("m") == 1 and reg.get("m", "champion").version == 1
    actions = [e["action"] for e in reg.audit("m")]
    assert actions[0] == "rollback" and sorted(actions) == ["register", "register", "rollback", "set_alias", "set_alias"]
