"""A bundle's outputs (scores + pooled features) on new data, labeled or not, through the
predictors' own inference loops (``outputs()`` / ``_batches``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ..errors import SftuneError
from ..eval.outputs import Outputs, gather
from .reference import MAX_FEATURES, Reference


def is_text_model(model: Any) -> bool:
    return hasattr(model, "collator")


def outputs_on(model: Any, data: str | Path, max_samples: int = 1000, seed: int = 0, text_column: Any = None) -> Outputs:
    """Outputs with features on at most ``max_samples`` examples of ``data`` (a seeded sample).

    Images: a class folder / train-val root / CSV manifest whose classes the model knows is
    labeled; any other folder (or files) is read as unlabeled images. Text: a labeled table,
    else its text column (or a .txt file, one text per line) as unlabeled texts.
    Unlabeled rows have target -1.
    """
    if is_text_model(model):
        return _text_outputs(model, Path(data).expanduser(), max_samples, seed, text_column)
    return _image_outputs(model, Path(data).expanduser(), max_samples, seed)


def _sample(items: list[Any], limit: int, seed: int) -> list[Any]:
    if len(items) <= limit:
        return items
    index = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in index]


def _image_outputs(model: Any, path: Path, limit: int, seed: int) -> Outputs:
    from ..data import Sample
    from ..data.sources import VAL_DIR_NAMES, check_images, find_unlabeled_images, read_manifest, scan_class_folders

    if not path.exists():
        raise SftuneError(f"data '{path}' does not exist; pass a folder of images (or of class folders) or a CSV manifest")
    samples: list[Sample] | None = None
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        train, val = read_manifest(path)
        samples = train + (val or [])
    elif path.is_dir():
        roots = [path / "train", *(path / n for n in VAL_DIR_NAMES)] if (path / "train").is_dir() else [path]
        roots = [r for r in roots if r.is_dir()]
        subdirs = {p.name for r in roots for p in r.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if subdirs and subdirs <= set(model.classes):
            samples = [s for r in roots for s in scan_class_folders(r)]
        elif subdirs & set(model.classes):  # some folders are classes, some not: a mistake, not unlabeled data
            unknown = sorted(subdirs - set(model.classes))
            raise SftuneError(f"'{path}' has class folders the model does not know: {', '.join(unknown[:10])}; it knows "
                              f"{', '.join(model.classes)}. Move those out, or pass a folder of unlabeled images")
    labeled = samples is not None
    if samples is None:
        samples = [Sample(f, "") for f in find_unlabeled_images([path])]
    good, skipped, digests = check_images(_sample(samples, limit, seed), strict=False)
    if not good:
        raise SftuneError(f"no readable images in '{path}'")
    if labeled:
        return model.outputs(good, features=True)  # checks the classes
    batches = model._batches(good, 64, 0, digests, features=True)
    return gather(model.classes, [str(s.path) for s in good], batches, skipped=skipped)


def _text_outputs(model: Any, path: Path, limit: int, seed: int, text_column: Any) -> Outputs:
    from ..data.texts import TextSample, read_labeled_texts, read_texts_for_prediction

    c = model.config.data
    try:
        samples = read_labeled_texts(path, text_column if text_column is not None else c.text_column, c.label_column,
                                     c.text_pair_column, c.multi_label, c.label_separator)
        return model.outputs(_sample(samples, limit, seed), features=True)
    except SftuneError:
        if path.suffix.lower() not in (".txt", ".csv", ".tsv", ".jsonl", ".json", ".parquet"):
            raise
    texts = read_texts_for_prediction(path, text_column)  # no label column: unlabeled texts
    samples = [TextSample(t, "") for t in _sample(texts, limit, seed)]
    return gather(model.classes, [s.text for s in samples], model._batches(samples, 64, features=True),
                  multi_label=model.multi_label)


def reference_from_outputs(out: Outputs, seed: int = 0) -> Reference:
    """A :class:`Reference` computed now from old data (``--reference OLD``) instead of the bundle's."""
    import torch

    features = out.features
    assert features is not None
    if len(features) > MAX_FEATURES:
        index = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:MAX_FEATURES]
        features = features[index.sort().values]
    return Reference(features, out.logits, out.targets, list(out.classes), out.multi_label, "the --reference data")
