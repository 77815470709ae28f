"""Datasets, samplers and the LightningDataModules.

Randomness here is *stateless*: the training order of an epoch depends only on
``(seed, epoch)``, and the augmentation of sample ``i`` in epoch ``e`` only on
``(seed, epoch, i)``. So results do not depend on worker count, prefetching or
persistent workers, and a run resumed at epoch k continues exactly as the
uninterrupted run would have (Lightning creates the first iterator of a resumed
fit before any epoch hook runs, so RNG state restored in a hook comes too late).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from .. import rng
from ..errors import SftuneError
from .images import load_rgb
from .sources import Sample

if TYPE_CHECKING:
    from .decoded_cache import DecodedImages


def _mix(*parts: int) -> int:
    """A 63-bit seed from small integers (splitmix-style, so neighbours are unrelated)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return x >> 1


def keyed(key: int | tuple[int, int], seed: int) -> tuple[int, ContextManager[Any]]:
    """``(index, context)`` for a dataset key. ``(index, epoch)`` keys (training, from
    :class:`EpochShuffle`): the sample's augmentation runs with every generator seeded from
    ``(seed, epoch, index)``, restored afterwards. Plain ints (evaluation): no seeding."""
    if isinstance(key, tuple):
        index, epoch = key
        return index, rng.seeded(_mix(seed, epoch, index))
    return key, contextlib.nullcontext()


class ImageDataset(Dataset):
    """``(image tensor (3, H, W), class index)`` pairs; label -1 when the class is unknown.

    Indexed with an int (evaluation) or with ``(index, epoch)`` from
    :class:`EpochShuffle` (training), which seeds the augmentation per sample.
    """

    def __init__(self, samples: list[Sample], class_to_idx: dict[str, int], transform: Callable, seed: int = 0,
                 decoded: "DecodedImages | None" = None) -> None:
        self.samples = samples
        self.class_to_idx = class_to_idx
        self.transform = transform
        self.seed = seed
        self.decoded = decoded  # images decoded once (data/decoded_cache.py), else files are read each time

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seeded = keyed(key, self.seed)  # timm's RandomResizedCrop draws from `random`, flips/jitter from torch
        sample = self.samples[index]
        try:
            image = self.decoded[index] if self.decoded is not None else load_rgb(sample.path)
        except Exception as e:
            raise SftuneError(f"{sample.path}: could not be read during training ({type(e).__name__}: {e})") from None
        with seeded:
            return self.transform(image), self.class_to_idx.get(sample.label, -1)


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochShuffle(Sampler):
    """Yields ``(index, epoch)``: a random order depending only on (seed, epoch), split across ranks.

    Lightning calls :meth:`set_epoch` before each epoch; under DDP each rank takes
    every world_size-th index of the same permutation (padded to equal length, as
    torch's DistributedSampler does), so the ranks see disjoint shards.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_len(self) -> int:
        _, world = _rank_and_world()
        return -(-self.size // world)  # ceil

    def __len__(self) -> int:
        return self._shard_len()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = _rank_and_world()
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        total = self._shard_len() * world
        order += order[: total - len(order)]  # pad so every rank gets the same number of steps
        return iter([(i, self.epoch) for i in order[rank:total:world]])


class LengthGroupedShuffle(EpochShuffle):
    """:class:`EpochShuffle` whose batches hold examples of similar length (text).

    The shuffled shard is cut into windows of ``window`` batches; each window is sorted by
    length and cut into batches, and the batch order is shuffled again, all from (seed,
    epoch). Batches pad to their longest text, so grouping cuts the padding (on SST-2
    sentences, about half the tokens of a random batch are padding) while every epoch
    still visits every example in a new random grouping (Hugging Face's group_by_length).
    """

    def __init__(self, size: int, seed: int, lengths: list[int], batch_size: int, window: int = 50) -> None:
        super().__init__(size, seed)
        self.lengths = lengths
        self.batch_size = batch_size
        self.window = window

    def __iter__(self) -> Iterator[tuple[int, int]]:
        keys = list(super().__iter__())
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch, 1))
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(keys), span):
            chunk = sorted(keys[start:start + span], key=lambda k: -self.lengths[k[0]])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(batches), generator=generator).tolist()
        return iter([key for b in order for key in batches[b]])


class Shard(Sampler):
    """In-order indices of this rank's share (``rank::world``) for evaluation."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        return len(range(rank, self.size, world))

    def __iter__(self) -> Iterator[int]:
        rank, world = _rank_and_world()
        return iter(range(rank, self.size, world))


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, sampler: Sampler | None = None,
                collate_fn: Callable | None = None, drop_last: bool = False) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        # Each iterator draws a base seed; from the global RNG that would shift dropout masks
        # by however many iterators Lightning happens to create (it creates more on resume).
        # Worker randomness is seeded per sample (ImageDataset), so a fixed generator is enough.
        generator=torch.Generator().manual_seed(0),
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
    )


