"""The modality contract (see the package docstring) and its registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

from .._registry import Registry


class Modality:
    """One kind of raw item. Subclasses implement every method; instances are stateless."""

    name: ClassVar[str]
    items_are_files: ClassVar[bool]  # a report shows examples as thumbnails (True) or text snippets

    def replay_item(self, sample: Any, digests: dict[Path, str]) -> dict[str, Any]:
        """replay.json's record of one labeled training/validation example."""
        raise NotImplementedError

    def replay_samples(self, items: list[dict[str, Any]], log: Callable[[str], None]) -> list[Any]:
        """replay.json records back as labeled samples; examples that vanished or changed are skipped."""
        raise NotImplementedError

    def split_new(self, path: Path, old_config: dict[str, Any], val_fraction: float,
                  seed: int) -> tuple[list[Any], list[Any], str]:
        """(train, held-out, fingerprint) of new labeled data for ``sftune update``."""
        raise NotImplementedError

    def write_training_data(self, folder: Path, samples: list[Any]) -> tuple[Path, dict[str, Any]]:
        """A labeled file the engine reads like user data, and the ``data.*`` settings that read it."""
        raise NotImplementedError

    def outputs_on(self, model: Any, path: Path, limit: int, seed: int, text_column: Any = None) -> Any:
        """The bundle's outputs (with pooled features) on at most ``limit`` examples of ``path``:
        labeled when the data carries labels the model knows, else unlabeled (targets -1)."""
        raise NotImplementedError

    def scored_batches(self, model: Any, samples: list[Any]) -> list[tuple[Any, Any]]:
        """``(logits, targets)`` batches of a classifier on labeled samples (the predictor's loop)."""
        raise NotImplementedError

    def gallery_media(self, item: str, thumbnails: bool) -> str | None:
        """HTML showing one example in a report's gallery, or None for the report's default (an
        image thumbnail of a file, or a text snippet)."""
        return None


MODALITIES: Registry[Modality] = Registry("modality")


def modality_of(name: str) -> Modality:
    """The registered modality ``name`` (importing the built-in ones first)."""
    from . import audio, images, text  # noqa: F401  (register)

    return MODALITIES.get(name)
