"""``sftune`` command line: train, lr-find, eval, predict, models, strategies, demo, and the
continual loop (drift, update, registry: cli/drift_cmd.py, update_cmd.py, registry_cmd.py).

Errors the user can fix print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import SftuneError
from . import output


class _Group(click.Group):
    """Turns SftuneError into a one-line message and exit status 2 for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SftuneError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt as e:  # training raises RunInterrupted, whose message names the checkpoint
            click.echo(str(e) or "interrupted; an unfinished run continues with: sftune train --out <dir> --resume",
                       err=True)
            ctx.exit(130)
        except RuntimeError as e:
            import torch

            if not isinstance(e, torch.OutOfMemoryError):
                raise
            # Training itself retries with smaller steps (resilience.py); elsewhere (features, eval) say what to do.
            click.echo("error: out of accelerator memory; lower --batch-size (or --image-size / --max-length), "
                       "or use --precision bf16-mixed", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sftune")
def cli() -> None:
    """Fine-tune pretrained models on your labeled data, offline.

    \b
    Quick start:
      sftune demo                                     # digits, offline EfficientNet-Lite0
      sftune train --data photos/ --out runs/mine     # photos/<class>/*.jpg or photos/train|val/<class>/
      sftune eval runs/mine --data photos/val         # metrics, intervals, report.html
      sftune predict runs/mine some.jpg more_images/ --top-k 3

    \b
    Over time:
      sftune registry register runs/mine --name mine --alias champion
      sftune drift mine --registry models --data new_photos/    # exit 3 when the data moved
      sftune update mine --registry models --data new_photos/   # promoted only if the gate passes
    """


class TaskName(click.ParamType):
    """--task: ``auto`` or a registered task; the names come from the task registry (tasks/), read
    only when help is shown or the flag is given, so `sftune --help` stays fast."""

    name = "task"

    @staticmethod
    def choices() -> list[str]:
        from ..tasks import TASKS

        return ["auto", *TASKS.list()]

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        return "[" + "|".join(self.choices()) + "]"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        if value not in self.choices():
            self.fail(f"{value!r} is not one of {', '.join(self.choices())}", param, ctx)
        return value


def _devices(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


# Flags shared by `train` and `lr-find`, and the config key each one sets.
RUN_FLAGS = {
    "data": "data.path", "val_data": "data.val_path", "task": "task.name", "model": "model.name", "arch": "model.arch",
    "strategy": "strategy.name", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
    "optimizer": "train.optimizer", "schedule": "train.schedule",
    "patience": "train.patience", "image_size": "data.image_size", "seed": "train.seed",
    "workers": "data.num_workers", "strict": "data.strict", "text_column": "data.text_column",
    "text_pair_column": "data.text_pair_column", "label_column": "data.label_column", "multi_label": "data.multi_label",
    "max_length": "data.max_length", "precision": "trainer.precision",
    "accelerator": "trainer.accelerator", "devices": "trainer.devices", "num_nodes": "trainer.num_nodes",
    "distributed": "trainer.distributed",
}


def _column(value: str | None) -> str | int | None:
    """A column name, or a 0-based index for headerless files."""
    return int(value) if value is not None and value.isdigit() else value


LONG_TEXTS_HELP = ("Text: texts longer than the model's max length are cut (truncate, default) or read as "
                   "overlapping windows whose scores are averaged (windows; single texts).")


def column_options(command: Any, label: bool = True) -> Any:
    """``--text-column``/``--text-pair-column`` (and ``--label-column``) of ``eval`` and ``predict``:
    the names train has, found as train finds them when not given."""
    options = [
        click.option("--text-column", "--column", "column", callback=lambda c, p, v: _column(v),
                     help="Text: column with the text [the training column if present, else text, sentence, ...]; "
                          "a number for headerless files."),
        click.option("--text-pair-column", callback=lambda c, p, v: _column(v),
                     help="Text: second text of sentence pairs [the training column, else sentence2, hypothesis]."),
        *([click.option("--label-column", callback=lambda c, p, v: _column(v),
                        help="Text: column with the label(s) [the training column if present, else label, ...].")]
          if label else []),
        click.option("--long-texts", type=click.Choice(["truncate", "windows"]), help=LONG_TEXTS_HELP),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def run_options(command: Any) -> Any:
    """The options that describe a run (data, model, strategy, training, hardware)."""
    options = [
        click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False), help="YAML config; flags and --set override it."),
        click.option("--data", help="Images: folder (train/[val/] or <class>/*) or CSV of path,label. "
                                    "Text: CSV/TSV/JSONL/Parquet file, folder with train/val files, or a saved HF dataset. "
                                    "Audio: folder (train/[val|test/] or <class>/*, or any folder with data.label_pattern) "
                                    "or CSV of path,label[,split][,group]."),
        click.option("--val-data", help="Separate validation data (default: val/ or a val file beside the data, else a stratified split)."),
        click.option("--task", type=TaskName(),
                     help="Default auto: detected from --model and --data (a text table: text; image/mask pairs: "
                          "segmentation; else image classification). See `sftune tasks`."),
        click.option("--model", help="Images: efficientnet_lite0 (default), timm:<name>, file:<path>. "
                                     "Text: minilm (default), hf:<name or folder>. See `sftune models`."),
        click.option("--arch", help="timm architecture of a file:<state dict> (e.g. resnet18)."),
        click.option("--strategy", help="linear_probe (default), full, freeze_unfreeze, gradual_unfreeze, llrd, bitfit, "
                                        "lp_ft, lora, wise_ft, auto. See `sftune strategies`."),
        click.option("--epochs", type=int, help="Maximum epochs [10]."),
        click.option("--batch-size", type=int, help="Examples per step per device [32]."),
        click.option("--lr", type=float, help="Head learning rate [strategy default; x10 for sgd]."),
        click.option("--optimizer", help="Any timm optimizer: adamw (default), sgd, lamb, lion, ..."),
        click.option("--schedule", type=click.Choice(["cosine", "onecycle", "constant"]), help="LR schedule [cosine]."),
        click.option("--patience", type=int, help="Early-stopping patience in epochs, 0 = off [5]."),
        click.option("--image-size", type=int, help="Images: input size in px [the backbone's pretrained size]."),
        click.option("--text-column", callback=lambda c, p, v: _column(v), help="Text: column with the text [text, sentence, ...]; a number for headerless files."),
        click.option("--text-pair-column", callback=lambda c, p, v: _column(v), help="Text: second text of sentence pairs [sentence2, hypothesis]."),
        click.option("--label-column", callback=lambda c, p, v: _column(v), help="Text: column with the label(s) [label, labels, category, ...]."),
        click.option("--multi-label", is_flag=True, default=None, help="Text: several labels per example (BCE loss, per-class thresholds)."),
        click.option("--max-length", type=int, help="Text: tokens per example after truncation [128]."),
        click.option("--seed", type=int, help="Random seed; the same seed gives the same metrics on CPU [42]."),
        click.option("--workers", type=int, help="DataLoader worker processes [min(4, cores); text: 0]."),
        click.option("--strict", is_flag=True, default=None, help="Fail on unreadable or unused files, train/val "
                     "duplicates (images and texts), label spelling variants and other data warnings instead of "
                     "skipping/warning."),
        click.option("--precision", help="Training precision: auto (default: bf16-mixed on a capable GPU, and for text "
                     "transformers on a CPU with native bf16; else 32-true), 32-true, bf16-mixed, 16-mixed."),
        click.option("--accelerator", help="cpu, gpu, mps or auto (default)."),
        click.option("--devices", help="Devices per node: a number or auto."),
        click.option("--num-nodes", type=int, help="Machines taking part (multi-node under torchrun/SLURM)."),
        click.option("--distributed", help="Multi-device mode passed to Lightning: auto, ddp, ddp_spawn, fsdp."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any config key, e.g. --set train.lr=1e-3 (repeatable)."),
        click.option("--no-progress", is_flag=True, help="No progress bar (for logs and CI)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run_config(config_file: str | None, sets: tuple[str, ...], no_progress: bool, flags: dict[str, Any]):
    from ..config import build_config

    flags["devices"] = _devices(flags.get("devices"))
    overrides = {RUN_FLAGS[k]: v for k, v in flags.items()}
    if no_progress:
        overrides["trainer.progress_bar"] = False
    return build_config(file=config_file, overrides=overrides, sets=list(sets))


@cli.command()
@run_options
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (the bundle) [runs/run-<time>].")
@click.option("--resume", is_flag=True, help="Continue the unfinished run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out when this run finishes.")
@click.option("--trust-pickle", is_flag=True, help="Allow a file:<.pth/.pt/.bin> backbone to be fully unpickled "
              "(runs any code inside it; default: tensors only, weights_only=True). Only for files you trust.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON.")
@click.option("--profile", is_flag=True, help="Print where the run's seconds went, stage by stage (start-up and "
              "imports, data, feature pass, training, evaluation, report, drift reference, bundle); with --json "
              "they are in its \"profile\" key.")
def train(config_file: str | None, sets: tuple[str, ...], out: str | None, resume: bool, overwrite: bool,
          trust_pickle: bool, no_progress: bool, as_json: bool, profile: bool, **flags: Any) -> None:
    """Fine-tune a pretrained model and write a bundle.

    \b
    The bundle (--out) holds config.yaml, model.safetensors, labels.json,
    metrics.json, lineage.json, logs/ and checkpoints/ (text: encoder/ with the
    tokenizer; lora: adapters.safetensors). It is written to a hidden
    .<name>.partial folder first and renamed when complete.

    \b
    Examples:
      sftune train --data hymenoptera_data --model efficientnet_lite0 --strategy linear_probe --out runs/ants
      sftune train --data SST-2/train.tsv --val-data SST-2/dev.tsv --strategy full --epochs 3 --out runs/sst2
      sftune train --data recordings --set data.label_pattern='^(\\d+)_' --out runs/digits
      sftune train -c my.yaml --set train.epochs=20 --set strategy.unfreeze_epoch=5
      sftune train --out runs/ants --resume
    """
    import time

    from ..profiling import seconds_since_process_start

    startup = seconds_since_process_start()  # interpreter, click and the CLI, before the engine's imports
    imports_started = time.perf_counter()
    from ..engine import run_training
    from .. import default_out_dir

    imports = time.perf_counter() - imports_started
    if resume and not out:
        raise SftuneError("--resume needs --out: the folder of the run to continue")
    # --json: stdout holds the JSON document alone; progress bar off, info lines to stderr.
    cfg = _run_config(config_file, sets, no_progress or as_json, flags)
    from ..trust import trusting_pickles

    with trusting_pickles(trust_pickle):
        result = run_training(cfg, out or default_out_dir(), resume=resume, overwrite=overwrite,
                              log=output.info_err if as_json else output.info)
    if not result.metrics:
        return  # a non-zero-rank process of a distributed run
    stages = {**({"start-up (python, CLI)": round(startup, 3)} if startup is not None else {}),
              "imports (engine: torch, lightning, timm)": round(imports, 3), **result.stages}
    if as_json:
        extra = {"profile": stages} if profile else {}
        click.echo(json.dumps({"bundle": str(result.path), **{k: v for k, v in result.metrics.items() if k != "history"},
                               **extra}, indent=2))
    else:
        output.run_summary(result.path, result.metrics, title=f"validation metrics ({_epoch_title(result.metrics)})")
        output.info(f"bundle: {result.path}  ({result.seconds:.0f} s)")
    if profile:
        output.profile_table(stages, log=output.info_err if as_json else output.info)


@cli.command(name="lr-find")
@run_options
@click.option("--plot", type=click.Path(dir_okay=False), default="lr_find.png", show_default=True,
              help="Where the loss-vs-LR plot is written (PNG).")
@click.option("--min-lr", type=float, default=1e-6, show_default=True)
@click.option("--max-lr", type=float, default=1.0, show_default=True)
@click.option("--steps", type=click.IntRange(min=10), default=100, show_default=True, help="Optimizer steps of the test.")
@click.option("--json", "as_json", is_flag=True, help="Print the suggestion and the curve as JSON.")
@click.option("--trust-pickle", is_flag=True, help="Allow a file:<.pth/.pt/.bin> backbone to be fully unpickled (runs code).")
def lr_find(config_file: str | None, sets: tuple[str, ...], no_progress: bool, plot: str, min_lr: float, max_lr: float,
            steps: int, as_json: bool, trust_pickle: bool, **flags: Any) -> None:
    """Learning-rate range test: suggest train.lr for this data, model and strategy.

    \b
    The LR grows from --min-lr to --max-lr over --steps steps; the suggestion is
    where the loss falls fastest. Nothing is saved but the plot.

    \b
    Example:
      sftune lr-find --data hymenoptera_data --strategy full --plot lr.png
      sftune train --data hymenoptera_data --strategy full --lr <suggested>
    """
    from ..lr_find import find_lr

    cfg = _run_config(config_file, sets, no_progress, flags)
    from ..trust import trusting_pickles

    with trusting_pickles(trust_pickle):
        result = find_lr(cfg, plot=plot, min_lr=min_lr, max_lr=max_lr, steps=steps, log=output.info)
    if as_json:
        click.echo(json.dumps({"suggested_lr": result.suggestion, "strategy": result.strategy, "plot": str(result.plot),
                               "lr": result.lrs, "loss": result.losses}, indent=2))
        return
    if result.suggestion is None:
        output.info("lr-find: too few points for a suggestion; raise --steps or use more data")
    else:
        output.info(f"suggested lr: {result.suggestion:.3g}  (strategy {result.strategy}; "
                    f"use --lr {result.suggestion:.3g}); plot: {result.plot}")


@cli.command(name="eval")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(), metavar="BUNDLE [BUNDLE_B]")
@click.option("--data", required=True, help="Images: a <class>/* folder, a train/val root (its val/ is used) or a CSV. "
                                             "Text: a table file, a folder's val/dev file, or a saved HF dataset's validation split. "
                                             "Audio: as training reads it (the bundle's data.label_pattern and data.val_pattern apply).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for report.html and report.json [BUNDLE/reports/<data name>; two bundles: "
                   "BUNDLE/reports/<data name>-vs-<BUNDLE_B name>].")
@click.option("--no-report", is_flag=True, help="Metrics only: write no report files.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals (0 = none).")
@click.option("--mistakes", type=click.IntRange(min=0), default=24, show_default=True,
              help="Most confident mistakes shown in the report.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--strict", is_flag=True, help="Fail on unreadable images instead of skipping them.")
@click.option("--precision", type=click.Choice(["auto", "32", "bf16"]), default="auto", show_default=True,
              help="auto: bfloat16 where the CPU/GPU has native bf16, else float32.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics (two bundles: the comparison) as JSON.")
@column_options
def eval_cmd(bundles: tuple[str, ...], data: str, out: str | None, no_report: bool, bootstrap: int, mistakes: int,
             batch_size: int, strict: bool, precision: str, as_json: bool, column: Any, text_pair_column: Any,
             label_column: Any, long_texts: str | None) -> None:
    """Evaluate a bundle on labeled data, or compare two bundles on the same data.

    \b
    One bundle: accuracy, balanced accuracy, top-k, precision/recall/F1 (macro,
    weighted, per class), confusion matrix, ROC-AUC, PR-AUC, calibration error
    and log loss, with 95% bootstrap intervals; report.html (plots, per-class
    table, most confident mistakes) and report.json.
    Two bundles: both evaluated on the same examples; the differences B - A with
    paired bootstrap intervals and McNemar's exact test.

    \b
    Examples:
      sftune eval runs/ants --data hymenoptera_data/val
      sftune eval runs/ants runs/ants_full --data hymenoptera_data/val
      sftune eval runs/sst2 --data SST-2/dev.tsv --json
    """
    from ..predictor import bundle_task

    if len(bundles) > 2:
        raise SftuneError(f"eval takes one bundle, or two to compare; got {len(bundles)}")
    tasks = [bundle_task(b) for b in bundles]
    task = tasks[0][0]
    if len({t.name for t, _ in tasks}) > 1 or len({t.modality for t, _ in tasks}) > 1:
        raise SftuneError(f"cannot compare a {tasks[0][0].name} model with a {tasks[1][0].name} model: "
                          f"{bundles[0]} vs {bundles[1]}")
    models = [t.load_predictor(folder, None, precision) for t, folder in tasks]
    from ..predictors_base import CliInputs

    given = CliInputs(column=column, label_column=label_column, text_pair_column=text_pair_column, long_texts=long_texts)
    for m, b in zip(models, bundles):
        given.apply_to(m, b)  # text columns, long texts; refused by bundles that read no texts
    outputs = [m.outputs(data, batch_size=batch_size, strict=strict) for m in models]
    for note in dict.fromkeys(n for o in outputs for n in getattr(o, "notes", [])):  # e.g. texts truncated
        output.info_err(f"warning: {note}")
    if len(models) == 1:
        report = task.evaluation_report(outputs[0], bundles[0], data, f"{Path(bundles[0]).absolute().name} on {_data_name(data)}",
                                        bootstrap, mistakes)
        for note in (report.get("data") or {}).get("notes", []):
            if note not in getattr(outputs[0], "notes", []):  # e.g. classes without examples
                output.info_err(f"warning: {note}")
        default_folder = Path(bundles[0]) / "reports" / _data_name(data)
    else:
        report = task.comparison_report(outputs[0], outputs[1], bundles[0], bundles[1], data,
                                        f"{Path(bundles[0]).absolute().name} vs {Path(bundles[1]).absolute().name} "
                                        f"on {_data_name(data)}", bootstrap, mistakes)
        default_folder = Path(bundles[0]) / "reports" / f"{_data_name(data)}-vs-{Path(bundles[1]).absolute().name}"
    html_path = None
    if not no_report:
        folder = Path(out) if out else default_folder
        try:
            _, html_path = task.write_evaluation(folder, report, models[0])
        except OSError as e:
            raise SftuneError(f"cannot write the report to '{folder}' ({e.strerror}); pass --out DIR or --no-report") from None
    if as_json:
        if len(models) == 1:
            # the training run's metrics.json keys (loss included), then the report's
            metrics = {**outputs[0].headline(), **report["metrics"], "intervals": report["intervals"], "per_class": report["per_class"]}
        else:
            metrics = {"a": report["a"]["metrics"], "b": report["b"]["metrics"], **report["comparison"]}
        from ..eval.report import finite

        click.echo(json.dumps({**finite(metrics), "report": str(html_path) if html_path else None}, indent=2))
    elif len(models) == 1:
        output.report_summary(report, html_path)
    else:
        output.comparison_summary(report, html_path)


def _epoch_title(metrics: dict[str, Any]) -> str:
    """"best epoch 3 of 10", or for a head fitted without epochs (linear_probe's L-BFGS) its L2."""
    probe = metrics.get("probe")
    if metrics.get("epochs_run") == 0 and isinstance(probe, dict):
        return f"head fitted with L-BFGS, L2 {probe.get('l2'):g} chosen by {probe.get('selected_by')}"
    return f"best epoch {_epoch(metrics)}"


def _epoch(metrics: dict[str, Any]) -> str:
    """The best epoch as people count (1-based; metrics.json keeps Lightning's 0-based index)."""
    best = metrics.get("best_epoch")
    return f"{best + 1} of {metrics.get('epochs_run', best + 1)}" if isinstance(best, int) else "?"


def _data_name(data: str) -> str:
    """A folder name for reports on ``data``: its name, with the parent's for val/test/dev folders."""
    path = Path(data).expanduser().absolute()
    name = path.stem if path.is_file() else path.name
    if name.lower() in ("val", "valid", "validation", "test", "dev", "eval"):
        name = f"{path.parent.name}-{name}"
    return name or "data"


@cli.command()
@click.argument("bundle", type=click.Path())
@click.argument("paths", nargs=-1)
@click.option("--text", "texts", multiple=True, help="Text bundles: a text to classify (repeatable).")
@click.option("--pair", "pairs", multiple=True, help="Sentence-pair bundles: the second text of each --text, in order.")
@click.option("--file", "text_file", type=click.Path(dir_okay=False),
              help="Text bundles: a .txt file (one text per line) or a CSV/TSV/JSONL/Parquet file.")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, help="Classes to show per input.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--precision", type=click.Choice(["auto", "32", "bf16"]), default="auto", show_default=True,
              help="auto: bfloat16 where the CPU/GPU has native bf16, else float32.")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Segmentation bundles: write a palette index PNG mask and an overlay per image here.")
@click.option("--draw", type=click.Path(file_okay=False),
              help="Detection bundles: write each image with its predicted boxes drawn here.")
@click.option("--min-score", type=click.FloatRange(0, 1),
              help="Detection bundles: keep boxes scoring at least this [the bundle's task.min_score].")
@click.option("--windows", is_flag=True,
              help="Audio bundles: also each window's prediction of a long recording, with start/end in seconds.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON list, one record per input: classification {path or index/line and text, label, score, "
                   "top_k} (label and score null, with 'skipped', for an unreadable file or an empty text; audio adds "
                   "seconds, and windows with --windows); segmentation {path, size, class_fractions, mask}.")
@lambda command: column_options(command, label=False)  # predict reads no labels
def predict(bundle: str, paths: tuple[str, ...], texts: tuple[str, ...], pairs: tuple[str, ...], text_file: str | None,
            column: Any, text_pair_column: Any, long_texts: str | None, top_k: int, batch_size: int,
            out_dir: str | None, draw: str | None, min_score: float | None, windows: bool, precision: str,
            as_json: bool) -> None:
    """Predict with a bundle: classify images or audio (files, or folders searched for them)
    or texts; segment images into per-pixel class masks.

    \b
    Examples:
      sftune predict runs/ants photo.jpg more_photos/ --top-k 2
      sftune predict runs/sst2 --text "a gripping, beautiful film" --text "dull and far too long"
      sftune predict runs/sst2 --file reviews.txt --json
      sftune predict runs/camvid street.png more_streets/ --out-dir masks/
      sftune predict runs/digits clip.wav recordings/ --windows --json

    \b
    Exit status: 0 when at least one input was predicted (an input that cannot be
    read, or an empty text or blank line of --file, is listed with the reason, in
    --json as {"skipped": reason}); 2 when none could be, or the command line is wrong.
    """
    from ..predictor import load

    model = load(bundle, precision=precision)
    from ..predictors_base import CliInputs

    given = CliInputs(list(paths), list(texts), list(pairs), text_file, column, top_k, batch_size, out_dir, draw,
                      min_score, text_pair_column=text_pair_column, long_texts=long_texts, windows=windows)
    given.apply_to(model, bundle)  # text columns, long texts; refused by bundles that read no texts
    predictions = model.run_cli(given)  # the bundle's predictor reads its own inputs, refuses the rest
    for note in getattr(model, "notes", []):  # e.g. texts longer than the model reads, truncated
        output.info_err(f"warning: {note}")
    skipped = [p for p in predictions if getattr(p, "skipped", None)]
    if skipped and len(skipped) == len(predictions):
        raise SftuneError(f"nothing could be predicted: all {len(skipped)} input(s) were skipped, e.g. "
                          f"{getattr(skipped[0], 'path', '?')}: {skipped[0].skipped}")
    if skipped:  # every good input is predicted; the others are listed (in --json too) with the reason
        output.info_err(f"warning: {len(skipped)} of {len(predictions)} input(s) skipped (listed with the reason)")
    if as_json:
        click.echo(json.dumps([r for p in predictions for r in p.json_records()], indent=2))
    else:
        output.predictions_table(predictions)


@cli.command()
def models() -> None:
    """List the offline zoo and the other ways to name a backbone."""
    output.models_table()


@cli.command()
def tasks() -> None:
    """List tasks, their inputs, monitored metric and options (task.<option> in config / --set)."""
    output.tasks_table()


@cli.command()
def strategies() -> None:
    """List fine-tuning strategies and their options (strategy.<option> in config / --set)."""
    output.strategies_table()


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=str(Path(".sftune-data") / "digits"),
              show_default=True, help="Where the digits are written as PNGs (once).")
@click.option("--out", type=click.Path(file_okay=False), default=str(Path("runs") / "demo"), show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def demo(data_dir: str, out: str, no_progress: bool) -> None:
    """The embedded default job, offline: EfficientNet-Lite0 (ImageNet) on the UCI digits.

    Writes scikit-learn's 1,797 handwritten digits as an image folder, fine-tunes
    with configs/demo.yaml, prints the metrics and a few predictions, and leaves
    a bundle in --out (replaced on every run).
    """
    from ..config import build_config
    from ..demo import DEMO_CONFIG, write_digits_folder
    from ..engine import run_training
    from ..predictor import load

    folder = write_digits_folder(data_dir)
    overrides: dict[str, Any] = {"data.path": str(folder)}
    if no_progress:
        overrides["trainer.progress_bar"] = False
    cfg = build_config(file=DEMO_CONFIG, overrides=overrides)
    output.info(f"demo: digits written to {folder}; config {DEMO_CONFIG}")
    result = run_training(cfg, out, overwrite=True, log=output.info)
    output.run_summary(result.path, result.metrics, title=f"digits validation metrics (best epoch {_epoch(result.metrics)})")
    examples = [folder / d / sorted(p.name for p in (folder / d).iterdir())[0] for d in ("0", "3", "7")]
    output.predictions_table(load(result.path).predict(examples, top_k=2))
    output.info(f"bundle: {result.path}  ({result.seconds:.0f} s)  — try: sftune predict {result.path} {examples[0]}")


from .drift_cmd import drift as _drift  # noqa: E402  (continual: drift, registry, update)
from .registry_cmd import registry as _registry  # noqa: E402
from .update_cmd import update as _update  # noqa: E402

cli.add_command(_drift)
cli.add_command(_registry)
cli.add_command(_update)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="sftune")


if __name__ == "__main__":
    sys.exit(main())
