"""Drift detection power and false-positive rate, and the update loop's accuracy, on real data.

Scenario (UCI digits, written as PNGs; EfficientNet-Lite0 offline ImageNet weights, linear probe
at 96 px): a champion is trained on a seeded random 600 of the 1,797 digits. The other 1,197 form
the pool new data is drawn from:

* null:      a fresh random sample of the pool (same distribution)  -> should not be flagged
* rotate15:  the same images rotated 15 degrees                     -> mild covariate shift
* rot30blur: rotated 30 degrees and Gaussian-blurred (radius 1)     -> strong covariate shift
* prior:     unshifted images of digits 0-4 only                    -> class-prior shift

For each sample size m, R random samples of each kind go through `sftune drift`'s test
(``detect``: MMD permutation test on the bundle's pooled features + label-free class/confidence
tests [+ accuracy with labels], Bonferroni at alpha 0.05) against the reference the bundle
stored at train time. Then `update` on 300 shifted images (with replay), and two challengers
the gate must refuse: one that learns nothing (lr 1e-7, 1 epoch: the champion again) and one
fitted to the new data alone (no replay: it forgets the old), all with max drop 2 points.

    .venv/bin/python bench/drift_bench.py [--reps 100] [--sizes 50,100,200] [--permutations 500]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageFilter

import sftune
from sftune.continual.drift import accuracy_test, detect
from sftune.continual.gate import Gate
from sftune.continual.reference import read_reference
from sftune.continual.registry import LocalRegistry
from sftune.continual.update import run_update
from sftune.data.sources import Sample, scan_class_folders
from sftune.demo import write_digits_folder


def shift(img: Image.Image, kind: str) -> Image.Image:
    if kind == "rotate15":
        return img.rotate(15, fillcolor=255)
    if kind == "rot30blur":
        return img.rotate(30, fillcolor=255).filter(ImageFilter.GaussianBlur(1))
    return img


def write_shifted(samples: list[Sample], root: Path, kind: str) -> list[Sample]:
    out = []
    for s in samples:
        dst = root / kind / s.label / s.path.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shift(Image.open(s.path).convert("L"), kind).save(dst)
        out.append(Sample(dst, s.label))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--sizes", default="50,100,200")
    ap.add_argument("--permutations", type=int, default=500)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--work", default=None, help="work folder (default: a temp folder, removed)")
    args = ap.parse_args()
    started = time.time()
    torch.set_num_threads(1)  # small matrices: on a shared 2-core machine a second thread only spins
    work = Path(args.work or tempfile.mkdtemp(prefix="sftune-drift-bench-"))
    files = scan_class_folders(write_digits_folder(work / "digits"))
    random.Random(0).shuffle(files)
    old, pool = files[:600], files[600:]
    for s in old:
        (work / "old" / s.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(s.path, work / "old" / s.label / s.path.name)
    champion = sftune.finetune(data=work / "old", model="efficientnet_lite0", strategy="linear_probe",
                               out=work / "v1", overwrite=True, data__image_size=96, data__num_workers=0,
                               trainer__progress_bar=False).path
    model = sftune.load(champion)
    ref = read_reference(champion)
    outs = {"null": model.outputs(pool, features=True)}
    for kind in ("rotate15", "rot30blur"):
        outs[kind] = model.outputs(write_shifted(pool, work / "shifted", kind), features=True)
    prior_index = [i for i, s in enumerate(pool) if int(s.label) < 5]
    print(f"champion: val acc {json.loads((champion / 'metrics.json').read_text())['acc']:.3f}; "
          f"reference {len(ref.features)} feature rows; pool {len(pool)}; pool acc "
          + ", ".join(f"{k} {float(o.correct.float().mean()):.3f}" for k, o in outs.items()))

    rows = []
    for m in [int(x) for x in args.sizes.split(",")]:
        for kind in ("null", "rotate15", "rot30blur", "prior"):
            source = outs["null" if kind == "prior" else kind]
            candidates = prior_index if kind == "prior" else list(range(len(pool)))
            hits = {"default (MMD features)": 0, "all tests, unlabeled": 0, "all tests, labeled": 0}
            for r in range(args.reps):
                idx = torch.tensor(sorted(random.Random(1000 * m + r).sample(candidates, m)))
                f, p, t = source.features[idx], source.probs[idx], source.targets[idx]
                unl = detect(ref.features, f, ref.probs, p, alpha=args.alpha, permutations=args.permutations, seed=r,
                             decide_on="all")
                # With labels: the same three tests plus the accuracy test, Bonferroni over four.
                tests = unl.tests + [accuracy_test(ref.probs, ref.targets, p, t)]
                hits["default (MMD features)"] += unl.tests[0].p_value < args.alpha  # what `sftune drift` decides on
                hits["all tests, unlabeled"] += unl.drift
                hits["all tests, labeled"] += any(x.p_value * len(tests) < args.alpha for x in tests)
            rows.append((m, kind, {k: v / args.reps for k, v in hits.items()}))
            print(f"m={m:4d} {kind:10s} " + "  ".join(f"{k}: {v / args.reps:.2f}" for k, v in hits.items()), flush=True)

    print(f"\n## Drift detection rate (alpha {args.alpha}, {args.reps} samples each, reference "
          f"{len(ref.features)} rows, {args.permutations} permutations)\n")
    print("| new sample size | shift | default: MMD on features | --decide-on all, unlabeled (3 tests) | "
          "--decide-on all, labeled (4 tests) |")
    print("|---|---|---|---|---|")
    for m, kind, h in rows:
        label = "none (false-positive rate)" if kind == "null" else kind
        print(f"| {m} | {label} | " + " | ".join(f"{v:.2f}" for v in h.values()) + " |")

    # The update loop on 300 strongly shifted images, and a bad challenger, through the gate.
    new = write_shifted(random.Random(7).sample(pool, 300), work / "new", "rot30blur")
    reg = LocalRegistry(work / "models")
    reg.register(champion, "digits", alias="champion")
    quiet = lambda message: None  # noqa: E731
    bad = run_update(champion, work / "new" / "rot30blur", work / "bad", Gate(max_drop=0.02), reg, "digits",
                     "digits/1", overrides={"train.lr": 1e-7, "train.epochs": 1, "strategy.solver": "sgd",
                                                 "trainer.progress_bar": False},
                     log=quiet)
    good = run_update(champion, work / "new" / "rot30blur", work / "v2", Gate(max_drop=0.02), reg, "digits",
                      "digits/1", overrides={"trainer.progress_bar": False}, log=quiet)
    forgetful = run_update(champion, work / "new" / "rot30blur", work / "forgetful", Gate(max_drop=0.02), reg, "digits",
                           "digits/1", replay_ratio=0.0, overrides={"trainer.progress_bar": False}, log=quiet)
    print(f"\n## Update on {len(new)} shifted images (held out: {int(good.scores['champion']['new']['n'])} new, "
          f"{int(good.scores['champion']['old']['n'])} old; replay {good.data['replay']})\n")
    print("| model | acc on held-out old | acc on held-out new | promoted |")
    print("|---|---|---|---|")
    s = good.scores
    print(f"| champion (v1) | {s['champion']['old']['acc']:.3f} | {s['champion']['new']['acc']:.3f} | — |")
    print(f"| challenger (update) | {s['challenger']['old']['acc']:.3f} | {s['challenger']['new']['acc']:.3f} | "
          f"{'yes' if good.decision.promote else 'no: ' + '; '.join(good.decision.reasons)} |")
    for label, result in (("challenger that learns nothing (lr 1e-7, 1 epoch)", bad),
                          ("challenger without replay (new data only)", forgetful)):
        c = result.scores["challenger"]
        print(f"| {label} | {c['old']['acc']:.3f} | {c['new']['acc']:.3f} | "
              f"{'yes' if result.decision.promote else 'no: ' + '; '.join(result.decision.reasons)} |")
    print(f"\nregistry champion: version {reg.get('digits', 'champion').version}; check: {reg.check()['ok']}; "
          f"{time.time() - started:.0f} s")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
