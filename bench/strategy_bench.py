"""Benchmark: every registered sftune strategy on one dataset, same seed, one table.

The strategies come from ``sftune.strategies.STRATEGIES`` at run time, so ones added
later (lora, wise_ft, auto, ...) are included without editing this file. Every
strategy gets the same model, data, epochs, batch and seed; only the strategy differs
(each uses its own default LR). Each run is a fresh subprocess calling
``sftune.finetune(..., overwrite=True)``, so memory and warm caches of one run never
help or hurt the next (each also gets its own empty ``SFTUNE_CACHE``).

    .venv/bin/python bench/strategy_bench.py                   # 10 epochs each on the ants/bees data
    .venv/bin/python bench/strategy_bench.py --quick           # smoke test: tiny model, digits, 2 epochs
    .venv/bin/python bench/strategy_bench.py --strategies full,lp_ft,auto --json out.json
    .venv/bin/python bench/strategy_bench.py --probe-compare   # linear_probe's L-BFGS head vs its SGD head and
                                                              # a scikit-learn LogisticRegression C sweep, same features
      [--data DIR] [--model NAME] [--epochs N] [--batch-size N] [--out-dir DIR]

Per strategy it reports: final val accuracy and macro-F1 of the saved (best) weights,
wall time around the ``finetune`` call and the engine's own ``metrics["seconds"]``,
trainable parameters, epochs run / best epoch (1-based), what ``auto`` chose and
why, and ``wise_ft``'s accuracy per interpolation alpha. The best accuracy is marked
with ★, and a last line says whether ``auto`` is within 1 point of the best: the
project's acceptance criterion for ``auto``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent           # the project root (/work/main)
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hymenoptera_data"
SEED = 42
MARK = "STRATEGY_BENCH_RESULT "                           # prefix of the child's result line on stdout
AUTO_TOLERANCE = 1.0                                      # accuracy points
# --quick: the tiny random model of the fast test suite (tests/conftest.py TINY).
QUICK_SETTINGS: dict[str, Any] = {"model.name": "timm:test_efficientnet", "model.pretrained": False,
                                  "data.image_size": 32, "data.num_workers": 0}
# --quick only: schedule options that the default values would reject with 2 epochs.
QUICK_OPTIONS: dict[str, dict[str, Any]] = {"freeze_unfreeze": {"strategy.unfreeze_epoch": 1},
                                            "gradual_unfreeze": {"strategy.stages": 1}}

# The child: the registry (for the strategy list) or one finetune call, timed without the imports.
CHILD = r"""
import json, sys, time, traceback
spec = json.loads(sys.argv[1])
if spec.get("list"):
    from sftune.strategies import STRATEGIES
    print("%s" + json.dumps({n: STRATEGIES.get(n).default_lr for n in STRATEGIES.list()}))
    sys.exit(0)
overrides = {k.replace(".", "__"): v for k, v in spec["settings"].items()}
try:
    import sftune, sftune.config, sftune.engine  # imported before the clock starts: wall_s times the run only
    t0 = time.perf_counter()
    run = sftune.finetune(spec["data"], strategy=spec["strategy"], out=spec["out"], overwrite=True, **overrides)
except BaseException as exc:
    traceback.print_exc()
    print("%s" + json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}))
    sys.exit(1)
