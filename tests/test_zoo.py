"""The offline zoo: packaged ImageNet weights map onto timm and still classify real photos."""

from __future__ import annotations

import pytest
import torch

from sftune.backbones import ZOO, create_backbone, create_imagenet_model
from sftune.data import load_rgb
from sftune.errors import SftuneError

from conftest import HYMENOPTERA, needs_hymenoptera

IMAGENET_ANT, IMAGENET_BEE = 310, 309  # ImageNet-1k class indices of "ant" and "bee"


def test_zoo_lists_the_efficientnet_lites():
    assert ZOO.list() == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert ZOO.get("efficientnet_lite0").arch == "tf_efficientnet_lite0"


@needs_hymenoptera()
def test_imagenet_head_recognises_bees_and_ants_after_mapping():
    """The mapped weights keep their ImageNet meaning: bee photos -> 'bee', ant photos -> 'ant'."""
    from timm.data import create_transform, resolve_data_config

    model = create_imagenet_model("efficientnet_lite0")
    transform = create_transform(**resolve_data_config({}, model=model))
    bees = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[:16]
    ants = sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[:16]
    with torch.inference_mode():
        bee_top = model(torch.stack([transform(load_rgb(p)) for p in bees])).argmax(-1)
        ant_top = model(torch.stack([transform(load_rgb(p)) for p in ants])).argmax(-1)
    # Measured: tf_efficientnet_lite0 + these weights names the right insect for ~80% of them;
    # random or wrongly mapped weights give ~0%.
    assert (bee_top == IMAGENET_BEE).float().mean() >= 0.6
    assert (ant_top == IMAGENET_ANT).float().mean() >= 0.5


def test_random_init_has_no_imagenet_knowledge_but_same_shapes():
    pretrained = create_backbone("efficientnet_lite0", pretrained=True)
    random_init = create_backbone("efficientnet_lite0", pretrained=False)
    a, b = pretrained.weights(), random_init.weights()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert not torch.equal(a["conv_stem.weight"], b["conv_stem.weight"])
    assert pretrained.num_features == 1280
    cfg = pretrained.data_config()
    assert cfg["input_size"] == (3, 224, 224) and cfg["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lites_load(name):
    backbone = create_backbone(name)
    with torch.inference_mode():
        features = backbone.eval()(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, backbone.num_features)


def test_layer_groups_cover_the_backbone_input_first():
    backbone = create_backbone("efficientnet_lite0", pretrained=False)
    groups = backbone.layer_groups()
    names = [n for g in groups for n in g]
    assert sorted(names) == sorted(n for n, _ in backbone.model.named_parameters())
    assert groups[0][0].startswith("conv_stem") and any(n.startswith("conv_head") for n in groups[-1])


def test_unknown_names_say_what_exists():
    with pytest.raises(SftuneError, match="did you mean 'efficientnet_lite0'.*timm:<name>"):
        create_backbone("efficientnet_lit0")
    with pytest.raises(SftuneError, match="timm has no architecture"):
        create_backbone("timm:not_a_model_at_all")
