"""Decode-once image cache for multi-epoch training on images."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

import sftune
from sftune.data import find_labeled_images, load_rgb
from sftune.data.decoded_cache import decoded_images

from conftest import TINY


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def photos(root, sizes):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / f"c{i % 2}" / f"{i}.png")
    return root


def test_images_are_shrunk_to_the_short_side_never_enlarged(tmp_path, private_cache):
    root = photos(tmp_path / "data", [(400, 300), (300, 600), (50, 40), (1000, 1000)])
    data = find_labeled_images(root)
    samples = data.train + data.val
    decoded, hit = decoded_images(samples, [data.digests[s.path] for s in samples], short_side=100, workers=2)
    assert not hit and len(decoded) == 4
    for i, s in enumerate(samples):
        original = load_rgb(s.path)
        image = decoded[i]
        assert image.mode == "RGB"
        if min(original.size) <= 100:
            assert image.size == original.size and np.array_equal(np.asarray(image), np.asarray(original))
        else:
            assert min(image.size) == 100
            assert abs(image.size[0] / image.size[1] - original.size[0] / original.size[1]) < 0.02


def test_reused_and_invalidated_by_content(tmp_path, private_cache):
    root = photos(tmp_path / "data", [(64, 64)] * 4)
    data = find_labeled_images(root)
    digests = [data.digests[s.path] for s in data.train]
    first, hit1 = decoded_images(data.train, digests, 48)
    second, hit2 = decoded_images(data.train, digests, 48)
    assert (hit1, hit2) == (False, True) and first.data_path == second.data_path
    _, hit3 = decoded_images(data.train, digests[:-1] + ["f" * 64], 48)
    _, hit4 = decoded_images(data.train, digests, 32)
    assert not hit3 and not hit4


def test_pickles_without_the_mapped_bytes(tmp_path, private_cache):
    root = photos(tmp_path / "data", [(64, 64)] * 4)
    data = find_labeled_images(root)
    decoded, _ = decoded_images(data.train, [data.digests[s.path] for s in data.train], 48)
    decoded[0]  # opens the memory map
    clone = pickle.loads(pickle.dumps(decoded))
    assert clone._map is None and np.array_equal(np.asarray(clone[1]), np.asarray(decoded[1]))


def test_full_fine_tune_reads_decoded_images(digits_split_dir, tmp_path, private_cache, capsys):
    kw = {k.replace(".", "__"): v for k, v in TINY.items()}
    on = sftune.finetune(data=digits_split_dir, out=tmp_path / "on", strategy="full", train__epochs=2, **kw)
    assert "training images decoded once" in capsys.readouterr().out
    assert list((private_cache / "decoded").glob("*.index.npy"))
    off = sftune.finetune(data=digits_split_dir, out=tmp_path / "off", strategy="full", train__epochs=2,
                          data__decode_cache=False, **kw)
    assert "decoded once" not in capsys.readouterr().out
    # 8x8 digits are never shrunk, so both paths feed identical pixels: identical runs.
    assert on.metrics["acc"] == off.metrics["acc"] and on.metrics["loss"] == pytest.approx(off.metrics["loss"], rel=1e-5)
