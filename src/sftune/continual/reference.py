"""Reference statistics stored in a bundle at train time, so drift checks and updates need
neither the old data's features recomputed nor (for drift) the old data at all.

Two files, both small:

``reference.safetensors``
    ``features`` (n, F) float32: pooled backbone features of a seeded sample of at most
    ``MAX_FEATURES`` examples, in the model's own feature space (the fine-tuned backbone's);
    ``logits`` (m, C) float32 and ``targets`` (m,) int64 of the validation set (at most
    ``MAX_EXAMPLES``), with :class:`~sftune.eval.outputs.Outputs` semantics (softmax scores;
    multi-label: sigmoid logits shifted so 0 is each class's threshold). From these come the
    label-free signals (predicted-class frequencies, confidence) and the per-class accuracy.

``replay.json``
    Which old examples an update mixes into its training data (a seeded stratified sample of
    the training set) and which it holds out to measure forgetting (the validation set): image
    paths with their SHA-256, or the texts themselves.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .. import bundle as B
from ..errors import SftuneError

REFERENCE = "reference.safetensors"
REPLAY = "replay.json"
MAX_FEATURES = 512  # MMD's cost is O(n^2) per permutation; 512 reference rows keep a test under a second
MAX_EXAMPLES = 2048  # validation predictions kept for label-free statistics
MAX_REPLAY = 1000  # training examples named in replay.json (per update the mix grows by at most this)
FORMAT = "1"


@dataclass
class Reference:
    """What a bundle remembers of its training distribution."""

    features: torch.Tensor  # (n, F)
    logits: torch.Tensor  # (m, C)
    targets: torch.Tensor  # (m,) class indices, or (m, C) multi-hot
    classes: list[str]
    multi_label: bool = False
    # Where the feature rows come from ("val+train", "val", or "--reference <data>"): a reference that
    # holds the validation set makes a drift check of that same set trivially "no drift".
    features_from: str = ""

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.sigmoid() if self.multi_label else self.logits.softmax(dim=-1)


def write_reference(work: Path, task: Any, datamodule: Any, data: Any, seed: int,
                    precision: str = "auto", log: Callable[[str], None] = print, val_outputs: Any = None,
                    kind: str = "images") -> None:
    """Store ``reference.safetensors`` and ``replay.json`` in the run folder ``work``.

    ``kind``: the data's modality (modalities/), how replay.json records an example.
    ``task``: the trained Classifier (best weights loaded). When ``task.inputs_are_features``,
    ``datamodule`` holds the cached (frozen-backbone) features and the head alone gives the
    logits: no pass over any image. Otherwise the bundle's outputs on ``data.val`` with features
    (``val_outputs``, as the engine's final evaluation computed them) are sampled; without them the
    bundle just written to ``work`` is loaded and run over that sample (the predictor's loop).
    """
    classes = list(data.classes)
    multi_label = bool(getattr(data, "multi_label", False))
    rng = torch.Generator().manual_seed(seed)
    if getattr(task, "inputs_are_features", False):
        val_x, val_y = datamodule.val_set.tensors
        val_x, val_y = _take(val_x, val_y, MAX_EXAMPLES, rng)
        with torch.inference_mode():
            task.eval()
            logits = task.head(val_x).float()
            if multi_label:
                thresholds = torch.tensor(B.read_json(work / B.LABELS)["thresholds"])
                logits = logits - torch.logit(thresholds)
        # A frozen backbone maps train and val images alike, so both feed the feature sample
        # (more reference rows, more power); only the un-augmented train rows are used.
        train_x = datamodule.train_set.tensors[0][: len(data.train)]
        features = torch.cat([val_x, train_x])
        source = "val+train"
    else:
        order = list(range(len(data.val)))
        random.Random(seed).shuffle(order)  # a seeded sample of at most MAX_EXAMPLES validation examples
        order = order[:MAX_EXAMPLES]
        if val_outputs is not None and val_outputs.features is not None and len(val_outputs) == len(data.val):
            index = torch.tensor(order)
            logits, val_y, features = val_outputs.logits[index], val_outputs.targets[index], val_outputs.features[index]
        else:
            from ..predictor import load

            out = load(work, precision=precision).outputs([data.val[i] for i in order], features=True)
            logits, val_y, features = out.logits, out.targets, out.features
        source = "val"
    features = _take(features.float(), None, MAX_FEATURES, rng)[0]
    B.save_tensors(work / REFERENCE, {"features": features, "logits": logits.float(), "targets": val_y},
                   metadata={"format": FORMAT, "features_from": source, "seed": str(seed),
                             "multi_label": str(multi_label).lower(), "classes": "\n".join(classes)})
    B.atomic_write_json(work / REPLAY, replay_spec(data, seed, kind))
    log(f"reference: {len(features)} feature rows ({source}) and {len(logits)} validation predictions stored "
        f"for drift checks; replay sample of {min(len(data.train), MAX_REPLAY)} training examples named")


def _take(x: torch.Tensor, y: torch.Tensor | None, limit: int, rng: torch.Generator):
    if len(x) <= limit:
        return x, y
    index = torch.randperm(len(x), generator=rng)[:limit].sort().values
    return x[index], (y[index] if y is not None else None)


def replay_spec(data: Any, seed: int, kind: str) -> dict[str, Any]:
    """The JSON that names the replay examples (train sample) and the held-out old examples (val)."""
    from ..modalities import modality_of

    modality = modality_of(kind)
    digests = getattr(data, "digests", {})

    def item(s: Any) -> dict[str, Any]:
        return modality.replay_item(s, digests)

    return {
        "format": int(FORMAT),
        "kind": kind,
        "classes": list(data.classes),
        "multi_label": bool(getattr(data, "multi_label", False)),
        "fingerprint_sha256": getattr(data, "fingerprint", ""),
        "seed": seed,
        "train_total": len(data.train),
        "train": [item(s) for s in stratified_sample(list(data.train), MAX_REPLAY, seed)],
        "val": [item(s) for s in stratified_sample(list(data.val), MAX_EXAMPLES, seed)],
    }


def stratified_sample(samples: list[Any], limit: int, seed: int) -> list[Any]:
    """At most ``limit`` samples, each class keeping its share (largest remainders), seeded."""
    if len(samples) <= limit:
        return samples
    by_class: dict[str, list[Any]] = defaultdict(list)
    for s in samples:
        by_class[str(s.label)].append(s)
    rng = random.Random(seed)
    quota = {c: limit * len(v) / len(samples) for c, v in by_class.items()}
    take = {c: int(q) for c, q in quota.items()}
    for c in sorted(quota, key=lambda c: quota[c] - take[c], reverse=True)[: limit - sum(take.values())]:
        take[c] += 1
    out: list[Any] = []
    for c in sorted(by_class):
        items = list(by_class[c])
        rng.shuffle(items)
        out.extend(items[: take[c]])
    return out


def read_reference(bundle: Path) -> Reference:
    """The reference statistics of a bundle (trained by an sftune with this module)."""
    from safetensors import safe_open

    path = Path(bundle) / REFERENCE
    if not path.is_file():
        raise SftuneError(f"'{bundle}' has no {REFERENCE} (it was trained before drift statistics were stored); "
                          f"pass --reference OLD_DATA to compute them from the old data")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return Reference(tensors["features"], tensors["logits"], tensors["targets"], meta.get("classes", "").split("\n"),
                     meta.get("multi_label") == "true", meta.get("features_from", ""))


def read_replay(bundle: Path) -> dict[str, Any]:
    path = Path(bundle) / REPLAY
    if not path.is_file():
        raise SftuneError(f"'{bundle}' has no {REPLAY} (trained before replay samples were recorded); "
                          f"retrain it with this version of sftune (sftune train) to record one")
    return B.read_json(path)
