"""LoRA adapters inside a backbone: the merged plain weights, and the adapters alone.

peft's ``inject_adapter_in_model`` wraps each targeted layer ``x`` so its weight
becomes ``x.base_layer.weight`` next to ``x.lora_A.default.weight`` /
``x.lora_B.default.weight``. Bundles keep the model's own key names (readable
by plain timm / transformers): :func:`plain_state_dict` folds every adapter into
its base weight (W + B·A·scale, peft's ``get_delta_weight``) without touching the
live model. :func:`adapter_state_dict` keeps only the low-rank factors, the small
file a user ships to re-apply the fine-tune to the same pretrained backbone.
"""

from __future__ import annotations

import torch
from torch import nn

ADAPTER_NAME = "default"  # peft's name for the single adapter sftune injects


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Module name -> peft LoRA layer, empty when the model has no adapters (peft not even imported)."""
    if not any(hasattr(m, "lora_A") for m in model.modules()):
        return {}
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with adapters merged into their base weights and peft's names undone."""
    state = model.state_dict()
    layers = lora_layers(model)
    if not layers:
        return state
    with torch.no_grad():
        for name, layer in layers.items():
            key = f"{name}.base_layer.weight"
            delta = layer.get_delta_weight(ADAPTER_NAME)
            state[key] = state[key] + delta.to(state[key].dtype)
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA factors, with peft's key names."""
    return {k: v for k, v in model.state_dict().items() if ".lora_" in k}
