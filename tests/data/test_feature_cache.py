"""The on-disk feature cache: computed once, reused, invalidated by any change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import timm
import torch

import sftune
from sftune.backbones import Backbone
from sftune.config import DataConfig
from sftune.data import build_transforms, find_labeled_images
from sftune.data.feature_cache import cache_root, cached_features, extract_features, weights_hash

from conftest import TINY


def tiny_backbone(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return Backbone(timm.create_model("test_efficientnet", pretrained=False), "test_efficientnet", "test")


def entries() -> set[Path]:
    return set((cache_root() / "features").rglob("*.safetensors"))


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def setup(root: Path, backbone: Backbone):
    data = find_labeled_images(root)
    train_tf, eval_tf = build_transforms(backbone.data_config(32), DataConfig(image_size=32))
    return data, train_tf, eval_tf


def test_features_equal_a_plain_forward_pass(digits_dir, private_cache):
    backbone = tiny_backbone()
    data, _, eval_tf = setup(digits_dir, backbone)
    digests = [data.digests[s.path] for s in data.val]
    features, hit = cached_features(backbone, weights_hash(backbone), data.val, digests, eval_tf, 8, 0, torch.device("cpu"))
    assert not hit and features.shape == (len(data.val), backbone.num_features)
    from sftune.data import load_rgb

    with torch.inference_mode():
        direct = backbone.eval()(torch.stack([eval_tf(load_rgb(s.path)) for s in data.val]))
    assert torch.allclose(features, direct, atol=1e-4)

    again, hit = cached_features(backbone, weights_hash(backbone), data.val, digests, eval_tf, 8, 0, torch.device("cpu"))
    assert hit and torch.equal(again, features)


def test_any_change_gives_a_new_entry(digits_dir, private_cache):
    backbone = tiny_backbone()
    data, train_tf, eval_tf = setup(digits_dir, backbone)
    digests = [data.digests[s.path] for s in data.train]

    def run(bb=backbone, transform=eval_tf, dig=digests, **kw):
        return cached_features(bb, weights_hash(bb), data.train, dig, transform, 16, 0, torch.device("cpu"), **kw)[1]

    assert run() is False and run() is True
    n = len(entries())
    assert run(bb=tiny_backbone(seed=1)) is False  # other weights
    other_tf = build_transforms(backbone.data_config(48), DataConfig(image_size=48))[1]
    assert run(transform=other_tf) is False  # other preprocessing (input size)
    assert run(dig=digests[:-1] + ["0" * 64]) is False  # one file's content changed
    assert run(precision="bf16") is False
    assert run(transform=train_tf, views=2) is False and run(transform=train_tf, views=2) is True
    assert len(entries()) == n + 5


def test_augmented_views_are_seeded(digits_dir, private_cache):
    backbone = tiny_backbone()
    data, train_tf, _ = setup(digits_dir, backbone)
    digests = [data.digests[s.path] for s in data.val]
    a = cached_features(backbone, "h", data.val, digests, train_tf, 8, 0, torch.device("cpu"), views=2, seed=3)[0]
    shutil.rmtree(private_cache)
    b = cached_features(backbone, "h", data.val, digests, train_tf, 8, 0, torch.device("cpu"), views=2, seed=3)[0]
    assert a.shape == (2 * len(data.val), backbone.num_features) and torch.equal(a, b)
    assert not torch.equal(a[: len(data.val)], a[len(data.val):]), "two views must differ"


def test_unreadable_entry_is_recomputed(digits_dir, private_cache):
    backbone = tiny_backbone()
    data, _, eval_tf = setup(digits_dir, backbone)
    digests = [data.digests[s.path] for s in data.val]
    first, _ = cached_features(backbone, "h", data.val, digests, eval_tf, 8, 0, torch.device("cpu"))
    (entry,) = entries()
    entry.write_bytes(b"garbage")
    again, hit = cached_features(backbone, "h", data.val, digests, eval_tf, 8, 0, torch.device("cpu"))
    assert not hit and torch.allclose(again, first)


def test_linear_probe_trains_on_cached_features_and_reuses_them(digits_split_dir, tmp_path, private_cache, capsys):
    kw = {k.replace(".", "__"): v for k, v in TINY.items()}
    first = sftune.finetune(data=digits_split_dir, out=tmp_path / "a", train__epochs=3, **kw)
    assert "frozen backbone run once over 120 images" in capsys.readouterr().out
    n = len(entries())
    assert n == 2  # train and val
    second = sftune.finetune(data=digits_split_dir, out=tmp_path / "b", train__epochs=3, **kw)
    assert "all from the cache" in capsys.readouterr().out and len(entries()) == n
    assert second.metrics["acc"] == first.metrics["acc"] and second.metrics["loss"] == pytest.approx(first.metrics["loss"])

    # Without the cache the head sees the same (eval-transform) features through the image path:
    # training differs only in augmentation, so just check it runs and the bundle format is the same.
    uncached = sftune.finetune(data=digits_split_dir, out=tmp_path / "c", train__epochs=1,
                               data__feature_cache=False, **kw)
    assert "frozen backbone run once" not in capsys.readouterr().out
    # Without cached features the head trains with the optimizer (its bundle keeps checkpoints/ to continue from).
    assert {p.name for p in uncached.path.iterdir()} - {"checkpoints"} == {p.name for p in first.path.iterdir()}


def test_strategies_that_train_the_backbone_never_use_the_cache(digits_split_dir, tmp_path, private_cache, capsys):
    kw = {k.replace(".", "__"): v for k, v in TINY.items()}
    sftune.finetune(data=digits_split_dir, out=tmp_path / "fu", strategy="freeze_unfreeze", train__epochs=2,
                    strategy__unfreeze_epoch=1, **kw)
    assert "frozen backbone run once" not in capsys.readouterr().out and not entries()


def test_eval_and_predict_of_a_linear_probe_reuse_the_training_features(digits_split_dir, tmp_path, private_cache,
                                                                          monkeypatch):
    kw = {k.replace(".", "__"): v for k, v in TINY.items()}
    run = sftune.finetune(data=digits_split_dir, out=tmp_path / "lp", train__epochs=3, **kw)

    cold = sftune.load(run.path)
    monkeypatch.setenv("SFTUNE_CACHE", str(tmp_path / "empty-cache"))
    reference = cold.evaluate(digits_split_dir / "val")  # no cache: runs the backbone
    monkeypatch.setenv("SFTUNE_CACHE", str(private_cache))

    warm = sftune.load(run.path)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although its features were cached")

    monkeypatch.setattr(warm.model, "forward", no_backbone)
    cached = warm.evaluate(digits_split_dir / "val")
    assert cached["acc"] == pytest.approx(reference["acc"], abs=1e-6) == pytest.approx(run.metrics["acc"], abs=1e-6)
    # The L-BFGS head's weights are large where L2 is weak, so feature rounding (batching, bf16 kernels)
    # moves the log loss by up to about a percent while no prediction changes.
    assert cached["loss"] == pytest.approx(reference["loss"], rel=2e-2)
    predictions = warm.predict(digits_split_dir / "val")
    assert len(predictions) == 30
