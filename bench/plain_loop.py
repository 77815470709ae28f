"""A plain, tuned PyTorch fine-tuning loop: the engine-overhead baseline for sftune.

Same model (offline ImageNet EfficientNet-Lite0 via sftune's zoo mapping), same
transforms (timm's, from the pretrained config), same optimizer family (AdamW),
same batch size and workers, channels_last like sftune, and no framework at all.
It measures *training* throughput (images/s over the training batches only, the
first epoch excluded as warm-up), so `image_bench.py` can check that Lightning and
sftune's engine cost nothing measurable on top of it.

    python bench/plain_loop.py --data DIR [--epochs 3] [--batch-size 32] [--workers 2]

Prints one JSON line: {"peer": "plain_loop", "train_img_s": ..., "epochs": ..., ...}.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from timm.data import create_transform, resolve_data_config
from torch.utils.data import DataLoader
from torchvision import datasets

from sftune.backbones import create_backbone
from sftune.data import load_rgb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder with train/<class>/*")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    backbone = create_backbone("efficientnet_lite0")
    cfg = resolve_data_config({}, model=backbone.model)
    train_set = datasets.ImageFolder(f"{args.data}/train", create_transform(**cfg, is_training=True), loader=load_rgb)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, len(train_set.classes)))
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()

    per_epoch: list[float] = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        seen = 0
        for images, labels in loader:
            images = images.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            seen += len(labels)
        per_epoch.append(seen / (time.perf_counter() - start))
    steady = per_epoch[1:] or per_epoch  # epoch 0 includes worker start-up and allocator warm-up
    print(json.dumps({"peer": "plain_loop", "epochs": args.epochs, "batch_size": args.batch_size,
                      "train_img_s": round(sum(steady) / len(steady), 2),
                      "per_epoch_img_s": [round(x, 2) for x in per_epoch]}))


if __name__ == "__main__":
    main()
