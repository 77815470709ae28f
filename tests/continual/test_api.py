"""The Python API of the loop (issue 17 item 19): ``sftune.Registry``, ``sftune.drift`` and
``sftune.update`` do what the CLI does, with typed results, and agree with the CLI's JSON."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import sftune
from conftest import tiny_run
from continual.test_loop import shifted_copy
from sftune.cli.main import cli
from sftune.continual.drift import DriftResult
from sftune.continual.registry import LocalRegistry, ModelVersion
from sftune.continual.update import UpdateResult
from sftune.errors import SftuneError


def test_registry_drift_update_from_python(tmp_path, small_digits, one_thread):
    run = tiny_run(small_digits, tmp_path / "champion", train__epochs=1)
    shifted = shifted_copy(small_digits, tmp_path / "shifted")
    models = tmp_path / "models"

    with pytest.raises(SftuneError, match="no registry at"):  # a mistyped location never creates one
        sftune.Registry(models)
    registry = sftune.Registry(models, create=True)
    assert isinstance(registry, LocalRegistry)
    version = registry.register(run.path, "d", alias="champion")
    assert isinstance(version, ModelVersion) and version.version == 1
    assert registry.get("d", "champion").version == 1

    # drift: the same numbers as `sftune drift --json` (same seed), by registry reference too.
    result = sftune.drift("d@champion", shifted, registry=models, permutations=199, html=tmp_path / "drift.html")
    assert isinstance(result, DriftResult)
    assert {t.name for t in result.tests} == {"features", "predicted_classes", "confidence", "accuracy"}
    assert "data:image/png;base64," in (tmp_path / "drift.html").read_text()
    r = CliRunner().invoke(cli, ["drift", str(run.path), "--data", str(shifted), "--json", "--permutations", "199"])
    cli_out = json.loads(r.output)
    assert cli_out["drift"] == result.drift
    assert cli_out["tests"]["features"]["p_value"] == pytest.approx(result.test("features").p_value)

    # update: an always-passing gate promotes; the registry records the challenger as champion.
    res = sftune.update("d", shifted, registry=registry, out=tmp_path / "c1", epochs=1, min_gain=-1, max_drop=1)
    assert isinstance(res, UpdateResult) and res.decision.promote
    assert res.registry == {"name": "d", "version": 2, "parent": "d/1", "champion": 2}
    assert registry.get("d", "champion").version == 2
    # an impossible gate: registered, not promoted, and the reasons say why
    res = sftune.update("d", shifted, registry=models, out=tmp_path / "c2", epochs=1, min_gain=2)
    assert not res.decision.promote and res.decision.reasons
    assert registry.get("d", "champion").version == 2 and [v.version for v in registry.versions("d")] == [1, 2, 3]

    with pytest.raises(SftuneError, match="registry reference needs a registry"):
        sftune.update("d", shifted, out=tmp_path / "c3")
    with pytest.raises(SftuneError, match="decide_on"):
        sftune.drift(run.path, shifted, decide_on="everything")
