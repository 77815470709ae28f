"""The Python API of drift checks, gated updates and the model registry: what ``sftune drift``,
``sftune update`` and ``sftune registry`` do, as functions with typed results (re-exported as
``sftune.drift``, ``sftune.update`` and ``sftune.Registry``). Imports stay inside the functions:
``import sftune`` must not pay for torch, Lightning or SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .drift import DriftResult
    from .registry import Registry as RegistryProtocol
    from .update import UpdateResult


def Registry(location: str | Path = "models", create: bool = False) -> "RegistryProtocol":  # noqa: N802 (a factory)
    """Open the model registry at ``location``: a folder (SQLite index + copied bundles, safe for
    concurrent writers on one machine) or ``mlflow:<tracking uri>`` (MLflow's model registry).

    ``create``: make the folder registry if it does not exist yet (the CLI creates one only when
    registering, so that a mistyped path never leaves an empty registry behind).
    The result has ``register(bundle, name, parent=None, alias=None, note="")``, ``get(name, ref)``
    (``ref`` = a version number or an alias such as ``"champion"``), ``versions(name=None)``,
    ``set_alias(name, alias, version)``, ``rollback(name, alias="champion")`` and ``audit(name=None)``;
    versions are :class:`~sftune.continual.registry.ModelVersion` (name, version, path, metrics,
    fingerprint, parent, aliases).

    Raises ``SftuneError`` when ``location`` holds no registry and ``create`` is False.
    """
    from .registry import open_registry

    return open_registry(location, create=create)


def _bundle_path(bundle: str | Path, registry: "str | Path | RegistryProtocol | None") -> Path:
    """A bundle folder as given, or ``NAME``/``NAME@ALIAS``/``NAME/VERSION`` looked up in ``registry``."""
    from ..bundle import is_bundle
    from .registry import parse_ref

    path = Path(bundle).expanduser()
    if registry is None or is_bundle(path):
        return path
    reg = Registry(registry) if isinstance(registry, (str, Path)) else registry
    return Path(reg.get(*parse_ref(str(bundle))).path)


def drift(bundle: str | Path, data: str | Path, *, reference: str | Path | None = None, alpha: float = 0.05,
          decide_on: Literal["features", "all"] = "features", permutations: int = 1000, max_samples: int = 1000,
          seed: int = 0, text_column: str | None = None, registry: "str | Path | RegistryProtocol | None" = None,
          html: str | Path | None = None, precision: str = "auto") -> "DriftResult":
    """Has ``data`` moved away from what ``bundle`` was trained on? (``sftune drift``)

    ``bundle``: a bundle folder, or with ``registry`` a name (its champion), ``NAME@ALIAS`` or
    ``NAME/VERSION``. ``data``: new examples, labeled or not. ``reference``: old data to compare
    with instead of the statistics stored in the bundle at train time. The verdict
    (``result.drift``) comes from the MMD^2 test on pooled backbone features (permutation p-value;
    Gretton et al. 2012), or from every test with ``decide_on="all"`` (Bonferroni-corrected at
    ``alpha``); ``result.tests`` holds each test's statistic and p-value, ``result.to_dict()`` the
    JSON of ``sftune drift --json``. ``html``: also write the HTML report there.

    Raises ``SftuneError`` for a bundle whose task has no drift check (e.g. detection), or data it cannot read.
    """
    from .check import check_drift, write_drift_report

    if decide_on not in ("features", "all"):
        from ..errors import SftuneError

        raise SftuneError(f"drift: decide_on must be 'features' or 'all', got {decide_on!r}")
    path = _bundle_path(bundle, registry)
    check = check_drift(path, data, reference, alpha, permutations, max_samples, seed, text_column,
                        keep_null=html is not None, precision=precision,
                        decide_on=("features",) if decide_on == "features" else "all")
    if html is not None:
        write_drift_report(check, html, f"drift: {bundle} vs {data}")
    return check.result


def update(champion: str | Path, data: str | Path, *, out: str | Path | None = None,
           registry: "str | Path | RegistryProtocol | None" = None, name: str | None = None, metric: str = "acc",
           min_gain: float = 0.0, max_drop: float = 0.02, replay_ratio: float | None = None,
           val_fraction: float = 0.2, seed: int = 0, epochs: int | None = None, strategy: str | None = None,
           lr: float | None = None, progress_bar: bool = False, **overrides: Any) -> "UpdateResult":
    """Re-fine-tune ``champion`` on new labeled ``data`` mixed with replayed old examples, score
    champion and challenger on held-out old and new data, and promote the challenger only if the
    gate passes (``sftune update``).

    Gate: challenger - champion on held-out new data > ``min_gain`` and champion - challenger on
    held-out old data <= ``max_drop`` (both in ``metric`` units: 0.01 = 1 point of accuracy).
    With ``registry`` (a location or an opened :func:`Registry`), ``champion`` may be a name,
    ``NAME@ALIAS`` or ``NAME/VERSION``; the challenger is registered (alias ``challenger``, parent =
    the champion) and becomes ``champion`` when the gate passes. ``overrides``: config keys with
    ``__`` for dots, as :func:`sftune.finetune` takes them (``train__batch_size=16``).
    Returns an :class:`~sftune.continual.update.UpdateResult`: ``promoted`` via
    ``result.decision.promote``, the reasons, the scores and the challenger's folder.

    Raises ``SftuneError`` when the champion is not a continual bundle (e.g. detection), or the data
    cannot be read.
    """
    import time

    from ..bundle import is_bundle
    from .gate import Gate
    from .update import resolve_champion, run_update

    reg = Registry(registry, create=is_bundle(Path(champion).expanduser())) if isinstance(registry, (str, Path)) \
        else registry
    bundle, name, champion_ref = resolve_champion(champion, reg, name)
    flat: dict[str, Any] = {"train.epochs": epochs, "strategy.name": strategy, "train.lr": lr,
                            "trainer.progress_bar": progress_bar}
    flat.update({k.replace("__", "."): v for k, v in overrides.items()})
    return run_update(bundle, data, out or Path("runs") / time.strftime("update-%Y%m%d-%H%M%S"),
                      Gate(metric, min_gain, max_drop), reg, name, champion_ref, replay_ratio, val_fraction, seed,
                      flat, [], print)
