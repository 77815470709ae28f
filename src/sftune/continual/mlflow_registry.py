"""The registry interface over MLflow's model registry (``--registry mlflow:<tracking uri>``),
for teams that run an MLflow server. Needs ``pip install 'sftune[mlflow]'`` (mlflow-skinny).

Versions point at the bundle folder (``source``); metrics, data fingerprint and parent are
version tags (``sftune.metric.<k>``, ``sftune.fingerprint``, ``sftune.parent``); aliases are
MLflow aliases. MLflow keeps no audit log of alias moves, so each change is also appended to a
registered-model tag ``sftune.audit.<n>`` (JSON), which :meth:`audit` reads back; ``rollback``
uses the previous version recorded there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import bundle as B
from ..errors import SftuneError
from .registry import ModelVersion, _actor, _now, bundle_facts


class MlflowRegistry:
    def __init__(self, tracking_uri: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise SftuneError("--registry mlflow:... needs MLflow: pip install 'sftune[mlflow]' (mlflow-skinny)") from None
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.uri!r})"

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)

    def _log(self, name: str, action: str, version: int | None, **detail: Any) -> None:
        tags = self.client.get_registered_model(name).tags
        n = 1 + max([int(k.rsplit(".", 1)[1]) for k in tags if k.startswith("sftune.audit.")] or [0])
        entry = {"id": n, "time": _now(), "actor": _actor(), "action": action, "name": name, "version": version,
                 "detail": detail}
        self.client.set_registered_model_tag(name, f"sftune.audit.{n}", json.dumps(entry))

    def register(self, bundle: str | Path, name: str, parent: str | None = None, alias: str | None = None,
                 note: str = "") -> ModelVersion:
        source = B.check_bundle(bundle).absolute()
        facts = bundle_facts(source)
        self._ensure_model(name)
        tags = {f"sftune.metric.{k}": str(v) for k, v in facts["metrics"].items()}
        tags.update({"sftune.fingerprint": facts["fingerprint"] or "", "sftune.parent": parent or facts["parent_path"] or "",
                     "sftune.data": facts["data"] or ""})
        mv = self.client.create_model_version(name, source=str(source), tags=tags, description=note or None)
        self._log(name, "register", int(mv.version), source=str(source), parent=parent, note=note)
        if alias:
            self.set_alias(name, alias, int(mv.version), note)
        return self.get(name, int(mv.version))

    def _version(self, mv: Any) -> ModelVersion:
        tags = mv.tags or {}
        metrics = {k[len("sftune.metric."):]: float(v) for k, v in tags.items() if k.startswith("sftune.metric.")}
        return ModelVersion(mv.name, int(mv.version), mv.source, mv.source, metrics, tags.get("sftune.fingerprint") or None,
                            tags.get("sftune.parent") or None, tags.get("sftune.data") or None,
                            str(mv.creation_timestamp), sorted(getattr(mv, "aliases", []) or []))

    def get(self, name: str, ref: str | int) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            if isinstance(ref, int) or str(ref).isdigit():
                return self._version(self.client.get_model_version(name, str(ref)))
            return self._version(self.client.get_model_version_by_alias(name, str(ref)))
        except MlflowException as e:
            raise SftuneError(f"MLflow registry {self.uri}: {name} has no version or alias '{ref}' ({e.error_code})") from None

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name='{name}'" if name else "")
        return sorted((self._version(mv) for mv in found), key=lambda v: (v.name, v.version))

    def set_alias(self, name: str, alias: str, version: int, note: str = "", action: str = "set_alias") -> None:
        try:
            previous: int | None = self.get(name, alias).version
        except SftuneError:
            previous = None
        self.get(name, version)  # exists?
        self.client.set_registered_model_alias(name, alias, str(version))
        self._log(name, action, version, alias=alias, previous=previous, note=note)

    def rollback(self, name: str, alias: str = "champion", note: str = "") -> int:
        for entry in self.audit(name, 1000):
            if entry["action"] in ("set_alias", "rollback") and entry["detail"].get("alias") == alias:
                previous = entry["detail"].get("previous")
                if previous is None:
                    break
                self.set_alias(name, alias, int(previous), note, action="rollback")
                return int(previous)
        raise SftuneError(f"{name}@{alias} has no earlier version to roll back to")

    def audit(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        names = [name] if name else [m.name for m in self.client.search_registered_models()]
        entries = [json.loads(v) for n in names for k, v in self.client.get_registered_model(n).tags.items()
                   if k.startswith("sftune.audit.")]
        return sorted(entries, key=lambda e: (e["time"], e["id"]), reverse=True)[:limit]
