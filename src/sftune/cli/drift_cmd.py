"""``sftune drift``: has the data moved away from what the model was trained on?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from . import output

EXIT_DRIFT = 3  # 0 = no drift, 2 = input error, 1 = crash: a scheduler can tell "act" from "broken"
SMALL_SAMPLE = 30  # below this the tests see only large shifts (bench/drift_bench.py: power 0.84 at 50 for a prior shift)


@click.command(name="drift")
@click.argument("bundle", type=click.Path())
@click.option("--data", required=True, help="New data: labeled (class folders, CSV manifest, labeled text table) or "
                                             "unlabeled (a folder of images, a .txt file / text column).")
@click.option("--reference", "reference_data", help="Old data to compare with, instead of the statistics the bundle "
                                                    "stored at train time (reference.safetensors).")
@click.option("--decide-on", type=click.Choice(["features", "all"]), default="features", show_default=True,
              help="Tests that decide the verdict (and exit status); the others are reported as signals.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True,
              help="False-positive rate of the verdict (Bonferroni over the deciding tests: one by default, "
                   "all of them with --decide-on all).")
@click.option("--permutations", type=click.IntRange(min=99), default=1000, show_default=True,
              help="Permutations of the MMD feature test (p-value resolution 1/(n+1)).")
@click.option("--max-samples", type=click.IntRange(min=10), default=1000, show_default=True,
              help="New examples used at most (a seeded sample).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--text-column", help="Text: the column holding the texts [found as in training].")
@click.option("--registry", "spec", help="Registry (folder or mlflow:<uri>): BUNDLE may then be NAME (its champion), "
                                        "NAME@ALIAS or NAME/VERSION.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write a self-contained HTML report with plots.")
@click.option("--precision", type=click.Choice(["auto", "32", "bf16"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (machine-readable).")
def drift(bundle: str, data: str, reference_data: str | None, decide_on: str, alpha: float, permutations: int, max_samples: int,
          seed: int, text_column: Any, spec: str | None, html_path: str | None, precision: str, as_json: bool) -> None:
    """Test whether new data differs from the bundle's training data, in the model's feature space.

    \b
    Tests (each a p-value under "same distribution"). The verdict comes from
    --decide-on (default: the feature test; "all": any test, Bonferroni-corrected);
    the others are signals (their fixed validation-set reference is small, which
    inflates their false-positive rate when reused for every check):
      features           MMD^2 (RBF kernel, median-heuristic bandwidth) on pooled
                         backbone features, permutation p-value
      predicted_classes  chi-square on predicted-class counts   (label-free)
      confidence         KS test on top-class probability       (label-free)
      accuracy           one-sided Fisher test of an accuracy drop, per-class drops
                         (only when the new data is labeled)

    \b
    Exit status: 0 no drift, 3 drift detected, 2 input error.

    \b
    Examples:
      sftune drift runs/ants --data new_photos/ --html drift.html
      sftune drift ants --registry models/ --data new_photos/ --json
    """
    from ..continual.check import check_drift, write_drift_report
    from ..continual.html import summary_lines

    from ..bundle import is_bundle

    shown = bundle  # as the user named it (NAME@ALIAS), not the registry's copy path
    if spec and not is_bundle(Path(bundle).expanduser()):
        from ..continual.registry import open_registry, parse_ref

        bundle = open_registry(spec).get(*parse_ref(bundle)).path
    check = check_drift(bundle, data, reference_data, alpha, permutations, max_samples, seed, text_column,
                        keep_null=html_path is not None, precision=precision,
                        decide_on=("features",) if decide_on == "features" else "all")
    result = check.result
    if html_path:
        title = f"drift: {shown} vs {data}" + (f" (reference rows from {check.reference.features_from})"
                                                if check.reference.features_from else "")
        write_drift_report(check, html_path, title)
    if as_json:
        payload = {"bundle": bundle, "data": data, **result.to_dict(), "reference_from": check.reference.features_from,
                   "html": html_path}
        for t in payload["tests"].values():
            t.get("detail", {}).pop("null", None)
        click.echo(json.dumps(payload, indent=2))
    else:
        from rich.table import Table

        source = f" from {check.reference.features_from}" if check.reference.features_from else ""
        table = Table(title=f"drift: {shown} vs {data} (reference {result.reference_size}{source}, new {result.new_size}"
                            f"{', labeled' if result.labeled else ''})")
        for col in ("test", "statistic", "p-value", "corrected p", ""):
            table.add_column(col, justify="left" if col in ("test", "") else "right")
        for row in summary_lines(result):
            table.add_row(row["test"], f"{row['statistic']:.4g}", f"{row['p']:.3g}", f"{row['p_corrected']:.3g}",
                          row["mark"].upper() if row["flagged"] else row["mark"])
        output.console.print(table)
        acc = result.test("accuracy")
        if acc is not None:
            output.info(f"accuracy: reference {acc.detail['reference_acc']:.3f} -> new {acc.detail['new_acc']:.3f}")
        output.info(("DRIFT detected" if result.drift else "no drift") + f" at alpha={alpha}"
                    + (f"; report: {html_path}" if html_path else ""))
        if result.new_size < SMALL_SAMPLE:
            output.info(f"warning: only {result.new_size} new examples; a test this small misses all but large shifts "
                        f"(use {SMALL_SAMPLE} or more)")
    if result.drift:
        click.get_current_context().exit(EXIT_DRIFT)
