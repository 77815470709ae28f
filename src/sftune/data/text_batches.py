"""Texts to model inputs: a dataset of (text, text_pair, target) and a dynamic-padding collator.

Tokenizing in the collator (not the dataset) lets each batch pad only to its own longest
text, which for short texts such as SST-2 (~10 words) is several times less compute
than padding every batch to ``max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from .texts import TextSample

TextItem = tuple[str, str | None, int | torch.Tensor]


class TextDataset(Dataset):
    """Items are ``(text, text_pair, target)``.

    ``target`` is the class index (-1 when the label is unknown, e.g. texts to predict), or
    for multi-label a float multi-hot vector ``(C,)`` (labels it does not know are left at 0).
    """

    def __init__(self, samples: Sequence[TextSample], class_to_idx: dict[str, int], multi_label: bool = False) -> None:
        self.samples = list(samples)
        self.class_to_idx = class_to_idx
        self.multi_label = multi_label

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> TextItem:
        index = key[0] if isinstance(key, tuple) else key  # EpochShuffle's (index, epoch): no augmentation for text
        s = self.samples[index]
        return s.text, s.text_pair, self._target(s.label)

    def _target(self, label: str | tuple[str, ...]) -> int | torch.Tensor:
        if not self.multi_label:
            return self.class_to_idx.get(label, -1) if isinstance(label, str) else -1
        hot = torch.zeros(len(self.class_to_idx), dtype=torch.float32)  # (C,)
        for name in (label,) if isinstance(label, str) else label:
            if name in self.class_to_idx:
                hot[self.class_to_idx[name]] = 1.0
        return hot


class TextCollator:
    """``collate_fn`` for a DataLoader over :class:`TextDataset`.

    Returns ``(inputs, targets)``: ``inputs`` holds ``input_ids``/``attention_mask`` (and
    ``token_type_ids`` where the tokenizer makes them), each ``(B, T)`` with ``T`` the longest
    text of the batch capped at ``max_length``; ``targets`` is ``(B,)`` long or ``(B, C)`` float.
    """

    def __init__(self, tokenizer: Any, max_length: int = 128, truncation_side: str = "right") -> None:
        if truncation_side not in ("right", "left"):
            raise ValueError(f"truncation_side must be 'right' or 'left', not {truncation_side!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation_side = truncation_side

    def __call__(self, items: Sequence[TextItem]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts = [text for text, _, _ in items]
        pairs = [pair for _, pair, _ in items]
        if any(p is None for p in pairs) and any(p is not None for p in pairs):
            raise ValueError("a batch mixes single texts and sentence pairs; every sample needs a text_pair or none")
        # "left" keeps the end of long texts (e.g. reviews whose verdict comes last). The
        # tokenizer reads the attribute at call time; restore it, the tokenizer is shared.
        side, self.tokenizer.truncation_side = self.tokenizer.truncation_side, self.truncation_side
        try:
            encoded = self.tokenizer(
                texts,
                pairs if pairs and pairs[0] is not None else None,
                padding="longest",  # dynamic padding: to the longest text of this batch
                truncation=True,  # pairs: trims the longer sentence first ("longest_first")
                max_length=self.max_length,
                return_tensors="pt",
            )
        finally:
            self.tokenizer.truncation_side = side
        targets = [target for _, _, target in items]
        if targets and isinstance(targets[0], torch.Tensor):
            target_tensor = torch.stack(targets)  # (B, C) multi-hot
        else:
            target_tensor = torch.tensor(targets, dtype=torch.long)  # (B,)
        return dict(encoded), target_tensor

    def too_long(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None) -> list[bool]:
        """Whether each text (with its second text) has more than ``max_length`` tokens, special
        tokens included: the texts the model sees only in part (truncated)."""
        if not texts:
            return []
        second = list(pairs) if pairs is not None and any(p is not None for p in pairs) else None
        encoded = self.tokenizer(list(texts), second, truncation=False, add_special_tokens=True, verbose=False)
        return [len(ids) > self.max_length for ids in encoded["input_ids"]]

    def windows(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Single texts cut into windows of ``max_length`` tokens that overlap by a quarter, so
        that every token is read: ``(inputs (W, T), owner (W,))`` where ``owner[w]`` is the index in
        ``texts`` of window ``w``'s text (a short text is one window). Needs a fast tokenizer."""
        encoded = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                                 stride=self.max_length // 4, return_overflowing_tokens=True, return_tensors="pt")
        owner = encoded.pop("overflow_to_sample_mapping")
        return dict(encoded), owner
