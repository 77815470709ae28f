"""Seeding every generator a training step draws from (Python, NumPy, torch)."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's CPU generators seeded with ``seed`` inside the block and
    restored after it. Per-sample augmentation runs in here: with DataLoader workers the block
    runs in a worker, without them in the training process, where reseeding for good would
    replace the dropout masks' generator state by the last sample's (``--workers 0`` and the
    default workers then trained differently)."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_all(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
