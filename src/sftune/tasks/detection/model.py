"""The detection network: a timm encoder's feature maps, an FPN, and a torchvision detector.

``build_detector("faster_rcnn", "efficientnet_lite0", num_classes=3)`` is the peer recipe
(../shared/bench/det_peer.py): torchvision's FasterRCNN over a FeaturePyramidNetwork (+ a
max-pool level) on the encoder's maps at strides 8/16/32, RoIAlign on the three encoder
levels, the offline ImageNet weights in the encoder. ``"retinanet"`` and ``"fcos"`` put
torchvision's one-stage heads on the same pyramid (strides 8/16/32/64).

What is whose (strategies reach the network only through these):

* ``net.encoder`` (:class:`DetectionEncoder`): the timm ``features_only`` network, i.e. the
  *backbone* that strategies freeze, unfreeze and decay layer by layer.
  ``encoder.layer_groups()`` applies the full timm model's ``group_matcher`` to the encoder's
  parameters (timm's feature wrappers have none: segmentation's :class:`PyramidEncoder` does the
  mapping, this class inherits it); ``weights()``/``load_weights()`` speak the full timm model's
  key names; ``data_config()`` gives mean/std.
* ``net.head_parameters()``: everything else -- the FPN, the RPN and the RoI heads (or the
  one-stage heads). The FPN is new for this task, so it belongs to the head: a frozen backbone
  still trains its FPN, and LLRD gives it the head's learning rate.
* State dict: ``encoder.*`` (the backbone) and ``detector.*`` (the head). The torchvision
  detector's ``backbone`` (:class:`FeaturePyramidBackbone`) refers to the encoder without
  registering it, so no tensor is listed twice (safetensors refuses shared tensors).

Conventions at the boundary (the data pipeline's, kept by :meth:`DetectionNet.forward`):

* images: a list of float (3, H, W) tensors in [0, 1], *not* normalized -- torchvision's
  ``GeneralizedRCNNTransform`` inside the detector normalizes with the encoder's mean/std,
  resizes (shorter side to ``min_size``, longer at most ``max_size``) and pads to a multiple of
  32; predicted boxes come back in the input images' pixels.
* targets: ``{"boxes": (N, 4) float xyxy pixels, "labels": (N,) int64 0-based class indices}``;
  N may be 0 (a negative image). Faster R-CNN reserves class 0 for background, so its labels
  are shifted by +1 on the way in and -1 on the way out (``label_offset`` 1); torchvision's
  RetinaNet and FCOS score ``num_classes`` sigmoid outputs and take the labels as they are
  (``label_offset`` 0). Callers always see 0-based labels.

BatchNorm: torchvision's builders swap a pretrained backbone's BN for FrozenBatchNorm2d (batch 2
is too small for statistics). Here nothing is swapped -- the timm layers, their names and their
affine parameters stay as they are (bitfit, LoRA and ``weights()`` see plain timm modules) --
but an encoder with ``freeze_bn_stats`` keeps every BN layer in eval mode when put in training
mode: running statistics stay the pretrained ones, the affine parameters train when the strategy
trains them. TaskModule.train()'s rule (a frozen backbone runs in eval mode) comes on top.
Default: frozen statistics when pretrained weights were loaded, as in torchvision.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...errors import SftuneError
from ..segmentation.model import PyramidEncoder
from .anchors import PYRAMID_STRIDES, default_anchors

__all__ = [
    "DETECTORS",
    "DetectionEncoder",
    "DetectionNet",
    "FeaturePyramidBackbone",
    "build_detector",
    "build_encoder",
    "rebuild_detector",
]

# detector name -> label offset (1: class 0 is the background of Faster R-CNN's softmax).
DETECTORS: dict[str, int] = {"faster_rcnn": 1, "retinanet": 0, "fcos": 0}
ENCODER_STRIDES: tuple[int, ...] = PYRAMID_STRIDES[:3]  # the encoder maps the FPN takes; it adds a max-pool level


class _TimmFeatures(nn.Module):
    """timm's ``features_only`` network as the body PyramidEncoder expects (``.model``,
    ``out_channels``, ``output_stride``): images -> [maps at strides 8, 16, 32]."""

    def __init__(self, model: nn.Module, strides: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.out_channels: list[int] = [int(c) for c in model.feature_info.channels()]
        self.output_stride = int(strides[-1])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model(images)


class DetectionEncoder(PyramidEncoder):
    """The timm feature extractor: images (B, 3, H, W), normalized -> [maps at strides 8, 16, 32].

    Inherits the contract of segmentation's :class:`PyramidEncoder` (``layer_groups()``,
    ``timm_names()``, ``weights()``, ``load_weights()``, ``data_config()``, ``pooled()``);
    parameter names read ``body.model.<timm features name>``. With ``freeze_bn_stats`` its BN
    layers stay in eval mode (running statistics frozen) whatever ``train()`` is asked.
    """

    def __init__(self, body: _TimmFeatures, arch: str, source: str, freeze_bn_stats: bool) -> None:
        super().__init__(body, arch=arch, source=source)
        self.strides: tuple[int, ...] = ENCODER_STRIDES
        self.freeze_bn_stats = bool(freeze_bn_stats)

    def train(self, mode: bool = True) -> "DetectionEncoder":
        super().train(mode)
        if mode and self.freeze_bn_stats:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


class FeaturePyramidBackbone(nn.Module):
    """What torchvision's ``BackboneWithFPN`` is, for a timm encoder: images (B, 3, H, W) ->
    ``OrderedDict`` of ``out_channels``-channel maps ``"0"``, ``"1"``, ``"2"`` (strides 8/16/32)
    and ``"pool"`` (stride 64, LastLevelMaxPool).

    ``encoder`` is the strategies' backbone, ``fpn`` is head. With ``own_encoder=False`` the
    encoder is referenced, not registered (its owner, :class:`DetectionNet`, registers it).
    When no encoder parameter requires a gradient, the encoder runs under ``torch.no_grad()``
    (a frozen backbone keeps no activations for backward).
    """

    def __init__(self, encoder: DetectionEncoder, out_channels: int = 256, *, own_encoder: bool = True) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        if own_encoder:
            self.encoder = encoder
        else:
            object.__setattr__(self, "encoder", encoder)  # plain attribute: not in parameters() / state_dict()
        self.fpn = FeaturePyramidNetwork(list(encoder.out_channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = int(out_channels)  # torchvision's detectors read this
        self.strides: tuple[int, ...] = (*encoder.strides, 2 * encoder.strides[-1])

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        if torch.is_grad_enabled() and not images.requires_grad and \
                not any(p.requires_grad for p in self.encoder.parameters()):
            with torch.no_grad():
                maps = self.encoder(images)
        else:
            maps = self.encoder(images)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))

    # The contract, delegated to the encoder (names relative to the encoder).
    def layer_groups(self) -> list[list[str]]:
        return self.encoder.layer_groups()

    def data_config(self, image_size: int | None = None) -> dict[str, Any]:
        return self.encoder.data_config(image_size)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.encoder.weights()

    def load_weights(self, state: dict[str, torch.Tensor], origin: str) -> None:
        self.encoder.load_weights(state, origin=origin)


class DetectionNet(nn.Module):
    """A torchvision detector on a timm encoder, with 0-based labels at both ends.

    ``forward(images, targets)`` in train mode -> dict of named losses (Faster R-CNN:
    ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``; RetinaNet:
    ``classification``, ``bbox_regression``; FCOS: those and ``bbox_ctrness``); in eval mode
    ``forward(images)`` -> one ``{"boxes" (K, 4) xyxy pixels, "scores" (K,), "labels" (K,) 0-based}``
    per image.
    """

    def __init__(self, encoder: DetectionEncoder, detector: nn.Module, *, detector_name: str, num_classes: int,
                 settings: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder  # state dict: encoder.*
        self.detector = detector  # state dict: detector.* (its backbone's encoder is a plain reference)
        self.detector_name = detector_name
        self.num_classes = int(num_classes)
        self.label_offset = DETECTORS[detector_name]
        self._settings = settings  # anchors, sizes, thresholds: what config() reports

    @property
    def backbone(self) -> FeaturePyramidBackbone:
        """The torchvision detector's backbone: encoder + FPN."""
        return self.detector.backbone

    @property
    def fpn(self) -> nn.Module:
        return self.detector.backbone.fpn

    @property
    def strides(self) -> tuple[int, ...]:
        return self.detector.backbone.strides

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything that is not the encoder: FPN + RPN + RoI heads, or FPN + one-stage head."""
        return list(self.detector.parameters())

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        images = list(images)
        if self.training:
            if targets is None:
                raise SftuneError("a detector in training mode needs targets (a boxes/labels dict per image); "
                                  "call .eval() to predict")
            return self.detector(images, self._model_targets(images, list(targets)))
        self._check_images(images)
        detections = self.detector(images)
        out = []
        for d, image in zip(detections, images):  # exactly inside the image (the resize back can overshoot by 1e-5)
            h, w = image.shape[-2:]
            boxes = torch.stack([d["boxes"][:, 0].clamp(0, w), d["boxes"][:, 1].clamp(0, h),
                                 d["boxes"][:, 2].clamp(0, w), d["boxes"][:, 3].clamp(0, h)], dim=1)
            out.append({"boxes": boxes, "scores": d["scores"], "labels": d["labels"] - self.label_offset})
        return out

    @torch.no_grad()
    def pooled(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Images as for forward -> (B, num_features): the deepest encoder map averaged, after
        the detector's own normalization and resize (drift statistics, replay); call it in eval
        mode, where BN layers that train do not update their statistics."""
        batch, _ = self.detector.transform(list(images))
        return self.encoder.pooled(batch.tensors)

    def config(self) -> dict[str, Any]:
        """Enough to rebuild the architecture (no weights): see :func:`rebuild_detector`."""
        return {"detector": self.detector_name, "arch": self.encoder.arch, "encoder": self.encoder.source,
                "num_classes": self.num_classes, "label_offset": self.label_offset, **self._settings}

    # ------------------------------------------------------------------ checks

    def _check_images(self, images: list[torch.Tensor]) -> None:
        for i, img in enumerate(images):
            if not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] != 3:
                shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
                raise SftuneError(f"detector input {i}: expected a (3, H, W) image tensor, got {shape}")
            if not img.is_floating_point():
                raise SftuneError(f"detector input {i}: expected float pixels in [0, 1], got {img.dtype} "
                                  f"(divide uint8 images by 255)")
        if images:  # 0-255 floats would be normalized into nonsense without a word: one device sync per batch
            peak = float(torch.stack([img.detach().amax() for img in images]).max())
            if peak > 2.0:
                raise SftuneError(f"detector inputs: pixel values up to {peak:g}; expected [0, 1] floats, not yet "
                                  f"normalized (divide 0-255 images by 255)")

    def _model_targets(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
                       ) -> list[dict[str, torch.Tensor]]:
        """Checked copies of the targets with the detector's label convention (inputs untouched)."""
        self._check_images(images)
        if len(targets) != len(images):
            raise SftuneError(f"detector: {len(images)} images but {len(targets)} targets")
        out, bad = [], []
        for i, t in enumerate(targets):
            boxes, labels = t.get("boxes"), t.get("labels")
            if not isinstance(boxes, torch.Tensor) or not isinstance(labels, torch.Tensor):
                raise SftuneError(f"detector target {i}: needs tensors 'boxes' (N, 4) and 'labels' (N,)")
            if boxes.numel() == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.ndim != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
                raise SftuneError(f"detector target {i}: boxes {tuple(boxes.shape)} and labels {tuple(labels.shape)}; "
                                  f"expected (N, 4) xyxy and (N,)")
            if labels.is_floating_point():
                raise SftuneError(f"detector target {i}: labels are {labels.dtype}; expected int64 class indices")
            boxes = boxes.to(images[i].dtype)
            labels = labels.to(torch.int64)
            bad.append(torch.stack([(labels < 0).any() | (labels >= self.num_classes).any(),
                                    ~torch.isfinite(boxes).all(),
                                    ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any()]))
            out.append({"boxes": boxes, "labels": labels + self.label_offset})
        if out and bool(torch.stack(bad).any()):  # one device sync per batch
            i, kind = next((i, k) for i, b in enumerate(bad) for k in range(3) if bool(b[k]))
            t = targets[i]
            if kind == 0:
                raise SftuneError(f"detector target {i}: labels {t['labels'].tolist()} outside "
                                  f"0..{self.num_classes - 1} (0-based class indices of {self.num_classes} classes)")
            if kind == 1:
                raise SftuneError(f"detector target {i}: a box coordinate is not finite")
            b = t["boxes"].reshape(-1, 4)
            j = int(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).nonzero()[0])
            raise SftuneError(f"detector target {i}: box {j} {[round(float(v), 2) for v in b[j]]} has no area; "
                              f"boxes are xyxy pixels with x2 > x1 and y2 > y1 (xywh given by mistake?)")
        return out


