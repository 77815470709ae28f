"""``sftune update``: re-fine-tune the champion on new data + replay; promote only through the gate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from . import output
from .registry_cmd import REGISTRY_HELP

EXIT_REFUSED = 4  # 0 = promoted (or gate passed without a registry), 4 = gate refused, 2 = input error


@click.command(name="update")
@click.argument("champion")
@click.option("--data", required=True, help="New labeled data (same forms as `sftune train --data`); its val/ "
                                             "(or a stratified split) is held out for the gate.")
@click.option("--registry", "spec", help=REGISTRY_HELP.replace(" [$SFTUNE_REGISTRY, else ./models]", "")
              + " With it, CHAMPION may be NAME, NAME@ALIAS or NAME/VERSION and the challenger is registered.")
@click.option("--name", help="Registry model name [from CHAMPION; else the champion folder's name].")
@click.option("--out", type=click.Path(file_okay=False), help="Challenger bundle folder [runs/update-<time>].")
@click.option("--metric", type=click.Choice(["acc", "f1", "precision", "recall"]), default="acc", show_default=True,
              help="Gate metric.")
@click.option("--min-gain", type=float, default=0.0, show_default=True,
              help="Challenger minus champion on held-out new data must be more than this (0.01 = 1 point; "
                   "at 0 a challenger that is only as good is not promoted).")
@click.option("--max-drop", type=float, default=0.02, show_default=True,
              help="Champion minus challenger on held-out old data may be at most this.")
@click.option("--replay-ratio", type=click.FloatRange(min=0),
              help="Old examples replayed per new training example [all of the champion's replay sample "
                   "(replay.json, at most 1,000)].")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Share of the new data held out when it has no val split.")
@click.option("--epochs", type=int, help="Maximum epochs [the champion's].")
@click.option("--strategy", help="Fine-tuning strategy [the champion's].")
@click.option("--lr", type=float, help="Learning rate [the champion's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any config key of the champion's config.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print scores, decision and registry changes as JSON.")
def update(champion: str, data: str, spec: str | None, name: str | None, out: str | None, metric: str,
           min_gain: float, max_drop: float, replay_ratio: float | None, val_fraction: float, epochs: int | None,
           strategy: str | None, lr: float | None, seed: int, sets: tuple[str, ...], no_progress: bool,
           as_json: bool) -> None:
    """Re-fine-tune CHAMPION on new data mixed with replayed old data; promote only if the gate passes.

    \b
    Champion and challenger are scored on held-out old data (the champion's
    validation set) and held-out new data. The gate passes when the challenger
    gains more than --min-gain on new data and loses at most --max-drop on old.
    With --registry the challenger is registered (alias challenger, parent = the
    champion) and, if the gate passes, becomes champion; the audit log records it.

    \b
    Exit status: 0 promoted (gate passed), 4 not promoted (gate refused), 2 input error.

    \b
    Examples:
      sftune update runs/ants --data new_photos/ --out runs/ants-2
      sftune update ants --registry models/ --data new_photos/ --max-drop 0.01 --json
    """
    from ..continual.gate import Gate
    from ..continual.registry import open_registry
    from ..bundle import is_bundle
    from ..continual.update import resolve_champion, run_update

    # A champion given by name must come from an existing registry; one given as a folder may start one.
    registry = open_registry(spec, create=is_bundle(Path(champion).expanduser())) if spec else None
    bundle, name, champion_ref = resolve_champion(champion, registry, name)
    overrides = {"train.epochs": epochs, "strategy.name": strategy, "train.lr": lr}
    if no_progress or as_json:  # the progress bar writes to stdout, which holds the JSON alone
        overrides["trainer.progress_bar"] = False
    log = (lambda m: click.echo(m, err=True)) if as_json else output.info  # JSON alone on stdout
    result = run_update(bundle, data, out or Path("runs") / time.strftime("update-%Y%m%d-%H%M%S"),
                        Gate(metric, min_gain, max_drop), registry, name, champion_ref, replay_ratio, val_fraction,
                        seed, overrides, list(sets), log)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from rich.table import Table

        table = Table(title=f"held-out {metric}: champion vs challenger")
        for col in ("data", "champion", "challenger", "change"):
            table.add_column(col, justify="left" if col == "data" else "right")
        for part in ("old", "new"):
            a, b = result.scores["champion"][part][metric], result.scores["challenger"][part][metric]
            n = int(result.scores["champion"][part].get("n", 0))
            table.add_row(f"{part} ({n})", f"{a:.4f}", f"{b:.4f}", f"{b - a:+.4f}")
        output.console.print(table)
        d = result.decision
        output.info(("PROMOTE: gate passed" if d.promote else "KEEP champion: " + "; ".join(d.reasons))
                    + f"  (challenger bundle: {result.challenger})")
    if not result.decision.promote:
        click.get_current_context().exit(EXIT_REFUSED)