class _EpochAware(L.LightningDataModule):
    """Builds the train loader with an :class:`EpochShuffle` already set to the trainer's epoch.

    Lightning creates the first train iterator of a fit (and of a resumed fit) before it
    calls ``set_epoch``, so the sampler must start at the restored epoch itself.
    """

    train_set: Dataset
    val_set: Dataset
    batch_size: int
    num_workers: int
    seed: int

    collate_fn: Callable | None = None  # text: tokenizes each batch (dynamic padding)
    # A last training batch of one example is dropped: BatchNorm layers in heads (DeepLabV3+'s
    # image pooling) cannot normalise a single value per channel in train mode.
    drop_single_last: bool = False

    # The epoch a resumed fit starts with, from the checkpoint (load_state_dict); None for a fresh fit.
    _resume_epoch: int | None = None

    def train_sampler(self) -> EpochShuffle:
        return EpochShuffle(len(self.train_set), self.seed)

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint. Checkpoints are written at the end of an epoch, so a fit
        resumed from this one starts with the next epoch."""
        trainer = getattr(self, "trainer", None)
        return {"next_epoch": trainer.current_epoch + 1} if trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning restores the datamodule before it builds the train loader, but the loops'
        epoch counter only after: ``trainer.current_epoch`` still reads 0 there."""
        self._resume_epoch = state_dict.get("next_epoch")

    def _first_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if trainer is not None else 0
        if self._resume_epoch is not None:  # a checkpoint of an older sftune holds no next_epoch
            epoch, self._resume_epoch = max(epoch, self._resume_epoch), None
        return epoch

    def train_dataloader(self) -> DataLoader:
        sampler = self.train_sampler()
        # With DataLoader workers the first batches are fetched (keys and all) as soon as the
        # iterator exists, before Lightning's set_epoch: the sampler must start at the right epoch.
        sampler.set_epoch(self._first_epoch())
        drop_last = self.drop_single_last and len(sampler) % self.batch_size == 1 and len(sampler) > 1
        return make_loader(self.train_set, self.batch_size, self.num_workers, sampler, self.collate_fn, drop_last)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.val_batch_size(), self.num_workers, Shard(len(self.val_set)), self.collate_fn)

    def val_batch_size(self) -> int:
        return self.batch_size


class ImageClassificationData(_EpochAware):
    def __init__(
        self,
        train: list[Sample],
        val: list[Sample],
        classes: list[str],
        train_transform: Callable,
        eval_transform: Callable,
        batch_size: int,
        num_workers: int | None = None,
        seed: int = 0,
        decoded_train: "DecodedImages | None" = None,
    ) -> None:
        super().__init__()
        class_to_idx = {c: i for i, c in enumerate(classes)}
        self.train_set = ImageDataset(train, class_to_idx, train_transform, seed, decoded_train)
        self.val_set = ImageDataset(val, class_to_idx, eval_transform)
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.seed = seed


class _IndexedTensors(TensorDataset):
    """A TensorDataset that also accepts :class:`EpochShuffle`'s ``(index, epoch)`` keys."""

    def __getitem__(self, key: int | tuple[int, int]):  # type: ignore[override]
        return super().__getitem__(key[0] if isinstance(key, tuple) else key)


class FeatureData(_EpochAware):
    """Cached backbone features ``(N, F)`` with class indices, for a head trained alone."""

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.train_set = _IndexedTensors(train_x, train_y)
        self.val_set = _IndexedTensors(val_x, val_y)
        self.batch_size = batch_size
        self.num_workers = 0  # tensors already in memory: worker processes would only add start-up time
        self.seed = seed

    def val_batch_size(self) -> int:
        return max(self.batch_size, 256)