# --------------------------------------------------------------------------- building


def build_encoder(encoder: str, pretrained: bool = True, arch: str | None = None,
                  freeze_bn_stats: bool | None = None) -> DetectionEncoder:
    """The timm feature extractor of a named encoder, with its weights.

    ``encoder``: an offline zoo name (``efficientnet_lite0/1/2``: packaged ImageNet weights),
    ``timm:<name>`` (pretrained weights from the HF hub, one-line error offline; nothing fetched
    with ``pretrained=False``) or ``file:<path>`` (always its weights; ``arch`` names the timm
    architecture of a bare state dict). ``freeze_bn_stats`` defaults to whether weights were loaded.
    """
    from ...backbones import ZOO, _check_timm_name, _unknown_name_message, create_backbone

    weights: dict[str, torch.Tensor] | None = None
    if pretrained or encoder.startswith("file:"):
        backbone = create_backbone(encoder, pretrained=True, arch=arch)  # resolution, download, errors
        timm_arch = backbone.arch
        weights = backbone.weights()
        del backbone
    elif encoder.startswith("timm:"):
        timm_arch = encoder[len("timm:"):]
        _check_timm_name(timm_arch)
    elif encoder in ZOO:
        timm_arch = ZOO.get(encoder).arch
    else:
        raise SftuneError(_unknown_name_message(encoder))
    enc = _build_encoder(timm_arch, encoder, weights is not None if freeze_bn_stats is None else freeze_bn_stats)
    if weights is not None:
        enc.load_weights(weights, origin=encoder)
    return enc


