"""Benchmark: training steps in float32 vs bfloat16 autocast (Lightning's ``bf16-mixed``) on this CPU.

For the two default backbones, full fine-tuning steps (forward, backward, AdamW step) on
synthetic batches, the two precisions interleaved A/B/A/B so that both see the same machine
load; the median step time of each is reported, with the load average before and after. The
engine's ``trainer.precision: auto`` uses what this measures (README, "Precision on CPUs").

    .venv/bin/python bench/precision_bench.py                 # both models, 2 x 12 timed steps each
    .venv/bin/python bench/precision_bench.py --steps 6 --models minilm --json out.json

EfficientNet-Lite0: batch 32 x 3 x 224 x 224, channels_last (as sftune trains it); MiniLM-L6:
batch 32 x 64 tokens (texts of the SST-2 / SMS length). Also reported: whether this CPU has
native bf16 (AVX-512 BF16 or AMX), the GFLOP/s of each (from the model's forward FLOPs x 3, via
torch.utils.flop_counter) and, for accuracy, the largest logit difference of one forward pass.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def image_case(batch: int) -> tuple[torch.nn.Module, Callable[[], Any]]:
    from sftune.backbones import create_backbone

    backbone = create_backbone("efficientnet_lite0")
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, 10)).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 224, 224, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)
    return model, lambda: (x, y)


def text_case(batch: int, length: int) -> tuple[torch.nn.Module, Callable[[], Any]]:
    from sftune.backbones.text import create_text_backbone

    backbone = create_text_backbone("minilm")

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.head = backbone, torch.nn.Linear(backbone.num_features, 2)

        def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.head(self.backbone(inputs))

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, length), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    y = torch.randint(0, 2, (batch,), generator=g)
    return Model(), lambda: (inputs, y)


def flops(model: torch.nn.Module, batch: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x, _ = batch()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return 3.0 * counter.get_total_flops()  # forward + backward (~2x forward)


def step_times(model: torch.nn.Module, batch: Callable[[], Any], steps: int, rounds: int) -> dict[str, list[float]]:
    """Per-step seconds of each precision, ``rounds`` x ``steps`` timed steps, interleaved."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    times: dict[str, list[float]] = {"32-true": [], "bf16-mixed": []}

    def one(bf16: bool) -> float:
        x, y = batch()
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        print(f"  {'bf16-mixed' if bf16 else '32-true'} step {seconds:.2f} s (load {load()})", file=sys.stderr, flush=True)
        return seconds

    for precision in times:  # warm-up: oneDNN picks and caches kernels per shape and dtype
        one(precision == "bf16-mixed")
    for _ in range(rounds):
        for precision in times:
            times[precision] += [one(precision == "bf16-mixed") for _ in range(steps)]
    return times


def logit_gap(model: torch.nn.Module, batch: Callable[[], Any]) -> float:
    x, _ = batch()
    model.eval()
    with torch.no_grad():
        exact = model(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    return float((exact - low).abs().max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm,efficientnet_lite0")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per precision per round [6]")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds [2]")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=64, help="tokens per text [64]")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sftune.precision import cpu_has_native_bf16

    torch.set_flush_denormal(True)  # as sftune trains (precision.subnormals_flushed)
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: "
          f"{cpu_has_native_bf16()}; {time.strftime('%Y-%m-%d %H:%M')}")
    rows = []
    for name in args.models.split(","):
        model, batch = image_case(args.batch_size) if name == "efficientnet_lite0" else text_case(args.batch_size, args.length)
        work = flops(model, batch)
        before = load()
        times = step_times(model, batch, args.steps, args.rounds)
        after = load()
        median = {p: statistics.median(t) for p, t in times.items()}
        rows.append({"model": name, "flops_per_step": work, "median_s": median, "times": times, "load_before": before,
                     "load_after": after, "max_logit_gap_bf16": logit_gap(model, batch)})
    print("\n| model | batch | fp32 step (s) | bf16-mixed step (s) | bf16 speed-up | fp32 GFLOP/s | bf16 GFLOP/s "
          "| max logit gap | load avg before -> after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f32, b16 = r["median_s"]["32-true"], r["median_s"]["bf16-mixed"]
        shape = f"{args.batch_size} x 224²" if r["model"] == "efficientnet_lite0" else f"{args.batch_size} x {args.length} tokens"
        print(f"| {r['model']} | {shape} | {f32:.3f} | {b16:.3f} | {f32 / b16:.2f}x | {r['flops_per_step'] / f32 / 1e9:.0f} "
              f"| {r['flops_per_step'] / b16 / 1e9:.0f} | {r['max_logit_gap_bf16']:.3f} | {r['load_before']} -> {r['load_after']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
