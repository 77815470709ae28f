"""Shared fixtures: small real data (UCI digits from scikit-learn), tiny timm models, no network."""

from __future__ import annotations

import functools
import os
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm/HF must never try the hub from tests
os.environ.setdefault("PYTHONHASHSEED", "0")
# Feature caches of the tests go to a fresh folder, never the user's ~/.cache/sftune.
os.environ["SFTUNE_CACHE"] = tempfile.mkdtemp(prefix="sftune-test-cache-")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HYMENOPTERA = SHARED_DATA / "hymenoptera_data"

# Fast-suite settings: a tiny random timm EfficientNet at 32 px, no workers, no progress bar.
TINY = {
    "model.name": "timm:test_efficientnet",
    "model.pretrained": False,
    "data.image_size": 32,
    "data.num_workers": 0,
    "train.batch_size": 16,
    "trainer.progress_bar": False,
    "trainer.accelerator": "cpu",
}
TINY_FLAGS = [
    "--model", "timm:test_efficientnet", "--set", "model.pretrained=false", "--image-size", "32",
    "--workers", "0", "--batch-size", "16", "--no-progress", "--accelerator", "cpu",
]


_real_connect = socket.socket.connect


def _guarded_connect(self, address):  # pragma: no cover - only trips on a bug
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1", "") or host.startswith("/")):
        raise RuntimeError(f"test tried to reach the network: {address}")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect


def write_digits(root: Path, classes: tuple[int, ...] = (0, 1, 2), per_class: int = 30) -> Path:
    """Real UCI digits as PNGs: root/<digit>/<n>.png."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = {c: 0 for c in classes}
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        t = int(target)
        if t in counts and counts[t] < per_class:
            (root / str(t)).mkdir(parents=True, exist_ok=True)
            img = 255 - np.round(pixels * (255 / 16)).astype(np.uint8)
            Image.fromarray(img, mode="L").save(root / str(t) / f"{i:04d}.png")
            counts[t] += 1
    return root


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """A flat class folder: 3 digit classes x 30 images (read-only for tests: copy before changing)."""
    return write_digits(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture(scope="session")
def digits_split_dir(tmp_path_factory) -> Path:
    """train/<class>/ and val/<class>/ layout built from the digits."""
    import shutil

    src = write_digits(tmp_path_factory.mktemp("digits_src") / "all", per_class=40)
    root = tmp_path_factory.mktemp("digits_split") / "data"
    for class_dir in sorted(src.iterdir()):
        files = sorted(class_dir.iterdir())
        for split, chunk in (("train", files[:30]), ("val", files[30:])):
            (root / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            for f in chunk:
                shutil.copy(f, root / split / class_dir.name / f.name)
    return root


def needs_hymenoptera():
    return pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"real ants/bees data not found at {HYMENOPTERA}")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: a tiny model gains nothing from two, and two spin-waiting OpenMP threads
    slow its runs ~10x when another process shares the 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory) -> Path:
    """3 digit classes x 12 images: 30 train (2 steps of 16 per epoch) / 6 val, for runs that go several times."""
    return write_digits(tmp_path_factory.mktemp("small") / "digits", per_class=12)


def tiny_run(data: Path, out: Path, **overrides):
    """sftune.finetune with the TINY settings (overrides use __ for dots)."""
    import sftune

    kw = {k.replace(".", "__"): v for k, v in TINY.items()}
    kw.update(overrides)
    return sftune.finetune(data=data, out=out, **kw)


def with_callbacks(monkeypatch, *callbacks) -> None:
    """Every Trainer the engine builds from now on also runs ``callbacks``."""
    import lightning.pytorch as pl_mod

    original = pl_mod.Trainer.__init__

    def patched(self, *args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), *callbacks]
        original(self, *args, **kwargs)

    monkeypatch.setattr(pl_mod.Trainer, "__init__", patched)


@functools.lru_cache(maxsize=1)
def shipped_schema() -> dict:
    """The published JSON Schema of every report.json layout (sftune/eval/report.schema.json, package data)."""
    import json
    from importlib import resources

    return json.loads((resources.files("sftune.eval") / "report.schema.json").read_text())


def branch_schema(name: str) -> dict:
    """The shipped schema with ``$defs/name`` in place of its oneOf: one layout alone."""
    return {**{k: v for k, v in shipped_schema().items() if k != "oneOf"}, "$ref": f"#/$defs/{name}"}


def validate_report(report: dict, branch: str | None = None) -> None:
    """The written JSON (NaN -> null) against the shipped schema: its own ``branch`` first when
    given (readable errors), then the whole schema (its oneOf: exactly one layout must match)."""
    import jsonschema

    from sftune.eval.report import finite

    if branch is not None:
        jsonschema.validate(finite(report), branch_schema(branch))
    jsonschema.validate(finite(report), shipped_schema())