def build_detector(detector: str, encoder: str, num_classes: int, pretrained: bool = True, arch: str | None = None,
                   anchor_sizes: Any = None, aspect_ratios: Any = None, min_size: int = 480, max_size: int = 640,
                   out_channels: int = 256, score_thresh: float | None = None, detections_per_img: int = 100,
                   freeze_bn_stats: bool | None = None, options: dict[str, Any] | None = None) -> DetectionNet:
    """A detector on a named encoder; only the encoder gets pretrained weights.

    ``detector``: ``faster_rcnn`` | ``retinanet`` | ``fcos``. ``num_classes``: object classes,
    without background. ``anchor_sizes``: one tuple of sizes per pyramid level (strides
    8/16/32/64; e.g. from :func:`~sftune.tasks.detection.anchors.anchors_from_boxes`), the same
    count on every level; ``aspect_ratios``: h/w ratios shared by all levels. Defaults: the peer's
    (32/64/128/256 px, 0.5/1/2) for Faster R-CNN, torchvision's three octave scales per level for
    RetinaNet; FCOS is anchor-free (its per-level size ranges follow the strides) and takes neither.
    ``min_size``/``max_size``: the detector's resize (default 480/640 keeps 640x480 images as they
    are, as the peer does). ``score_thresh``: None = torchvision's (0.05; FCOS 0.2).
    ``options``: further keyword arguments of torchvision's FasterRCNN/RetinaNet/FCOS (plain values,
    e.g. ``{"box_batch_size_per_image": 256}``).
    """
    enc = build_encoder(encoder, pretrained=pretrained, arch=arch, freeze_bn_stats=freeze_bn_stats)
    return _assemble(detector, enc, num_classes, anchor_sizes, aspect_ratios, min_size, max_size, out_channels,
                     score_thresh, detections_per_img, options)


