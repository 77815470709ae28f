"""Modalities: what differs between kinds of raw items (images, text, audio) outside training —
how a replay example is recorded and read back, how new labeled data is split and written
as a manifest, how a bundle's outputs on new data are computed, how a report shows an example.

Looked up by name in :data:`MODALITIES` (the name a pipeline's ``kind`` / a predictor's
``modality`` / replay.json's ``kind`` holds), so the continual and eval code never branch on it.
"""

from .base import MODALITIES, Modality, modality_of

__all__ = ["MODALITIES", "Modality", "modality_of"]