print("%s" + json.dumps({"wall_s": time.perf_counter() - t0, "bundle": str(run.path)}))
""".replace("%s", MARK)


@dataclass
class Row:
    strategy: str
    default_lr: float | None = None
    ok: bool = False
    error: str = ""
    acc: float | None = None                 # val accuracy, 0..1
    f1: float | None = None                  # macro-F1, 0..1
    wall_s: float | None = None              # perf_counter around sftune.finetune in the child
    engine_s: float | None = None            # metrics["seconds"]
    trainable: int | None = None
    trainable_source: str = ""               # "metrics.json" or "log"
    total_params: int | None = None          # metrics["total_parameters"] if present
    epochs_run: int | None = None
    best_epoch: int | None = None            # 1-based
    chosen: str = ""                         # auto: the strategy it picked
    why: str = ""
    wise_ft: list[dict[str, float]] = field(default_factory=list)
    wise_alpha: float | None = None          # the alpha wise_ft kept
    probe_l2: float | None = None            # linear_probe (L-BFGS) / lp_ft: the L2 its probe chose
    probe_selected_by: str = ""


def child(spec: dict[str, Any], log: Path, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    """Run CHILD with ``spec``; return (exit code, its result line, its stdout). Output goes
    to files, not pipes, so a chatty child can never block on a full pipe."""
    with log.with_suffix(".out").open("w+") as out, log.with_suffix(".err").open("w") as err:
        rc = subprocess.call([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=out, stderr=err,
                             cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env})
        out.seek(0)
        stdout = out.read()
    lines = [ln[len(MARK):] for ln in stdout.splitlines() if ln.startswith(MARK)]
    if lines:
        return rc, json.loads(lines[-1]), stdout
    tail = log.with_suffix(".err").read_text(errors="replace").strip().splitlines()[-1:]
    return rc, {"error": f"exit {rc}: {tail[0][:300] if tail else 'no output'}"}, stdout


def run_strategy(name: str, data: Path, settings: dict[str, Any], work: Path, label: str | None = None,
                 cache: str | None = None) -> Row:
    """One strategy in a fresh child; ``label`` (default: the name) names its folder and row, ``cache``
    (default: the label) its feature cache, so two rows can share one (the second then starts warm)."""
    label = label or name
    row = Row(label)
    print(f"  {label} ...", file=sys.stderr, flush=True)
    out = work / label
    rc, result, stdout = child({"data": str(data), "strategy": name, "out": str(out), "settings": settings},
                               work / f"{label}.log", {"SFTUNE_CACHE": str(work / f"cache-{cache or label}")})
    if rc != 0 or "error" in result or not (out / "metrics.json").is_file():
        row.error = result.get("error") or f"exit {rc}, no metrics.json"
        print(f"  ! {label}: {row.error}", file=sys.stderr, flush=True)
        return row
    m = json.loads((out / "metrics.json").read_text())
    row.ok, row.wall_s, row.engine_s = True, result["wall_s"], m.get("seconds")
    row.acc, row.f1, row.epochs_run = m.get("acc"), m.get("f1"), m.get("epochs_run")
    row.best_epoch = m["best_epoch"] + 1 if isinstance(m.get("best_epoch"), int) else None
    if isinstance(m.get("trainable_parameters"), int):
        row.trainable, row.trainable_source = m["trainable_parameters"], "metrics.json"
        row.total_params = m.get("total_parameters") if isinstance(m.get("total_parameters"), int) else None
    elif found := re.search(r"([\d,]+) of [\d,]+ parameters train", stdout):   # the engine's start-up log line
        row.trainable, row.trainable_source = int(found.group(1).replace(",", "")), "log"
    choice = m.get("strategy_choice")
    if isinstance(choice, dict):
        row.chosen, row.why = str(choice.get("chosen", "")), str(choice.get("why", ""))
    probe = m.get("probe")
    if isinstance(probe, dict):
        row.probe_l2, row.probe_selected_by = probe.get("l2"), str(probe.get("selected_by", ""))
    wise = m.get("wise_ft")  # a list of {alpha, acc}, or {"alpha": chosen, "alphas": [{alpha, acc, ...}]}
    points = wise.get("alphas") if isinstance(wise, dict) else wise
    if isinstance(points, list):
        row.wise_ft = [{"alpha": float(p["alpha"]), "acc": float(p["acc"])} for p in points]
        row.wise_alpha = wise.get("alpha") if isinstance(wise, dict) else None
    return row


# --probe-compare: scikit-learn's LogisticRegression swept over C on exactly the features the
# linear_probe run used (its feature cache, read through the same pipeline), scored on the val split.
SKLEARN_CHILD = r"""
import json, sys, time
import numpy as np
spec = json.loads(sys.argv[1])
from sklearn.linear_model import LogisticRegression
from sftune.config import build_config, resolve_task
from sftune.tasks import create_task
cfg = resolve_task(build_config(overrides={"data.path": spec["data"], **spec["settings"]}))
task = create_task(cfg.task.name, cfg.task.options())
pipeline = task.pipeline(cfg, 0, lambda message: None)
pipeline.load()
features = pipeline.features()
tx, ty = (t.numpy() for t in features.train_set.tensors)
vx, vy = (t.numpy() for t in features.val_set.tensors)
rows = []
for C in np.logspace(-4, 4, 17):
    t0 = time.perf_counter()
    model = LogisticRegression(C=float(C), max_iter=5000).fit(tx, ty)
    rows.append({"C": float(C), "acc": float((model.predict(vx) == vy).mean()), "s": time.perf_counter() - t0})