def rebuild_detector(config: dict[str, Any]) -> DetectionNet:
    """The architecture described by :meth:`DetectionNet.config`, randomly initialised (nothing
    downloaded, nothing loaded); load the bundle's state dict into it."""
    from ...backbones import _check_timm_name

    try:
        detector, timm_arch, num_classes = config["detector"], config["arch"], int(config["num_classes"])
    except KeyError as e:
        raise SftuneError(f"detection model config lacks {e}; it needs detector, arch and num_classes") from None
    _check_timm_name(timm_arch)
    source = config.get("encoder", f"timm:{timm_arch}")
    enc = _build_encoder(timm_arch, source, bool(config.get("freeze_bn_stats", True)))
    anchored = detector != "fcos"  # fcos reports its stride-sized points but takes no anchors
    return _assemble(detector, enc, num_classes, config.get("anchor_sizes") if anchored else None,
                     config.get("aspect_ratios") if anchored else None,
                     int(config.get("min_size", 480)), int(config.get("max_size", 640)),
                     int(config.get("out_channels", 256)), config.get("score_thresh"),
                     int(config.get("detections_per_img", 100)), config.get("options"))


@functools.lru_cache(maxsize=16)
def _out_indices(timm_arch: str) -> tuple[int, ...]:
    """Indices of timm's feature maps at strides 8, 16 and 32 (the last map of each stride)."""
    import timm

    try:
        with torch.device("meta"):
            probe = timm.create_model(timm_arch, pretrained=False, features_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SftuneError(f"timm architecture '{timm_arch}' has no feature pyramid for detection "
                          f"(timm features_only: {first}); try a CNN such as efficientnet_lite0") from None
    reductions = [int(r) for r in probe.feature_info.reduction()]
    picked = []
    for stride in ENCODER_STRIDES:
        at = [i for i, r in enumerate(reductions) if r == stride]
        if not at:
            raise SftuneError(f"timm architecture '{timm_arch}' gives feature maps at strides "
                              f"{'/'.join(map(str, reductions))}; detection needs strides 8, 16 and 32 "
                              f"(try a CNN such as efficientnet_lite0 or resnet50)")
        picked.append(at[-1])
    return tuple(picked)


def _build_encoder(timm_arch: str, source: str, freeze_bn_stats: bool) -> DetectionEncoder:
    import timm

    model = timm.create_model(timm_arch, pretrained=False, features_only=True, out_indices=_out_indices(timm_arch))
    return DetectionEncoder(_TimmFeatures(model, ENCODER_STRIDES), arch=timm_arch, source=source,
                            freeze_bn_stats=freeze_bn_stats)


def _check_detector(detector: str) -> None:
    from ...errors import did_you_mean

    if detector not in DETECTORS:
        raise SftuneError(f"unknown detector '{detector}'{did_you_mean(detector, list(DETECTORS))}; "
                          f"choose one of: {', '.join(DETECTORS)}")


def _anchor_settings(detector: str, levels: int, anchor_sizes: Any, aspect_ratios: Any
                     ) -> tuple[list[list[int | float]], list[float]]:
    if detector == "fcos":
        if anchor_sizes is not None or aspect_ratios is not None:
            raise SftuneError("fcos is anchor-free: its pyramid levels take objects by size ranges that follow the "
                              "strides, so it takes no anchor_sizes/aspect_ratios; use faster_rcnn or retinanet for "
                              "anchors from the boxes")
        sizes = [[s] for s in PYRAMID_STRIDES[:levels]]  # torchvision's FCOS: one "anchor" of the stride's size
        return sizes, [1.0]
    default = default_anchors(PYRAMID_STRIDES[:levels], per_level=3 if detector == "retinanet" else 1)
    sizes = [list(level) for level in (anchor_sizes if anchor_sizes is not None else default.sizes)]
    ratios = list(aspect_ratios if aspect_ratios is not None else default.aspect_ratios)
    if len(sizes) != levels or len({len(s) for s in sizes}) != 1 or not sizes[0]:
        raise SftuneError(f"anchor_sizes: need one tuple of sizes per pyramid level ({levels} levels, strides "
                          f"{'/'.join(map(str, PYRAMID_STRIDES[:levels]))}), the same number on every level; "
                          f"got {sizes}")
    if not ratios or any(float(r) <= 0 for r in ratios) or any(float(s) <= 0 for lv in sizes for s in lv):
        raise SftuneError(f"anchors: sizes and aspect ratios must be positive, got {sizes} and {ratios}")
    sizes = [[int(s) if float(s).is_integer() else float(s) for s in lv] for lv in sizes]
    return sizes, [float(r) for r in ratios]


_TORCHVISION_CLASS = {"faster_rcnn": "FasterRCNN", "retinanet": "RetinaNet", "fcos": "FCOS"}
# Set by build_detector itself (its own arguments), so not accepted again in options.
_OWN_ARGUMENTS = {"backbone", "num_classes", "min_size", "max_size", "image_mean", "image_std", "anchor_generator",
                  "rpn_anchor_generator", "box_roi_pool", "score_thresh", "box_score_thresh", "detections_per_img",
                  "box_detections_per_img"}


def _check_options(detector: str, options: dict[str, Any]) -> None:
    """torchvision's detectors pass unknown keywords on to their transform, which ignores them
    silently: check every key against the signatures, and keep the values plain (a bundle's YAML)."""
    import inspect

    import torchvision.models.detection as tvd
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    def named(fn: Any) -> set[str]:
        return {n for n, p in inspect.signature(fn).parameters.items()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}

    cls_name = _TORCHVISION_CLASS[detector]
    modules = {"head", "rpn_head", "box_head", "box_predictor"}  # nn.Module arguments: not configurable here
    known = named(getattr(tvd, cls_name).__init__) | named(GeneralizedRCNNTransform.__init__)
    known -= _OWN_ARGUMENTS | modules
    for key, value in options.items():
        if key not in known:
            from ...errors import did_you_mean

            own = key in _OWN_ARGUMENTS
            hint = " (set by build_detector's own arguments)" if own else did_you_mean(key, sorted(known))
            raise SftuneError(f"{detector}: unknown option '{key}'{hint}; options are keyword arguments of "
                              f"torchvision's {cls_name}: {', '.join(sorted(known))}")
        if not isinstance(value, (bool, int, float, str, list, tuple, type(None))):
            raise SftuneError(f"{detector}: option '{key}' must be a plain value (number, string, list), "
                              f"got {type(value).__name__}")


def _assemble(detector: str, enc: DetectionEncoder, num_classes: int, anchor_sizes: Any, aspect_ratios: Any,
              min_size: int, max_size: int, out_channels: int, score_thresh: float | None, detections_per_img: int,
              options: dict[str, Any] | None) -> DetectionNet:
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    _check_detector(detector)
    if num_classes < 1:
        raise SftuneError(f"a detector needs at least one object class, got num_classes={num_classes}")
    if detector == "fcos" and out_channels % 32:
        raise SftuneError(f"fcos: out_channels must be a multiple of 32 (its head's GroupNorm), got {out_channels}")
    if min_size < 32 or max_size < min_size:
        raise SftuneError(f"detector resize: need 32 <= min_size <= max_size, got min_size={min_size}, "
                          f"max_size={max_size}")
    backbone = FeaturePyramidBackbone(enc, out_channels, own_encoder=False)
    levels = len(backbone.strides)
    sizes, ratios = _anchor_settings(detector, levels, anchor_sizes, aspect_ratios)
    anchors = AnchorGenerator(sizes=tuple(tuple(s) for s in sizes), aspect_ratios=(tuple(ratios),) * levels)
    cfg = enc.data_config()
    common = {"min_size": int(min_size), "max_size": int(max_size), "image_mean": [float(v) for v in cfg["mean"]],
              "image_std": [float(v) for v in cfg["std"]]}
    options = dict(options or {})
    _check_options(detector, options)
    try:
        if detector == "faster_rcnn":
            thresholds = {"box_detections_per_img": int(detections_per_img)}
            if score_thresh is not None:
                thresholds["box_score_thresh"] = float(score_thresh)
            roi_pool = MultiScaleRoIAlign(featmap_names=[str(i) for i in range(len(enc.strides))], output_size=7,
                                          sampling_ratio=2)
            model = FasterRCNN(backbone, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                               box_roi_pool=roi_pool, **common, **thresholds, **options)
        else:
            thresholds = {"detections_per_img": int(detections_per_img)}
            if score_thresh is not None:
                thresholds["score_thresh"] = float(score_thresh)
            cls = RetinaNet if detector == "retinanet" else FCOS
            model = cls(backbone, num_classes=num_classes, anchor_generator=anchors, **common, **thresholds, **options)
    except (TypeError, ValueError) as e:  # a value torchvision refuses
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SftuneError(f"{detector}: torchvision refused the settings ({first})") from None
    settings = {"anchor_sizes": sizes, "aspect_ratios": ratios, "min_size": int(min_size), "max_size": int(max_size),
                "out_channels": int(out_channels), "score_thresh": score_thresh,
                "detections_per_img": int(detections_per_img), "freeze_bn_stats": enc.freeze_bn_stats,
                "image_mean": common["image_mean"], "image_std": common["image_std"], "options": options}
    return DetectionNet(enc, model, detector_name=detector, num_classes=num_classes, settings=settings)
