"""Images: replay records by path + SHA-256, class-folder/CSV new data, a path,label manifest."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any, Callable

from ..errors import SftuneError
from .base import MODALITIES, Modality


def sample_of(items: list[Any], limit: int, seed: int) -> list[Any]:
    """At most ``limit`` items, a seeded sample in the original order."""
    if len(items) <= limit:
        return items
    index = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in index]


def replay_files(items: list[dict[str, Any]], check: Callable[[list[Any]], tuple[list[Any], dict[Path, str]]],
                 log: Callable[[str], None]) -> list[Any]:
    """The replayed file samples (``{path, label, sha256}`` records) still present, usable by
    ``check`` (samples -> (usable samples, sha256 per path)) and unchanged since they were named."""
    from ..data.sources import Sample

    samples = [Sample(Path(i["path"]), i["label"]) for i in items]
    good, digests = check([s for s in samples if s.path.is_file()])
    want = {Path(i["path"]): i.get("sha256") for i in items}
    same = [s for s in good if want.get(s.path) in (None, digests.get(s.path))]
    if len(same) < len(samples):
        log(f"warning: {len(samples) - len(same)} of {len(samples)} old examples are missing or changed; skipped")
    return same


class Images(Modality):
    name = "images"
    items_are_files = True

    def replay_item(self, sample: Any, digests: dict[Path, str]) -> dict[str, Any]:
        return {"path": str(Path(sample.path).absolute()), "label": sample.label, "sha256": digests.get(sample.path)}

    def replay_samples(self, items: list[dict[str, Any]], log: Callable[[str], None]) -> list[Any]:
        from ..data.sources import check_images

        def check(present: list[Any]) -> tuple[list[Any], dict[Path, str]]:
            good, _, digests = check_images(present, strict=False)
            return good, digests

        return replay_files(items, check, log)

    def split_new(self, path: Path, old_config: dict[str, Any], val_fraction: float,
                  seed: int) -> tuple[list[Any], list[Any], str]:
        from ..data import find_labeled_images

        data = find_labeled_images(path, None, val_fraction, seed, strict=False)
        return data.train, data.val, data.fingerprint

    def write_training_data(self, folder: Path, samples: list[Any]) -> tuple[Path, dict[str, Any]]:
        path = folder / "manifest.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"])
            w.writerows([str(Path(s.path).absolute()), s.label] for s in samples)
        return path, {}

    def outputs_on(self, model: Any, path: Path, limit: int, seed: int, text_column: Any = None) -> Any:
        """A class folder / train-val root / CSV manifest whose classes the model knows is labeled;
        any other folder (or files) is read as unlabeled images."""
        from ..data import Sample
        from ..data.sources import (VAL_DIR_NAMES, _ignored, check_images, find_unlabeled_images, read_manifest,
                                    scan_class_folders)
        from ..eval.outputs import gather

        if not path.exists():
            raise SftuneError(f"data '{path}' does not exist; pass a folder of images (or of class folders) or a CSV manifest")
        samples: list[Sample] | None = None
        if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
            train, val = read_manifest(path)
            samples = train + (val or [])
        elif path.is_dir():
            roots = [path / "train", *(path / n for n in VAL_DIR_NAMES)] if (path / "train").is_dir() else [path]
            roots = [r for r in roots if r.is_dir()]
            subdirs = {p.name for r in roots for p in r.iterdir() if p.is_dir() and not _ignored(p.name)}  # not __MACOSX
            if subdirs and subdirs <= set(model.classes):
                samples = [s for r in roots for s in scan_class_folders(r)]
            elif subdirs & set(model.classes):  # some folders are classes, some not: a mistake, not unlabeled data
                unknown = sorted(subdirs - set(model.classes))
                raise SftuneError(f"'{path}' has class folders the model does not know: {', '.join(unknown[:10])}; it knows "
                                  f"{', '.join(model.classes)}. Move those out, or pass a folder of unlabeled images")
        labeled = samples is not None
        if samples is None:
            samples = [Sample(f, "") for f in find_unlabeled_images([path])]
        good, skipped, digests = check_images(sample_of(samples, limit, seed), strict=False)
        if not good:
            raise SftuneError(f"no readable images in '{path}'")
        if labeled:
            return model.outputs(good, features=True)  # checks the classes
        batches = model._batches(good, 64, 0, digests, features=True)
        return gather(model.classes, [str(s.path) for s in good], batches, skipped=skipped)

    def scored_batches(self, model: Any, samples: list[Any]) -> list[tuple[Any, Any]]:
        from ..data.sources import check_images

        # With the files' digests, a linear probe's cached features are reused.
        good, _, digests = check_images(samples, strict=False)
        return [(logits, labels) for logits, labels in model.logits(good, 64, 0, digests)]


MODALITIES.register("images")(Images())