print("%s" + json.dumps({"rows": rows, "n_train": len(ty), "n_val": len(vy), "width": int(tx.shape[1])}))
""".replace("%s", MARK)


def sklearn_sweep(data: Path, settings: dict[str, Any], cache: Path, log: Path) -> dict[str, Any]:
    """The C sweep of SKLEARN_CHILD on the features in ``cache`` (a linear_probe run's, so warm)."""
    print("  scikit-learn LogisticRegression C sweep ...", file=sys.stderr, flush=True)
    with log.with_suffix(".out").open("w+") as out, log.with_suffix(".err").open("w") as err:
        rc = subprocess.call([sys.executable, "-c", SKLEARN_CHILD, json.dumps({"data": str(data), "settings": settings})],
                             stdout=out, stderr=err, cwd=ROOT,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "SFTUNE_CACHE": str(cache)})
        out.seek(0)
        lines = [ln[len(MARK):] for ln in out.read().splitlines() if ln.startswith(MARK)]
    if rc != 0 or not lines:
        return {"error": f"exit {rc}"}
    return json.loads(lines[-1])


def probe_table(rows: list[Row], sweep: dict[str, Any]) -> tuple[str, bool | None]:
    """linear_probe (L-BFGS, and the SGD head) against the best of the scikit-learn C sweep."""
    lines = ["| head | val acc (%) | chosen | wall (s) |", "|---|---|---|---|"]
    for r in rows:
        chosen = (f"L2 {r.probe_l2:g} by {r.probe_selected_by}" if r.probe_l2 is not None
                  else f"{r.epochs_run} epochs, best {r.best_epoch}")
        lines.append(f"| {r.strategy} | {fmt(r.acc, '.1f', 100) if r.ok else 'failed: ' + r.error} | {chosen} "
                     f"| {fmt(r.wall_s, '.1f')} |")
    if "error" in sweep:
        return "\n".join(lines + [f"| scikit-learn C sweep | failed: {sweep['error']} | | |"]), None
    best = max(sweep["rows"], key=lambda row: row["acc"])
    lines.append(f"| scikit-learn LogisticRegression, best of C in 1e-4..1e4 (17 values) | {best['acc'] * 100:.1f} "
                 f"| C {best['C']:g} (on the val split itself) | {sum(row['s'] for row in sweep['rows']):.1f} (sweep) |")
    lbfgs = next((r for r in rows if r.ok and r.probe_l2 is not None), None)
    if lbfgs is None or lbfgs.acc is None:
        return "\n".join(lines), None
    gap = (best["acc"] - lbfgs.acc) * 100
    ok = gap <= 0.5 + 1e-9
    verdict = (f"linear_probe {lbfgs.acc * 100:.1f}% vs the best scikit-learn probe {best['acc'] * 100:.1f}%: "
               f"gap {gap:.1f} points, {'PASS' if ok else 'FAIL'} (within 0.5 point)")
    return "\n".join(lines) + "\n\n" + verdict, ok


