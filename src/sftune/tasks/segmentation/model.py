"""The segmentation network: a timm encoder's feature pyramid, an smp decoder, a 1x1 head.

``build_segmentation_model("deeplabv3plus", "efficientnet_lite0", num_classes=12)`` gives
smp's DeepLabV3+ on the ``tu-tf_efficientnet_lite0`` encoder with the offline ImageNet
weights. smp is always built with ``encoder_weights=None`` (its "imagenet" option
downloads); the weights come from :func:`sftune.backbones.create_backbone`, so zoo,
``timm:`` and ``file:`` names resolve, load and fail exactly as they do for
classification, and are then copied into the encoder by timm key name.

Strategies reach the network only through explicit methods: ``net.encoder.layer_groups()``
(the full timm model's ``group_matcher`` applied to the encoder's parameters: smp's
``features_only`` encoder has no matcher of its own) and ``net.head_parameters()``.

Any input size works: :meth:`SegmentationNet.forward` pads bottom/right with zeros to the
multiple smp checks for (32, or 16 for DeepLabV3+ at output stride 16; Unet needs none)
and crops the logits back, instead of smp's "divisible by 32" error (smp #617).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import SftuneError

__all__ = [
    "DECODERS",
    "PyramidEncoder",
    "SegmentationNet",
    "build_segmentation_model",
    "rebuild_segmentation_model",
]

# Decoder name -> (smp class, the smp arguments we pin). Pinned rather than left to smp's
# defaults so a bundle rebuilt under a later smp gets the same layers (or fails loudly).
DECODERS: dict[str, tuple[str, dict[str, Any]]] = {
    # Output stride 16 (dilated last stage), ASPP rates for OS 16 as in the DeepLabV3+ paper.
    "deeplabv3plus": ("DeepLabV3Plus", {"encoder_depth": 5, "encoder_output_stride": 16, "decoder_channels": 256,
                                        "decoder_atrous_rates": (12, 24, 36)}),
    "unet": ("Unet", {"encoder_depth": 5, "decoder_channels": (256, 128, 64, 32, 16)}),
    "fpn": ("FPN", {"encoder_depth": 5, "decoder_pyramid_channels": 256, "decoder_segmentation_channels": 128}),
}

_BODY_PREFIX = "body.model."  # PyramidEncoder param name = _BODY_PREFIX + timm features-module name


class PyramidEncoder(nn.Module):
    """smp's TimmUniversalEncoder with the contract strategies and tasks need.

    ``forward(images (B, 3, H, W))`` -> ``[images, 1/2, 1/4, 1/8, 1/16, 1/32]`` feature maps
    (the deepest is 1/16, dilated, at output stride 16; transformer-style encoders have a
    0-channel 1/2 map). ``out_channels`` lists their channels.
    """

    def __init__(self, body: nn.Module, arch: str, source: str) -> None:
        super().__init__()
        self.body = body  # smp TimmUniversalEncoder; body.model is timm's features_only network
        self.arch = arch  # timm architecture, enough to rebuild without weights
        self.source = source  # what the user asked for: "efficientnet_lite0", "timm:x", "file:..."
        self.out_channels: list[int] = list(body.out_channels)
        self.num_features: int = self.out_channels[-1]  # channels of the deepest map = pooled() width
        self.output_stride: int = int(body.output_stride)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.body(images)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Global average of the deepest feature map: (B, 3, H, W) -> (B, num_features)."""
        return self.body(images)[-1].mean(dim=(2, 3))

    def timm_names(self) -> dict[str, str]:
        """This module's parameter and buffer names -> the full timm model's names.

        timm's feature wrappers keep the full model's names, except that flattened
        sequentials join with '_' (convnext: ``stem.0`` -> ``stem_0``, ``stages.1`` -> ``stages_1``).
        LoRA adapters (peft) have no timm counterpart and are left out; a wrapped layer's
        ``x.base_layer.weight`` maps to timm's ``x.weight``.
        """
        return {own: self._timm_name(_inner(own).replace(".base_layer.", "."))
                for own in self.state_dict() if ".lora_" not in own}

    def _timm_name(self, inner: str) -> str:
        """A name inside timm's features network (no adapters) -> the full model's name."""
        full, by_flat = _full_model_info(self.arch)[:2]
        mapped = inner if inner in full else by_flat.get(inner.replace(".", "_"))
        if mapped is None and inner.startswith("model."):  # FeatureGetterNet keeps the model as .model
            mapped = inner[len("model."):] if inner[len("model."):] in full else None
        if mapped is None:
            raise SftuneError(f"encoder '{self.arch}': tensor '{inner}' has no counterpart in timm's full model")
        return mapped

    def layer_groups(self) -> list[list[str]]:
        """Parameter names of this module grouped by depth, input side first.

        The full timm model's ``group_matcher(coarse=False)`` applied to the encoder's
        parameters under their full-model names (stem, then each block); a LoRA adapter goes
        with the layer it adapts; names the matcher does not know fall into the last group,
        as in timm.
        """
        from timm.models._manipulate import group_with_matcher  # group_parameters minus the module

        matcher = _full_model_info(self.arch)[2]
        own_names = [n for n, _ in self.named_parameters()]
        if matcher is None:
            return [own_names]

        def timm_name(own: str) -> str:
            inner = _inner(own)
            if ".lora_" in inner:  # x.lora_A.default.weight -> the adapted layer x's weight
                inner = inner.split(".lora_")[0] + ".weight"
            return self._timm_name(inner.replace(".base_layer.", "."))

        groups = group_with_matcher(((timm_name(n), n) for n in own_names), matcher, return_values=True)
        return [names for _, names in sorted(groups.items()) if names]

    def data_config(self, image_size: int | None = None) -> dict[str, Any]:
        """Preprocessing from the arch's pretrained cfg: input_size, mean, std, interpolation, crop_pct."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=self.body.model)
        if image_size is not None:
            cfg["input_size"] = (3, image_size, image_size)
        return cfg

    def weights(self) -> dict[str, torch.Tensor]:
        """The encoder's state dict under the full timm model's key names (readable without
        sftune or smp; loads into ``timm.create_model(arch)`` with strict=False); LoRA merged."""
        from ...adapters import plain_state_dict

        return {self._timm_name(k): v for k, v in plain_state_dict(self.body.model).items()}

    def load_weights(self, state: dict[str, torch.Tensor], origin: str) -> None:
        """Load tensors keyed by the full timm model's names; extras (the classifier,
        conv_head, ...) are ignored, a missing or misshapen encoder tensor is an error."""
        own = self.state_dict()
        picked: dict[str, torch.Tensor] = {}
        for own_key, timm_key in self.timm_names().items():
            if timm_key not in state:
                raise SftuneError(f"{origin}: weights lack '{timm_key}' of encoder '{self.arch}'")
            if state[timm_key].shape != own[own_key].shape:
                raise SftuneError(f"{origin}: '{timm_key}' is {tuple(state[timm_key].shape)}, "
                                  f"encoder '{self.arch}' needs {tuple(own[own_key].shape)}")
            picked[own_key] = state[timm_key]
        self.load_state_dict(picked, strict=False)  # only LoRA adapters (if any) are not in `picked`


def _inner(own: str) -> str:
    return own[len(_BODY_PREFIX):] if own.startswith(_BODY_PREFIX) else own


@functools.lru_cache(maxsize=8)
def _full_model_info(arch: str) -> tuple[frozenset[str], dict[str, str], Any]:
    """State-dict names, the same names keyed with '.' -> '_' (empty if that is ambiguous), and
    ``group_matcher(coarse=False)`` of the full timm model (built on the meta device: no memory)."""
    import timm

    try:
        with torch.device("meta"):
            full = timm.create_model(arch, pretrained=False)
    except Exception:  # a model whose __init__ does real tensor work: build it for real once
        full = timm.create_model(arch, pretrained=False)
    names = frozenset(full.state_dict())
    by_flat = {k.replace(".", "_"): k for k in names}
    if len(by_flat) != len(names):  # two timm names flatten alike: only exact names are safe
        by_flat = {}
    matcher = full.group_matcher(coarse=False) if hasattr(full, "group_matcher") else None
    return names, by_flat, matcher


class SegmentationNet(nn.Module):
    """images (B, 3, H, W) -> logits (B, num_classes, H, W), for any H, W.

    ``encode`` (pads, runs the encoder) and ``decode`` (decoder + head, crops) are split so
    a frozen encoder can run under ``torch.no_grad()``. The state dict's ``encoder.*`` keys
    are the encoder, ``decoder.*`` and ``segmentation_head.*`` the head.
    """

    def __init__(self, encoder: PyramidEncoder, decoder: nn.Module, segmentation_head: nn.Module, *,
                 decoder_name: str, num_classes: int, pad_to: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.segmentation_head = segmentation_head
        self.decoder_name = decoder_name
        self.num_classes = num_classes
        self.pad_to = pad_to  # H and W are padded up to a multiple of this (1: any size works)

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything that is not the encoder: decoder and segmentation head."""
        return [*self.decoder.parameters(), *self.segmentation_head.parameters()]

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the encoder's feature maps of the image zero-padded bottom/right to
        a multiple of ``pad_to``. Zero is the mean colour once images are normalized."""
        h, w = images.shape[-2:]
        pad_h, pad_w = -h % self.pad_to, -w % self.pad_to
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        return self.encoder(images)

    def decode(self, features: list[torch.Tensor], size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Features from :meth:`encode` -> logits (B, num_classes, *size), the padding cropped off."""
        logits = self.segmentation_head(self.decoder(features))  # (B, K, H_padded, W_padded)
        return logits[..., : size[0], : size[1]]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), images.shape[-2:])

    def config(self) -> dict[str, Any]:
        """Enough to rebuild the architecture (no weights): see :func:`rebuild_segmentation_model`."""
        return {"decoder": self.decoder_name, "arch": self.encoder.arch, "num_classes": self.num_classes,
                "encoder": self.encoder.source}


