"""The training engine end to end on a tiny random timm model (seconds per run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import sftune
import sftune.strategies
from sftune import bundle as B
from sftune.errors import SftuneError

from conftest import tiny_run, with_callbacks


def test_bundle_is_complete_and_readable_without_sftune(digits_split_dir, tmp_path):
    run = tiny_run(digits_split_dir, tmp_path / "run", strategy="full", train__epochs=2)
    path = run.path
    for name in (B.CONFIG, B.WEIGHTS, B.LABELS, B.METRICS, B.LINEAGE, "checkpoints/last.ckpt", "logs/metrics.csv"):
        assert (path / name).is_file(), name
    assert not B.partial_dir(path).exists(), "work folder must be renamed into place"
    assert not (path / "checkpoints" / "best.ckpt").exists(), "best weights live in model.safetensors"

    tensors = load_file(str(path / B.WEIGHTS))
    assert tensors and all(k.startswith(("backbone.", "head.")) for k in tensors)
    assert {"head.fc.weight", "head.fc.bias"} <= set(tensors)
    assert tensors["head.fc.weight"].shape[0] == 3

    config = yaml.safe_load((path / B.CONFIG).read_text())
    assert config["model"]["arch"] == "test_efficientnet"
    assert json.loads((path / B.LABELS).read_text()) == {"classes": ["0", "1", "2"]}

    metrics = json.loads((path / B.METRICS).read_text())
    for key in ("acc", "precision", "recall", "f1", "loss"):
        assert 0.0 <= metrics[key] <= (10.0 if key == "loss" else 1.0)
    assert metrics["n"] == 30 and metrics["epochs_run"] == 2
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    assert all("val/acc" in h and "train/loss" in h for h in metrics["history"])

    lineage = json.loads((path / B.LINEAGE).read_text())
    assert len(lineage["data"]["fingerprint_sha256"]) == 64
    assert lineage["data"]["split"]["method"] == "given"
    assert lineage["versions"]["torch"] == torch.__version__


def test_stratified_split_is_recorded(digits_dir, tmp_path):
    run = tiny_run(digits_dir, tmp_path / "run", train__epochs=1)
    split = json.loads((run.path / B.LINEAGE).read_text())["data"]["split"]
    assert split["method"] == "stratified" and split["seed"] == 42 and split["val_fraction"] == 0.2
    assert len(split["val_files"]) == 18  # round(30 * 0.2) = 6 per class x 3
    assert {Path(f).parts[0] for f in split["val_files"]} == {"0", "1", "2"}


def test_same_seed_same_metrics(digits_dir, tmp_path):
    a = tiny_run(digits_dir, tmp_path / "a", strategy="full", train__epochs=2, train__lr=0.01)
    b = tiny_run(digits_dir, tmp_path / "b", strategy="full", train__epochs=2, train__lr=0.01)
    def untimed(history):
        return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]

    assert untimed(a.metrics["history"]) == untimed(b.metrics["history"])
    assert all(h["time/elapsed_s"] > 0 for h in a.metrics["history"])
    wa, wb = load_file(str(a.path / B.WEIGHTS)), load_file(str(b.path / B.WEIGHTS))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_model_learns_digits(digits_split_dir, tmp_path):
    """Even a tiny random network must beat chance (1/3) clearly on real digits."""
    run = tiny_run(digits_split_dir, tmp_path / "run", strategy="full", train__epochs=12, train__lr=0.02,
                   train__patience=0, data__image_size=32, model__drop_rate=0.0)
    assert run.metrics["acc"] >= 0.6, run.metrics


def test_predict_reproduces_eval(digits_split_dir, tmp_path):
    run = tiny_run(digits_split_dir, tmp_path / "run", strategy="full", train__epochs=3, train__lr=0.02)
    model = sftune.load(run.path)
    metrics = model.evaluate(digits_split_dir / "val")
    assert metrics["acc"] == pytest.approx(run.metrics["acc"], abs=1e-6)
    predictions = model.predict(digits_split_dir / "val", top_k=3)
    assert len(predictions) == 30
    correct = sum(Path(p.path).parent.name == p.label for p in predictions)
    assert correct / len(predictions) == pytest.approx(metrics["acc"], abs=1e-6)
    for p in predictions:
        scores = [s for _, s in p.top_k]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4  # 3 classes: all of them


def test_resume_finishes_like_an_uninterrupted_run(digits_dir, tmp_path, monkeypatch):
    import lightning as L

    reference = tiny_run(digits_dir, tmp_path / "ref", strategy="full", train__epochs=4, train__lr=0.01, train__patience=0)

    class Crash(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise RuntimeError("simulated crash")

    out = tmp_path / "crashy"
    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="simulated crash"):
        with_callbacks(patch, Crash())
        tiny_run(digits_dir, out, strategy="full", train__epochs=4, train__lr=0.01, train__patience=0)

    assert not out.exists() and (B.partial_dir(out) / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(B.partial_dir(out) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0  # epoch 1 crashed before its checkpoint

    with pytest.raises(SftuneError, match="unfinished run"):
        tiny_run(digits_dir, out, strategy="full", train__epochs=4)  # no silent restart over it
    resumed = sftune.finetune(out=out, resume=True)
    assert resumed.metrics["epochs_run"] == 4
    assert [h["epoch"] for h in resumed.metrics["history"]] == [0, 1, 2, 3]
    assert resumed.metrics["acc"] == pytest.approx(reference.metrics["acc"], abs=1e-6)
    assert resumed.metrics["loss"] == pytest.approx(reference.metrics["loss"], rel=1e-4)


def test_resume_refuses_a_changed_model(digits_dir, tmp_path):
    out = tmp_path / "run"
    work = B.partial_dir(out)
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "last.ckpt").write_bytes(b"")
    cfg = sftune.config.build_config(overrides={"data.path": str(digits_dir)})
    (work / B.CONFIG).write_text(sftune.config.dump_yaml(cfg))
    with pytest.raises(SftuneError, match="model.name"):
        sftune.finetune(out=out, resume=True, model="efficientnet_lite1")


def test_existing_output_needs_overwrite(digits_dir, tmp_path):
    first = tiny_run(digits_dir, tmp_path / "run", train__epochs=1)
    with pytest.raises(SftuneError, match="already exists"):
        tiny_run(digits_dir, tmp_path / "run", train__epochs=1)
    second = tiny_run(digits_dir, tmp_path / "run", train__epochs=1, overwrite=True, train__seed=7)
    assert second.path == first.path and B.is_bundle(second.path)
    assert not (tmp_path / ".run.old").exists()


def test_concurrent_writer_is_refused(digits_dir, tmp_path):
    holder = B.RunFolder.open(tmp_path / "run")
    try:
        with pytest.raises(SftuneError, match="another sftune process"):
            B.RunFolder(holder.final, holder.work, True)._lock()
    finally:
        holder.release()


def test_bundle_reused_as_backbone(digits_dir, tmp_path):
    parent = tiny_run(digits_dir, tmp_path / "parent", strategy="full", train__epochs=1)
    child = tiny_run(digits_dir, tmp_path / "child", train__epochs=1, model__name=f"file:{parent.path}")
    parent_w = load_file(str(parent.path / B.WEIGHTS))
    child_w = load_file(str(child.path / B.WEIGHTS))
    # linear probe: the child's backbone is exactly the parent's fine-tuned backbone
    assert all(torch.equal(parent_w[k], child_w[k]) for k in parent_w if k.startswith("backbone."))
    lineage = json.loads((child.path / B.LINEAGE).read_text())
    assert lineage["parent"]["is_bundle"] and lineage["parent"]["path"] == str(parent.path)


def test_state_dict_file_backbone(digits_dir, tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=7)
    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "weights.pth")
    for name in ("weights.safetensors", "weights.pth"):
        run = tiny_run(digits_dir, tmp_path / f"run-{name}", train__epochs=1,
                       model__name=f"file:{tmp_path / name}", model__arch="test_efficientnet")
        w = load_file(str(run.path / B.WEIGHTS))
        assert torch.equal(w["backbone.conv_stem.weight"], source.state_dict()["conv_stem.weight"])


def test_csv_manifest(digits_dir, tmp_path):
    rows = ["path,label"]
    for f in sorted(digits_dir.rglob("*.png")):
        rows.append(f"{f.relative_to(digits_dir)},digit-{f.parent.name}")
    shutil.copytree(digits_dir, tmp_path / "imgs")
    (tmp_path / "imgs" / "manifest.csv").write_text("\n".join(rows) + "\n")
    run = tiny_run(tmp_path / "imgs" / "manifest.csv", tmp_path / "run", train__epochs=1)
    assert sftune.load(run.path).classes == ["digit-0", "digit-1", "digit-2"]


def test_bf16_mixed_precision_on_cpu(digits_dir, tmp_path):
    run = tiny_run(digits_dir, tmp_path / "bf16", strategy="full", train__epochs=1, trainer__precision="bf16-mixed")
    assert 0.0 <= run.metrics["acc"] <= 1.0 and run.metrics["loss"] == run.metrics["loss"]  # finite, not NaN


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_on_gpu(digits_dir, tmp_path):
    run = tiny_run(digits_dir, tmp_path / "gpu", strategy="full", train__epochs=2, trainer__precision="bf16-mixed",
                   trainer__accelerator="gpu", trainer__devices=1)
    assert json.loads((run.path / B.LINEAGE).read_text())["host"]["cuda"] is True
    assert sftune.load(run.path, device="cuda").evaluate(digits_dir)["n"] == 90


STRATEGY_OPTIONS = {"freeze_unfreeze": {"strategy__unfreeze_epoch": 1}, "gradual_unfreeze": {"strategy__stages": 1}}


@pytest.mark.parametrize("strategy", sftune.strategies.STRATEGIES.list())
def test_every_strategy_trains_and_writes_a_loadable_bundle(strategy, digits_dir, tmp_path):
    run = tiny_run(digits_dir, tmp_path / strategy, strategy=strategy, train__epochs=2, train__patience=0,
                   **STRATEGY_OPTIONS.get(strategy, {}))
    # linear_probe (also as auto's choice) fits its head with L-BFGS on the cached features: no epochs.
    epochs = 0 if run.config.strategy.name == "linear_probe" else 2
    assert run.metrics["epochs_run"] == epochs and sftune.load(run.path).evaluate(digits_dir)["n"] == 90


def test_lp_ft_fits_the_head_on_cached_features_before_fine_tuning(digits_split_dir, tmp_path, capsys):
    import re

    # Real ImageNet features (small input for speed): a linear probe separates 3 digit classes well.
    run = tiny_run(digits_split_dir, tmp_path / "lpft", strategy="lp_ft", train__epochs=2,
                   model__name="efficientnet_lite0", model__pretrained=True, data__image_size=64)
    out = capsys.readouterr().out
    assert "frozen backbone run once over 120 images" in out  # the probe reads the feature cache
    before, after, probe_acc = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+), val acc ([\d.]+)", out).groups())
    assert after < 0.5 * before and probe_acc >= 0.8  # converged far below the initial head's loss
    assert run.metrics["epochs_run"] == 2 and run.config.strategy.name == "lp_ft"


def test_workers_do_not_change_results_and_resume_is_exact_with_them(digits_dir, tmp_path, monkeypatch):
    """Issue 17 item 16: augmentation, dropout and the training order depend on (seed, epoch, index)
    only. Before: --workers 0 reseeded the training process's generators per sample (other dropout
    masks than with workers), and a resumed run with workers replayed the previous epoch's order."""
    import lightning as L

    common = dict(strategy="full", train__epochs=3, train__lr=0.01, train__patience=0, model__drop_rate=0.3,
                  data__hflip=True, data__color_jitter=0.4, trainer__deterministic=True)

    def val_losses(run):
        return [h["val/loss"] for h in run.metrics["history"]]

    no_workers = val_losses(tiny_run(digits_dir, tmp_path / "w0", data__num_workers=0, **common))
    with_workers = val_losses(tiny_run(digits_dir, tmp_path / "w2", data__num_workers=2, **common))
    assert with_workers == no_workers

    class Crash(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise RuntimeError("simulated crash")

    out = tmp_path / "crashy"
    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="simulated crash"):
        with_callbacks(patch, Crash())
        tiny_run(digits_dir, out, data__num_workers=2, **common)
    resumed = sftune.finetune(out=out, resume=True)
    assert val_losses(resumed) == with_workers
