"""The update loop: fit -> evaluate -> gate -> promote.

1. **fit**: the champion's own config, starting from its weights (``model.name = file:<champion>``),
   on the new data's training part mixed with a replay sample of the old training data
   (named in the champion's ``replay.json``), so it keeps what it knew.
2. **evaluate**: champion and challenger on held-out *old* data (the champion's validation set)
   and held-out *new* data (a stratified split of the new data neither model trained on).
3. **gate**: :class:`~sftune.continual.gate.Gate` (better on new, at most ``max_drop`` worse on old).
4. **promote**: with a registry, the challenger is registered (alias ``challenger``, parent = the
   champion's version) and, if the gate passed, ``champion`` moves to it in one transaction.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import bundle as B
from ..errors import SftuneError
from .gate import Decision, Gate
from .reference import read_replay, stratified_sample

UPDATE = "update.json"  # written into the challenger bundle: data, replay, scores, decision


@dataclass
class UpdateResult:
    champion: str  # bundle path of the champion
    challenger: Path
    scores: dict[str, dict[str, dict[str, float]]]  # {"champion"|"challenger": {"old"|"new": metrics}}
    decision: Decision
    data: dict[str, Any]
    registry: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"champion": self.champion, "challenger": str(self.challenger), "promoted": self.decision.promote,
                "decision": self.decision.to_dict(), "scores": self.scores, "data": self.data,
                "registry": self.registry}


def resolve_champion(champion: str | Path, registry: Any, name: str | None) -> tuple[Path, str | None, str | None]:
    """(bundle folder, registry model name, "name/version" of the champion in ``registry``) for a
    champion given as a bundle folder or, with a registry, as ``NAME``/``NAME@ALIAS``/``NAME/VERSION``.
    Raises ``SftuneError`` for a reference without a registry."""
    from .registry import parse_ref

    bundle = Path(champion).expanduser()
    if registry is not None and not B.is_bundle(bundle):
        ref_name, ref = parse_ref(str(champion))
        version = registry.get(ref_name, ref)
        return Path(version.path), name or ref_name, f"{ref_name}/{version.version}"
    if registry is not None:
        name = name or bundle.absolute().name
        match = [v for v in registry.versions(name) if Path(v.path) == bundle.absolute()]
        return bundle, name, f"{name}/{match[0].version}" if match else None
    if not B.is_bundle(bundle):
        raise SftuneError(f"champion '{champion}' is not a bundle folder; a registry reference needs a registry "
                          f"(--registry, or registry= in Python)")
    return bundle, name, None


def run_update(champion: str | Path, new_data: str | Path, out: str | Path, gate: Gate | None = None,
               registry: Any = None, name: str | None = None, champion_ref: str | None = None,
               replay_ratio: float | None = None, val_fraction: float = 0.2, seed: int = 0,
               overrides: dict[str, Any] | None = None, sets: list[str] | None = None,
               log: Callable[[str], None] = print) -> UpdateResult:
    """Fine-tune ``champion`` on ``new_data`` + replay, evaluate both, gate, promote in ``registry``.

    ``replay_ratio``: old examples per new training example; None replays the champion's whole replay
    sample (at most 1,000 examples, the best guard against forgetting when the head is refitted).
    ``champion_ref``: the champion's "name/version" in ``registry`` (its challenger's parent).
    """
    from ..config import build_config, load_yaml
    from ..engine import run_training

    from ..predictor import require_continual

    gate = gate or Gate()
    champion = B.check_bundle(champion).absolute()
    require_continual(champion, "update")
    spec = read_replay(champion)
    if spec.get("multi_label"):
        raise SftuneError("update supports single-label models for now; retrain multi-label models with sftune train")
    old_config = load_yaml(champion / B.CONFIG)
    classes: list[str] = spec["classes"]
    from ..modalities import modality_of

    modality = modality_of(spec["kind"])
    new_train, new_val, fingerprint = modality.split_new(Path(new_data).expanduser(), old_config, val_fraction, seed)
    unknown = sorted({s.label for s in new_train + new_val} - set(classes))
    if unknown:
        raise SftuneError(f"new data has classes the champion does not know: {', '.join(unknown)}; update keeps the "
                          f"class set ({', '.join(classes)}): train a new model for new classes")
    replay_pool = modality.replay_samples(spec["train"], log)
    old_val = modality.replay_samples(spec["val"], log)
    if not old_val:
        raise SftuneError(f"none of the champion's held-out examples in {champion / 'replay.json'} can be read; "
                          f"the old data has moved or changed")
    n_replay = len(replay_pool) if replay_ratio is None else min(len(replay_pool), round(replay_ratio * len(new_train)))
    replay = stratified_sample(replay_pool, n_replay, seed)
    log(f"update: {len(new_train)} new training examples + {len(replay)} replayed old ones; held out: "
        f"{len(new_val)} new, {len(old_val)} old")

    with tempfile.TemporaryDirectory(prefix="sftune-update-") as tmp:
        data_path, read_with = modality.write_training_data(Path(tmp), new_train + replay)
        tree = {k: v for k, v in old_config.items()}
        tree["model"] = {**tree.get("model", {}), "name": f"file:{champion}"}
        tree["data"] = {**tree.get("data", {}), "path": str(data_path), "val_path": None, **read_with}
        tree.setdefault("train", {})["seed"] = seed
        from ..config import DataConfig

        if "allow_outside_root" in DataConfig.model_fields:  # our own manifest names the user's files where they are
            tree["data"]["allow_outside_root"] = True
        config = build_config(base=tree, overrides=overrides, sets=sets)
        result = run_training(config, out, overwrite=False, log=log)
        challenger = result.path
        kept = challenger / "update"  # the training manifest lives on with the bundle (lineage points at it)
        kept.mkdir(exist_ok=True)
        for f in Path(tmp).iterdir():
            shutil.copy(f, kept / f.name)

    scores = {"champion": {}, "challenger": {}}
    for role, bundle in (("champion", champion), ("challenger", challenger)):
        model = _load(bundle)
        scores[role]["old"] = _score(model, old_val, modality)
        scores[role]["new"] = _score(model, new_val, modality)
    decision = gate.decide(scores["champion"], scores["challenger"])
    data_info = {"new": str(Path(new_data).expanduser().absolute()), "new_fingerprint_sha256": fingerprint,
                 "new_train": len(new_train), "new_held_out": len(new_val), "replay": len(replay),
                 "old_held_out": len(old_val)}
    update = {"parent": {"path": str(champion), "registry": champion_ref}, "data": data_info, "scores": scores,
              "decision": decision.to_dict()}
    lineage = B.read_json(challenger / B.LINEAGE)
    lineage["data"]["path"] = str(kept / data_path.name)
    lineage["update"] = update
    B.atomic_write_json(challenger / B.LINEAGE, lineage)
    B.atomic_write_json(challenger / UPDATE, update)

    reg_info: dict[str, Any] = {}
    if registry is not None and name:
        note = "; ".join(decision.reasons) or f"gate passed ({gate.metric} {decision.gain_new:+.4f} new, " \
                                                f"{-decision.drop_old:+.4f} old)"
        version = registry.register(challenger, name, parent=champion_ref, alias="challenger", note=note)
        reg_info = {"name": name, "version": version.version, "parent": champion_ref}
        if decision.promote:
            registry.set_alias(name, "champion", version.version, note=f"update: {note}")
            reg_info["champion"] = version.version
        log(f"registry: {name}/{version.version} registered as challenger"
            + (" and promoted to champion" if decision.promote else "; champion unchanged"))
    return UpdateResult(str(champion), challenger, scores, decision, data_info, reg_info)


# ------------------------------------------------------------------------------- scoring


def _load(bundle: Path) -> Any:
    from ..predictor import load

    return load(bundle)


def _score(model: Any, samples: list[Any], modality: Any) -> dict[str, float]:
    """Headline metrics of ``model`` on labeled samples (the predictors' inference loops)."""
    from ..eval import evaluate_logits

    metrics = evaluate_logits(modality.scored_batches(model, samples), len(model.classes))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
