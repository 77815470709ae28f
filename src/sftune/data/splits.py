"""The one validation-split rule of every task and modality (images, texts, masks, boxes).

Per group (a class; one group for a plain random split), in sorted group order, the members
in a fixed order (by ``order`` keys, else by position) are shuffled by ONE seeded
``random.Random(seed)`` shared across groups, and the first round(n x fraction) of each go to
validation: at least 1 when the group has 2 or more members, never all of them. The same
seed gives the same split on every machine, and adding a class does not reshuffle the
classes sorted before it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any


def split_indices(groups: Sequence[Hashable], val_fraction: float, seed: int,
                  order: Sequence[Any] | None = None) -> tuple[list[int], list[int]]:
    """``(train, val)`` indices into ``groups`` (one group label per item), each group's members
    in their shuffled order, groups in sorted order. ``order``: a sort key per item (e.g. the
    file path) fixing the members' order before the shuffle, so the split does not depend on
    the order the files were listed in; default: their position."""
    by_group: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    rng = random.Random(seed)
    train: list[int] = []
    val: list[int] = []
    for g in sorted(by_group, key=str):
        members = by_group[g] if order is None else sorted(by_group[g], key=lambda i: order[i])
        rng.shuffle(members)
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction))) if len(members) >= 2 else 0
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return train, val


def group_split_indices(groups: Sequence[Hashable], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, val)`` indices with every group (e.g. a speaker) wholly on one side.

    The sorted distinct groups are shuffled by ``random.Random(seed)`` and taken into validation
    in that order until it holds at least round(n x fraction) items: at least one group, never
    all of them (one group only: everything trains and validation is empty). Indices keep
    their original order on each side."""
    names = sorted(set(groups), key=str)
    random.Random(seed).shuffle(names)
    sizes: dict[Hashable, int] = defaultdict(int)
    for g in groups:
        sizes[g] += 1
    wanted = max(1, round(len(groups) * val_fraction))
    chosen: set[Hashable] = set()
    taken = 0
    for g in names[:-1]:  # never every group
        if taken >= wanted:
            break
        chosen.add(g)
        taken += sizes[g]
    train = [i for i, g in enumerate(groups) if g not in chosen]
    val = [i for i, g in enumerate(groups) if g in chosen]
    return train, val


def shared_groups(train_groups: Sequence[Hashable], val_groups: Sequence[Hashable]) -> list[Hashable]:
    """Groups found on both sides of a split (sorted): validation then scores groups it trained on."""
    return sorted(set(train_groups) & set(val_groups) - {None}, key=str)
