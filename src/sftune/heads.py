"""Classifier heads: pooled features (B, F) -> logits (B, num_classes)."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))
