"""Model registry: bundles as numbered versions with metrics, data fingerprint and parent;
aliases (``champion``, ``challenger``); every change in an audit log.

The local store is a folder::

    registry.db            SQLite (WAL): versions, aliases, audit
    versions/<name>/<n>/   a copy of the registered bundle

Concurrency and crashes: a bundle is first copied into ``versions/.tmp-<random>/`` (slow,
no lock held), then one ``BEGIN IMMEDIATE`` transaction (one writer at a time; others wait up
to ``busy_timeout``) picks the next number, renames the copy into ``versions/<name>/<n>`` and
inserts the row and the audit entry; the commit comes after the rename. A crash before the
commit leaves a folder without a row (an orphan, ignored and removed by the next writer
holding the lock), never a row without files. Alias moves and their audit rows share one
transaction, so a promotion is all or nothing.

``open_registry("mlflow:<tracking uri>")`` gives the same interface over MLflow's model
registry (:mod:`sftune.continual.mlflow_registry`).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from .. import bundle as B
from ..errors import SftuneError

DB = "registry.db"
VERSIONS = "versions"
BUSY_TIMEOUT_S = 60.0
ALIASES = ("champion", "challenger")  # the ones the update loop uses; any name matching [a-z0-9_-]+ works
SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, source TEXT NOT NULL,
    metrics TEXT NOT NULL, fingerprint TEXT, parent TEXT, data TEXT, created TEXT NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, previous INTEGER,
    PRIMARY KEY (name, alias), FOREIGN KEY (name, version) REFERENCES versions (name, version));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    name TEXT NOT NULL, version INTEGER, detail TEXT NOT NULL);
"""


