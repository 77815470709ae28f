"""Random-number-generator state as plain tensors, so checkpoints stay loadable with
``torch.load(weights_only=True)`` and a resumed run draws the same numbers
(shuffling, augmentation, dropout) as an uninterrupted one."""

from __future__ import annotations

import random

import numpy as np
import torch


def capture() -> dict[str, torch.Tensor]:
    version, py_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"].tolist()
    gauss = float(state["python_gauss"][0])
    random.setstate((int(py[0]), tuple(int(x) for x in py[1:]), None if gauss != gauss else gauss))
    pos, has_gauss = (int(x) for x in state["numpy_pos"].tolist())
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, float(state["numpy_gauss"][0])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
