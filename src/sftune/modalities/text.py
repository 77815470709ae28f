"""Text: replay records hold the texts themselves, new data is a text table, a text/label CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable

from ..errors import SftuneError
from .base import MODALITIES, Modality
from .images import sample_of


class Text(Modality):
    name = "text"
    items_are_files = False

    def replay_item(self, sample: Any, digests: dict[Path, str]) -> dict[str, Any]:
        label = sample.label if isinstance(sample.label, str) else list(sample.label)
        return {"text": sample.text, "text_pair": sample.text_pair, "label": label}

    def replay_samples(self, items: list[dict[str, Any]], log: Callable[[str], None]) -> list[Any]:
        from ..data.texts import TextSample

        return [TextSample(i["text"], i["label"], i.get("text_pair")) for i in items]

    def split_new(self, path: Path, old_config: dict[str, Any], val_fraction: float,
                  seed: int) -> tuple[list[Any], list[Any], str]:
        from ..data.texts import find_labeled_texts

        c = old_config.get("data", {})
        data = find_labeled_texts(path, None, val_fraction, seed, c.get("text_column"), c.get("label_column"),
                                  c.get("text_pair_column"), False, c.get("label_separator", ","))
        return data.train, data.val, data.fingerprint

    def write_training_data(self, folder: Path, samples: list[Any]) -> tuple[Path, dict[str, Any]]:
        path = folder / "train.csv"
        pairs = any(s.text_pair for s in samples)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "text_pair", "label"] if pairs else ["text", "label"])
            w.writerows([s.text, s.text_pair or "", s.label] if pairs else [s.text, s.label] for s in samples)
        return path, {"text_column": "text", "label_column": "label", "text_pair_column": "text_pair" if pairs else None}

    def outputs_on(self, model: Any, path: Path, limit: int, seed: int, text_column: Any = None) -> Any:
        """A labeled table, else its text column (or a .txt file, one text per line) as unlabeled texts."""
        from ..data.texts import TextSample, read_labeled_texts, read_texts_for_prediction
        from ..eval.outputs import gather

        c = model.config.data
        try:
            samples = read_labeled_texts(path, text_column if text_column is not None else c.text_column, c.label_column,
                                         c.text_pair_column, c.multi_label, c.label_separator)
            return model.outputs(sample_of(samples, limit, seed), features=True)
        except SftuneError:
            if path.suffix.lower() not in (".txt", ".csv", ".tsv", ".jsonl", ".json", ".parquet"):
                raise
        texts = read_texts_for_prediction(path, text_column)  # no label column: unlabeled texts
        unlabeled = [TextSample(t, "") for t in sample_of(texts, limit, seed)]
        return gather(model.classes, [s.text for s in unlabeled], model._batches(unlabeled, 64, features=True),
                      multi_label=model.multi_label)

    def scored_batches(self, model: Any, samples: list[Any]) -> list[tuple[Any, Any]]:
        out = model.outputs(samples)
        return [(out.logits, out.targets)]


MODALITIES.register("text")(Text())
