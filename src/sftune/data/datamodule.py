"""Datasets and the LightningDataModule for image classification."""

from __future__ import annotations

import os
from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import SftuneError
from .images import load_rgb
from .sources import Sample


class ImageDataset(Dataset):
    """``(image tensor (3, H, W), class index)`` pairs; label -1 when unlabeled."""

    def __init__(self, samples: list[Sample] | list, class_to_idx: dict[str, int], transform: Callable) -> None:
        self.samples = samples
        self.class_to_idx = class_to_idx
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        path = getattr(sample, "path", sample)
        try:
            image = load_rgb(path)
        except Exception as e:
            raise SftuneError(f"{path}: could not be read during training ({type(e).__name__}: {e})") from None
        label = self.class_to_idx.get(sample.label, -1) if hasattr(sample, "label") else -1
        return self.transform(image), label


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        drop_last=False,
    )


class ImageClassificationData(L.LightningDataModule):
    def __init__(
        self,
        train: list[Sample],
        val: list[Sample],
        classes: list[str],
        train_transform: Callable,
        eval_transform: Callable,
        batch_size: int,
        num_workers: int | None = None,
    ) -> None:
        super().__init__()
        class_to_idx = {c: i for i, c in enumerate(classes)}
        self.train_set = ImageDataset(train, class_to_idx, train_transform)
        self.val_set = ImageDataset(val, class_to_idx, eval_transform)
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.batch_size, self.num_workers, shuffle=False)