def build_segmentation_model(decoder: str, encoder: str, num_classes: int, pretrained: bool = True,
                             arch: str | None = None) -> SegmentationNet:
    """A segmentation network on a named encoder.

    ``encoder``: an offline zoo name (``efficientnet_lite0/1/2``: packaged ImageNet weights),
    ``timm:<name>`` (pretrained weights from the HF hub; none fetched with pretrained=False) or
    ``file:<path>`` (a state dict, with ``arch`` naming its timm architecture, or a bundle).
    ``decoder``: one of :data:`DECODERS`. Only the encoder gets pretrained weights; the decoder
    and head start from smp's initialisation.
    """
    from ...backbones import ZOO, _check_timm_name, _unknown_name_message, create_backbone

    _check_decoder(decoder)
    if num_classes < 1:
        raise SftuneError(f"a segmentation model needs at least one class, got num_classes={num_classes}")
    weights: dict[str, torch.Tensor] | None = None
    if pretrained or encoder.startswith("file:"):  # file: always means its weights, as for classification
        backbone = create_backbone(encoder, pretrained=True, arch=arch)  # resolution, download, errors
        timm_arch, origin = backbone.arch, encoder
        weights = backbone.weights()
        del backbone
    elif encoder.startswith("timm:"):
        timm_arch = encoder[len("timm:"):]
        _check_timm_name(timm_arch)
    elif encoder in ZOO:
        timm_arch = ZOO.get(encoder).arch
    else:
        raise SftuneError(_unknown_name_message(encoder))
    net = _build(decoder, timm_arch, encoder, num_classes)
    if weights is not None:
        net.encoder.load_weights(weights, origin=origin)
    return net


