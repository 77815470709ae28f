"""``sftune registry``: register bundles as versions, aliases, promote, roll back, audit log."""

from __future__ import annotations

import json
from typing import Any

import click

from . import output

REGISTRY_HELP = ("Registry: a folder (SQLite index + bundle copies) or mlflow:<tracking uri> "
                 "[$SFTUNE_REGISTRY, else ./models].")


def _open(spec: str, create: bool = False):
    from ..continual.registry import open_registry

    return open_registry(spec, create=create)


def _registry_here(command: Any) -> Any:
    """``--registry`` also after the subcommand (``sftune registry list --registry models``), as
    ``drift`` and ``update`` take it; given in both places, the later one wins."""

    def use(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.obj = value

    return click.option("--registry", "registry_here", expose_value=False, callback=use,
                        help="The registry, as for `sftune registry --registry`.")(command)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(name="registry")
@click.option("--registry", "spec", envvar="SFTUNE_REGISTRY", default="models", show_default=True, help=REGISTRY_HELP)
@click.pass_context
def registry(ctx: click.Context, spec: str) -> None:
    """Model registry: versions with metrics, data fingerprint and parent; aliases; audit log.

    \b
    Examples:
      sftune registry register runs/ants --name ants --alias champion
      sftune registry list
      sftune registry show ants@champion
      sftune registry promote ants 2            # champion -> version 2
      sftune registry rollback ants             # champion -> where it pointed before its last move
      sftune registry log ants --json
      sftune registry --registry mlflow:http://mlflow:5000 list
    """
    ctx.obj = spec


@registry.command()
@_registry_here
@click.argument("bundle", type=click.Path())
@click.option("--name", help="Model name [the bundle folder's name].")
@click.option("--alias", help="Also point this alias (e.g. champion) at the new version.")
@click.option("--parent", help="Parent reference (NAME/VERSION or a path) [from lineage.json].")
@click.option("--note", default="", help="Free text kept in the audit log.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def register(spec: str, bundle: str, name: str | None, alias: str | None, parent: str | None, note: str,
             as_json: bool) -> None:
    """Copy a bundle into the registry as the next version of NAME."""
    from pathlib import Path

    version = _open(spec, create=True).register(bundle, name or Path(bundle).expanduser().absolute().name, parent,
                                                 alias, note)
    if as_json:
        _echo_json(version.to_dict())
    else:
        output.info(f"registered {version.name}/{version.version}"
                    + (f" as {alias}" if alias else "") + f": {version.path}")


@registry.command(name="list")
@_registry_here
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_cmd(spec: str, name: str | None, as_json: bool) -> None:
    """Registered versions (of NAME, or of every model)."""
    from rich.table import Table

    versions = _open(spec).versions(name)
    if as_json:
        _echo_json([v.to_dict() for v in versions])
        return
    table = Table(title=f"registry {spec}")
    updates = any("held_out_new_acc" in v.metrics for v in versions)
    columns = ["model", "version", "aliases", "val acc", "val f1"]
    columns += ["update: old / new acc (held out)"] if updates else []
    for col in (*columns, "parent", "fingerprint", "created"):
        table.add_column(col)

    def num(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) else ""

    for v in versions:
        row = [v.name, str(v.version), ", ".join(v.aliases), num(v.metrics.get("acc")), num(v.metrics.get("f1"))]
        if updates:  # the gate's scores: comparable between a challenger and its champion, unlike val acc
            old, new = v.metrics.get("held_out_old_acc"), v.metrics.get("held_out_new_acc")
            row.append(f"{num(old)} / {num(new)}" if new is not None else "")
        table.add_row(*row, v.parent or "", (v.fingerprint or "")[:12], v.created)
    output.console.print(table)
    if updates:
        output.info("val acc is each bundle's own validation set (an update's is a split of new + replayed data); "
                    "compare versions on the held-out columns or with sftune eval A B")


@registry.command()
@_registry_here
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(spec: str, ref: str, as_json: bool) -> None:
    """One version: REF is NAME (its champion), NAME@ALIAS or NAME/VERSION."""
    from ..continual.registry import parse_ref

    version = _open(spec).get(*parse_ref(ref))
    if as_json:
        _echo_json(version.to_dict())
        return
    for key, value in version.to_dict().items():
        output.info(f"{key:12} {json.dumps(value) if isinstance(value, (dict, list)) else value}")


@registry.command()
@_registry_here
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="champion", show_default=True)
@click.option("--note", default="", help="Free text kept in the audit log.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def promote(spec: str, name: str, version: int, alias: str, note: str, as_json: bool) -> None:
    """Point ALIAS (default champion) of NAME at VERSION."""
    _open(spec).set_alias(name, alias, version, note)
    if as_json:
        _echo_json({"name": name, "alias": alias, "version": version})
    else:
        output.info(f"{name}@{alias} -> version {version}")


@registry.command()
@_registry_here
@click.argument("name")
@click.option("--alias", default="champion", show_default=True)
@click.option("--note", default="", help="Free text kept in the audit log.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rollback(spec: str, name: str, alias: str, note: str, as_json: bool) -> None:
    """Point ALIAS back at the version it held before its last move."""
    version = _open(spec).rollback(name, alias, note)
    if as_json:
        _echo_json({"name": name, "alias": alias, "version": version})
    else:
        output.info(f"{name}@{alias} rolled back to version {version}")


@registry.command(name="log")
@_registry_here
@click.argument("name", required=False)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def log_cmd(spec: str, name: str | None, limit: int, as_json: bool) -> None:
    """The audit log, newest first: who changed what, when."""
    entries = _open(spec).audit(name, limit)
    if as_json:
        _echo_json(entries)
        return
    for e in entries:
        output.info(f"{e['time']}  {e['action']:12} {e['name']}/{e['version']}  {e['actor']}  {json.dumps(e['detail'])}")


@registry.command()
@_registry_here
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def check(spec: str, as_json: bool) -> None:
    """Consistency check of a local registry (exit 1 if inconsistent). Orphan folders left by a
    crash are harmless: the next write removes them."""
    from ..continual.registry import LocalRegistry
    from ..errors import SftuneError

    reg = _open(spec)
    if not isinstance(reg, LocalRegistry):
        raise SftuneError("check applies to local registry folders; MLflow keeps its own consistency")
    report = reg.check()
    if as_json:
        _echo_json(report)
    else:
        for key, value in report.items():
            output.info(f"{key:20} {value}")
    if not report["ok"]:
        click.get_current_context().exit(1)