@dataclass
class ModelVersion:
    name: str
    version: int
    path: str  # the registry's copy of the bundle (local) or the version's source (MLflow)
    source: str  # where the bundle was registered from
    metrics: dict[str, Any]
    fingerprint: str | None
    parent: str | None  # "name/version" when the parent is registered here, else a path, else None
    data: str | None  # training data path recorded in lineage.json
    created: str
    aliases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry(Protocol):
    def register(self, bundle: str | Path, name: str, parent: str | None = None, alias: str | None = None,
                 note: str = "") -> ModelVersion: ...
    def get(self, name: str, ref: str | int) -> ModelVersion: ...
    def versions(self, name: str | None = None) -> list[ModelVersion]: ...
    def set_alias(self, name: str, alias: str, version: int, note: str = "") -> None: ...
    def rollback(self, name: str, alias: str = "champion", note: str = "") -> int: ...
    def audit(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...


def open_registry(spec: str | Path, create: bool = False) -> Registry:
    """``mlflow:<tracking uri>`` -> MLflow's model registry; anything else is a local folder, which
    must already hold a registry unless ``create`` (only registering makes one: a mistyped
    ``--registry`` must not leave an empty registry behind and report "no models")."""
    text = str(spec)
    if text.startswith("mlflow:"):
        from .mlflow_registry import MlflowRegistry

        return MlflowRegistry(text[len("mlflow:"):])
    root = Path(text).expanduser()
    if not create and not (root / DB).is_file():
        raise SftuneError(f"no registry at '{root}' ({DB} is missing); check --registry, or create one with "
                          f"sftune registry --registry {text} register BUNDLE --name NAME")
    return LocalRegistry(root)


def bundle_facts(bundle: Path) -> dict[str, Any]:
    """Metrics, data fingerprint, data path and parent path recorded in a bundle."""
    metrics = B.read_json(bundle / B.METRICS) if (bundle / B.METRICS).is_file() else {}
    headline = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    # A challenger of `sftune update`: its own val set is a split of new + replayed data, so its acc is not
    # comparable with its parent's; the gate's held-out old/new scores are (update.json).
    update = B.read_json(bundle / "update.json") if (bundle / "update.json").is_file() else {}
    for part, scores in ((update.get("scores") or {}).get("challenger") or {}).items():
        for key in ("acc", "f1"):
            if isinstance(scores.get(key), (int, float)):
                headline[f"held_out_{part}_{key}"] = scores[key]
    lineage = B.read_json(bundle / B.LINEAGE) if (bundle / B.LINEAGE).is_file() else {}
    data = lineage.get("data") or {}
    parent = (lineage.get("parent") or {}).get("path")
    return {"metrics": headline, "fingerprint": data.get("fingerprint_sha256"), "data": data.get("path"),
            "parent_path": parent}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return f"{user}@{os.uname().nodename}:{os.getpid()}"


class LocalRegistry:
    """A registry folder with a SQLite index; safe for concurrent writers on one machine/NFS-free disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / VERSIONS).mkdir(exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r})"

    # -------------------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / DB, timeout=BUSY_TIMEOUT_S, isolation_level=None)  # autocommit: we BEGIN
        db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=FULL")  # a committed promotion survives a power cut
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database's write lock from the start."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _log(self, db: sqlite3.Connection, action: str, name: str, version: int | None, **detail: Any) -> None:
        db.execute("INSERT INTO audit (time, actor, action, name, version, detail) VALUES (?, ?, ?, ?, ?, ?)",
                   (_now(), _actor(), action, name, version, json.dumps(detail, sort_keys=True)))

    def _row(self, db: sqlite3.Connection, row: sqlite3.Row) -> ModelVersion:
        aliases = [r["alias"] for r in db.execute("SELECT alias FROM aliases WHERE name=? AND version=? ORDER BY alias",
                                                  (row["name"], row["version"]))]
        return ModelVersion(row["name"], row["version"], row["path"], row["source"], json.loads(row["metrics"]),
                            row["fingerprint"], row["parent"], row["data"], row["created"], aliases)

    # -------------------------------------------------------------------------- writes

    def register(self, bundle: str | Path, name: str, parent: str | None = None, alias: str | None = None,
                 note: str = "") -> ModelVersion:
        """Copy ``bundle`` in as the next version of ``name``; optionally point ``alias`` at it."""
        _check_name(name)
        source = B.check_bundle(bundle).absolute()
        facts = bundle_facts(source)
        tmp = self.root / VERSIONS / f".tmp-{uuid.uuid4().hex}"
        # checkpoints/ are for continuing an interrupted run, never needed by a registered model.
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(B.CHECKPOINTS, ".*"))
        try:
            with self._write() as db:
                self._clean_orphans(db, name)
                version = 1 + (db.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()[0] or 0)
                final = self.root / VERSIONS / name / str(version)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)  # atomic; the row below is committed only after it
                parent = parent or self._parent_ref(db, facts["parent_path"])
                db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (name, version, str(final), str(source), json.dumps(facts["metrics"]), facts["fingerprint"],
                            parent, facts["data"], _now()))
                self._log(db, "register", name, version, source=str(source), parent=parent,
                          fingerprint=facts["fingerprint"], note=note)
                if alias:
                    self._set_alias(db, name, alias, version, note)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # only left when the transaction failed before the rename
        return self.get(name, version)

    def _parent_ref(self, db: sqlite3.Connection, parent_path: str | None) -> str | None:
        if not parent_path:
            return None
        row = db.execute("SELECT name, version FROM versions WHERE path=? OR source=? ORDER BY version DESC",
                         (parent_path, parent_path)).fetchone()
        return f"{row['name']}/{row['version']}" if row else parent_path

    def _clean_orphans(self, db: sqlite3.Connection, name: str) -> None:
        """Remove version folders without a row (a writer crashed between rename and commit).
        Safe only under the write lock: no other writer can be between its rename and commit."""
        folder = self.root / VERSIONS / name
        if not folder.is_dir():
            return
        known = {r[0] for r in db.execute("SELECT version FROM versions WHERE name=?", (name,))}
        for child in folder.iterdir():
            if child.name.isdigit() and int(child.name) not in known:
                shutil.rmtree(child, ignore_errors=True)
        stale = time.time() - 24 * 3600  # copies abandoned by crashed writers (a live copy is younger)
        for tmp in (self.root / VERSIONS).glob(".tmp-*"):
            if tmp.stat().st_mtime < stale:
                shutil.rmtree(tmp, ignore_errors=True)

    def set_alias(self, name: str, alias: str, version: int, note: str = "") -> None:
        """Point ``alias`` at ``version`` (promote); audited in the same transaction."""
        with self._write() as db:
            self._set_alias(db, name, alias, version, note)

    def _set_alias(self, db: sqlite3.Connection, name: str, alias: str, version: int, note: str,
                   action: str = "set_alias") -> None:
        _check_name(alias)
        if not db.execute("SELECT 1 FROM versions WHERE name=? AND version=?", (name, version)).fetchone():
            raise SftuneError(f"registry {self.root}: {name} has no version {version} "
                              f"(versions: {self._version_list(db, name)})")
        current = db.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
        previous = current[0] if current else None
        db.execute("INSERT INTO aliases (name, alias, version, previous) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (name, alias) DO UPDATE SET version=excluded.version, previous=excluded.previous",
                   (name, alias, version, previous))
        self._log(db, action, name, version, alias=alias, previous=previous, note=note)

    def remove_alias(self, name: str, alias: str, note: str = "") -> None:
        with self._write() as db:
            row = db.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            if row is None:
                raise SftuneError(f"{name} has no alias '{alias}'")
            db.execute("DELETE FROM aliases WHERE name=? AND alias=?", (name, alias))
            self._log(db, "remove_alias", name, row[0], alias=alias, note=note)

    def rollback(self, name: str, alias: str = "champion", note: str = "") -> int:
        """Point ``alias`` back at the version it held before its last move; returns that version."""
        with self._write() as db:
            row = db.execute("SELECT version, previous FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            if row is None or row["previous"] is None:
                raise SftuneError(f"{name}@{alias} has no earlier version to roll back to; "
                                  f"use `sftune registry promote {name} VERSION` to choose one")
            self._set_alias(db, name, alias, row["previous"], note, action="rollback")
            return int(row["previous"])

    # --------------------------------------------------------------------------- reads

    def _version_list(self, db: sqlite3.Connection, name: str) -> str:
        found = [str(r[0]) for r in db.execute("SELECT version FROM versions WHERE name=? ORDER BY version", (name,))]
        return ", ".join(found) or "none"

    def get(self, name: str, ref: str | int) -> ModelVersion:
        """A version by number or by alias."""
        db = self._connect()
        try:
            if isinstance(ref, int) or str(ref).isdigit():
                row = db.execute("SELECT * FROM versions WHERE name=? AND version=?", (name, int(ref))).fetchone()
            else:
                row = db.execute("SELECT v.* FROM versions v JOIN aliases a ON a.name=v.name AND a.version=v.version "
                                 "WHERE a.name=? AND a.alias=?", (name, str(ref))).fetchone()
            if row is None:
                names = [r[0] for r in db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]
                if name not in names:
                    raise SftuneError(f"registry {self.root} has no model '{name}' (models: {', '.join(names) or 'none'})")
                aliases = [f"{r[0]}->{r[1]}" for r in db.execute("SELECT alias, version FROM aliases WHERE name=?", (name,))]
                raise SftuneError(f"{name} has no version or alias '{ref}' (versions: {self._version_list(db, name)}; "
                                  f"aliases: {', '.join(aliases) or 'none'})")
            return self._row(db, row)
        finally:
            db.close()

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        db = self._connect()
        try:
            rows = db.execute("SELECT * FROM versions" + (" WHERE name=?" if name else "") + " ORDER BY name, version",
                              (name,) if name else ())
            return [self._row(db, r) for r in rows.fetchall()]
        finally:
            db.close()

    def audit(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        db = self._connect()
        try:
            rows = db.execute("SELECT * FROM audit" + (" WHERE name=?" if name else "") + " ORDER BY id DESC LIMIT ?",
                              ((name, limit) if name else (limit,))).fetchall()
            return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]
        finally:
            db.close()

    def check(self) -> dict[str, Any]:
        """Consistency report: SQLite integrity, rows without folders, folders without rows."""
        db = self._connect()
        try:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            rows = db.execute("SELECT name, version, path FROM versions").fetchall()
            missing = [f"{r['name']}/{r['version']}" for r in rows if not B.is_bundle(Path(r["path"]))]
            known = {(r["name"], r["version"]) for r in rows}
            dangling = [f"{r['name']}@{r['alias']}" for r in db.execute("SELECT name, alias, version FROM aliases")
                        if (r["name"], r["version"]) not in known]
        finally:
            db.close()
        orphans = [str(p.relative_to(self.root)) for p in (self.root / VERSIONS).glob("*/*")
                   if p.name.isdigit() and (p.parent.name, int(p.name)) not in known]
        orphans += [str(p.relative_to(self.root)) for p in (self.root / VERSIONS).glob(".tmp-*")]
        return {"integrity": integrity, "rows_without_files": missing, "dangling_aliases": dangling,
                "orphan_folders": orphans, "ok": integrity == "ok" and not missing and not dangling}


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name or ""):
        raise SftuneError(f"registry name '{name}' must be letters, digits, '_', '-', '.' (not starting with one)")


def parse_ref(text: str) -> tuple[str, str]:
    """``NAME`` (its champion), ``NAME@ALIAS`` or ``NAME/VERSION`` -> (name, alias or version)."""
    if "@" in text:
        name, ref = text.split("@", 1)
    elif "/" in text:
        name, ref = text.rsplit("/", 1)
    else:
        name, ref = text, "champion"
    if not name or not ref:
        raise SftuneError(f"'{text}' is not a registry reference; use NAME, NAME@ALIAS or NAME/VERSION")
    return name, ref