def rebuild_segmentation_model(config: dict[str, Any]) -> SegmentationNet:
    """The architecture described by :meth:`SegmentationNet.config`, randomly initialised
    (nothing downloaded); load the bundle's state dict into it."""
    try:
        decoder, arch, num_classes = config["decoder"], config["arch"], int(config["num_classes"])
    except KeyError as e:
        raise SftuneError(f"segmentation model config lacks {e}; it needs decoder, arch and num_classes") from None
    from ...backbones import _check_timm_name

    _check_decoder(decoder)
    _check_timm_name(arch)
    return _build(decoder, arch, config.get("encoder", f"timm:{arch}"), num_classes)


def _check_decoder(decoder: str) -> None:
    from ...errors import did_you_mean

    if decoder not in DECODERS:
        raise SftuneError(f"unknown segmentation decoder '{decoder}'{did_you_mean(decoder, list(DECODERS))}; "
                          f"choose one of: {', '.join(DECODERS)}")


def _build(decoder: str, timm_arch: str, source: str, num_classes: int) -> SegmentationNet:
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:
        raise SftuneError(f"segmentation needs segmentation-models-pytorch: pip install 'segmentation-models-pytorch>=0.5' "
                          f"({e})") from None
    cls_name, kwargs = DECODERS[decoder]
    try:
        # encoder_weights=None: smp never downloads; our weights are loaded afterwards by key.
        model = getattr(smp, cls_name)(encoder_name=f"tu-{timm_arch}", encoder_weights=None, classes=num_classes,
                                       **kwargs)
    except (ValueError, RuntimeError) as e:  # an arch smp cannot take apart (e.g. ViTs: one scale only)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SftuneError(f"timm architecture '{timm_arch}' cannot be the encoder of a {decoder} "
                          f"(segmentation_models_pytorch: {first}); try a CNN such as efficientnet_lite0") from None
    # smp's own check (SegmentationModel.check_input_shape): inputs divisible by the encoder's output
    # stride, min(output_stride, 2**depth) -- 16 for DeepLabV3+ here, 32 for FPN; Unet interpolates
    # to each skip's size and declares it needs nothing.
    pad_to = int(model.encoder.output_stride) if model.requires_divisible_input_shape else 1
    return SegmentationNet(PyramidEncoder(model.encoder, arch=timm_arch, source=source), model.decoder,
                           model.segmentation_head, decoder_name=decoder, num_classes=num_classes, pad_to=pad_to)
