"""The reliability suite: every bad input, fault and untrusted file, with its exact outcome.

Each test that feeds sftune a bad input records what happened through the
``bad_input`` fixture; the end of the run prints the tally the issue asks for
(inputs tried, clear errors, handled/warned, crashes). A failing test counts
as a crash: an unexpected exception, a traceback, or an unclear message.
Set ``SFTUNE_RELIABILITY_TALLY=<file>`` to also get the tally as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from conftest import TINY_FLAGS, write_digits
from sftune.cli.main import cli

# What a bad input may lead to; anything else (a traceback, a hang, a wrong result) fails its test.
OUTCOMES = ("clear error", "skipped with warning", "warning", "handled")
_RECORDS: list[dict[str, str]] = []
_CRASHED: list[str] = []


@pytest.fixture
def bad_input(request):
    """``bad_input(what, outcome)``: call after asserting the outcome of one bad input."""
    mine: list[dict[str, str]] = []

    def record(what: str, outcome: str) -> None:
        assert outcome in OUTCOMES, outcome
        mine.append({"test": request.node.nodeid, "input": what, "outcome": outcome})

    yield record
    _RECORDS.extend(mine)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed and "bad_input" in getattr(item, "fixturenames", ()):
        _CRASHED.append(item.nodeid)


def pytest_terminal_summary(terminalreporter):
    if not _RECORDS and not _CRASHED:
        return
    counts = Counter(r["outcome"] for r in _RECORDS)
    tried = len(_RECORDS) + len(_CRASHED)
    line = (f"reliability: {tried} bad inputs tried: {counts['clear error']} clear error, "
            f"{counts['skipped with warning']} skipped with a warning, {counts['warning']} warned, "
            f"{counts['handled']} handled correctly, {len(_CRASHED)} crashed")
    terminalreporter.write_sep("-", line)
    if os.environ.get("SFTUNE_RELIABILITY_TALLY"):
        Path(os.environ["SFTUNE_RELIABILITY_TALLY"]).write_text(
            json.dumps({"records": _RECORDS, "crashed": _CRASHED, "summary": line}, indent=1))


# ----------------------------------------------------------------------------- running


def cli_run(*args: object) -> Result:
    """``sftune <args>`` in this process (click's runner; stderr kept apart)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clear_error(result: Result, *needles: str) -> str:
    """Exit status 2, the last output line ``error: ...`` holding every needle, no traceback."""
    out = result.output
    assert "Traceback" not in out, out
    assert result.exit_code == 2, (result.exit_code, repr(result.exception), out[-2000:])
    line = [ln for ln in out.splitlines() if ln.strip()][-1]
    assert line.startswith("error: "), out[-2000:]
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def train_args(data: Path, out: Path, *extra: object) -> list[object]:
    return ["train", "--data", data, "--out", out, *TINY_FLAGS, "--epochs", "1", *extra]


def sftune_subprocess(*args: object, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """``python -m sftune <args>`` in a fresh process: one thread, offline, deterministic hashing."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "PYTHONHASHSEED": "0", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "sftune", *map(str, args)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


# ------------------------------------------------------------------------------- data


def good_images(root: Path, per_class: int = 6, classes: tuple[int, ...] = (0, 1, 2)) -> Path:
    """Real UCI digits, root/<digit>/<n>.png."""
    return write_digits(root, classes=classes, per_class=per_class)


def save_png(path: Path, size: tuple[int, int], value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path