def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "?" if value is None else format(value * scale, spec)


def table(rows: list[Row]) -> str:
    head = ["strategy", "val acc (%)", "macro-F1", "wall (s)", "engine (s)", "trainable params",
            "epochs run / best (1-based)", "default lr", "wise_ft acc (%) by alpha (* kept)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = max((r.acc for r in rows if r.ok and r.acc is not None), default=None)
    for r in rows:
        name = f"{r.strategy} → {r.chosen}" if r.chosen else r.strategy
        if r.why:
            name += f" ({r.why})"
        lr = fmt(r.default_lr, "g")
        if not r.ok:
            lines.append(f"| {name} | failed: {r.error.replace('|', '/')} | | | | | | {lr} | |")
            continue
        acc = fmt(r.acc, ".1f", 100) + (" ★" if r.acc is not None and r.acc == best else "")
        params = "?" if r.trainable is None else f"{r.trainable:,}"
        if r.trainable is not None and r.total_params:
            params += f" of {r.total_params:,}"
        wise = ", ".join(f"{p['alpha']:g}: {p['acc'] * 100:.1f}" + ("*" if p["alpha"] == r.wise_alpha else "")
                         for p in r.wise_ft)
        lines.append(f"| {name} | {acc} | {fmt(r.f1, '.3f')} | {fmt(r.wall_s, '.1f')} | {fmt(r.engine_s, '.1f')} "
                     f"| {params} | {r.epochs_run if r.epochs_run is not None else '?'} / "
                     f"{r.best_epoch if r.best_epoch is not None else '?'} | {lr} | {wise} |")
    return "\n".join(lines)


def auto_verdict(rows: list[Row]) -> tuple[str, bool | None]:
    """Whether ``auto`` is within AUTO_TOLERANCE accuracy points of the best row."""
    scored = [r for r in rows if r.ok and r.acc is not None]
    auto = next((r for r in rows if r.strategy == "auto"), None)
    if auto is None:
        return "auto: not in this run", None
    if auto not in scored or not scored:
        return f"auto: FAILED ({auto.error or 'no accuracy'})", False
    best = max(scored, key=lambda r: r.acc or 0.0)
    gap = (best.acc - auto.acc) * 100
    ok = gap <= AUTO_TOLERANCE + 1e-9
    return (f"auto ({auto.chosen or '?'}): {auto.acc * 100:.1f}% vs best {best.strategy} {best.acc * 100:.1f}%, "
            f"gap {gap:.1f} points: {'PASS' if ok else 'FAIL'} (within {AUTO_TOLERANCE:g} point)"), ok


def write_digits(root: Path, per_class: int = 40, train: int = 30, classes: tuple[int, ...] = (0, 1, 2)) -> Path:
    """UCI digits (scikit-learn) as PNGs: root/{train,val}/<digit>/<n>.png (tests/conftest.py's data)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits, counts = load_digits(), dict.fromkeys(classes, 0)
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        t = int(target)
        if t in counts and counts[t] < per_class:
            folder = root / ("train" if counts[t] < train else "val") / str(t)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - np.round(pixels * (255 / 16)).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
            counts[t] += 1
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help=f"image folder [{DEFAULT_DATA}; --quick: digits in a temp dir]")
    ap.add_argument("--val-data", type=Path, help="separate validation data (e.g. SST-2/dev.tsv for text)")
    ap.add_argument("--model", default="efficientnet_lite0", help="backbone [efficientnet_lite0; text: minilm]")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config for every strategy, e.g. --set data.max_length=64 (repeatable)")
    ap.add_argument("--epochs", type=int, help="epochs per strategy [10; --quick: 2]")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size [32]")
    ap.add_argument("--strategies", help="comma-separated subset [every registered strategy]")
    ap.add_argument("--quick", action="store_true", help="tiny random model, 32 px, 2 epochs (smoke test)")
    ap.add_argument("--out-dir", type=Path, help="keep bundles and logs here [a temp dir, deleted]")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    ap.add_argument("--probe-compare", action="store_true",
                    help="only linear_probe: its L-BFGS head (cold cache), its SGD head (solver=sgd, the same "
                         "cache, warm) and a scikit-learn LogisticRegression C sweep on the same cached features")
    args = ap.parse_args()

    work = (args.out_dir or Path(tempfile.mkdtemp(prefix="sftune-strategy-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.data is not None:
            data = args.data.resolve()
        else:
            data = write_digits(work / "digits") if args.quick else DEFAULT_DATA
        if not data.exists():
            ap.error(f"no data at {data}")
        rc, registry, _ = child({"list": True}, work / "registry.log", {})
        if rc != 0 or "error" in registry:
            ap.error(f"could not read the strategy registry: {registry.get('error')}")
        names = args.strategies.split(",") if args.strategies else list(registry)
        if unknown := [n for n in names if n not in registry]:
            ap.error(f"unknown strategies {unknown}; registered: {', '.join(registry)}")
        epochs = args.epochs or (2 if args.quick else 10)
        settings: dict[str, Any] = {"model.name": args.model, "train.epochs": epochs, "train.seed": SEED,
                                    "train.batch_size": args.batch_size, "trainer.progress_bar": False}
        if args.val_data is not None:
            settings["data.val_path"] = str(args.val_data.resolve())
        for item in args.sets:
            key, _, value = item.partition("=")
            settings[key] = yaml.safe_load(value)  # read as YAML, like sftune's own --set
        if args.quick:
            settings.update(QUICK_SETTINGS)
        print(f"Data {data}, model {settings['model.name']}, {epochs} epochs, batch {args.batch_size}, seed {SEED}; "
              f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}; strategies: {', '.join(names)}\n", flush=True)
        print(f"running (logs in {work}) ...", file=sys.stderr, flush=True)
        rows = []
        if args.probe_compare:
            rows.append(run_strategy("linear_probe", data, settings, work))
            rows.append(run_strategy("linear_probe", data, {**settings, "strategy.solver": "sgd"}, work,
                                     label="linear_probe solver=sgd", cache="linear_probe"))  # same features, warm
            sweep = sklearn_sweep(data, settings, work / "cache-linear_probe", work / "sklearn.log")
        for name in [] if args.probe_compare else names:
            extra = QUICK_OPTIONS.get(name, {}) if args.quick else {}
            rows.append(run_strategy(name, data, {**settings, **extra}, work))
            rows[-1].default_lr = registry[name]
    finally:
        if args.out_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    if args.probe_compare:
        text, probe_ok = probe_table(rows, sweep)
        print(text)
        if args.json:
            args.json.write_text(json.dumps({"data": str(data), "settings": settings, "within_half_point": probe_ok,
                                             "rows": [asdict(r) for r in rows], "sklearn": sweep}, indent=2))
        return 0 if all(r.ok for r in rows) and "error" not in sweep else 1
    print(table(rows) + "\n")
    verdict, auto_ok = auto_verdict(rows)
    print(verdict)
    if args.quick and any(QUICK_OPTIONS.get(r.strategy) for r in rows):
        print("--quick also set " + "; ".join(f"{n}: {o}" for n, o in QUICK_OPTIONS.items() if n in names))
    if missing := [r.strategy for r in rows if r.ok and r.trainable_source != "metrics.json"]:
        print(f"trainable params of {', '.join(missing)}: not in metrics.json, taken from the engine's log line")
    if args.json:
        args.json.write_text(json.dumps({"data": str(data), "settings": settings, "quick": args.quick,
                                         "auto_within_1_point": auto_ok, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
