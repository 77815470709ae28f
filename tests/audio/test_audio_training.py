"""Audio classification end to end on tiny generated tones and a tiny random CNN: the command
line trains to a bundle with a report (spectrograms and playable clips of mistakes), predict
reads long recordings window by window, drift and update work on audio bundles, frozen-backbone
features are cached, mixup trains and cutmix is refused; the front end's shapes and masking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import sftune
from sftune import bundle as B
from sftune.backbones.audio import LogMel, SpecAugment, mel_filterbank
from sftune.cli.main import cli
from sftune.errors import SftuneError

from .conftest import FSDD_PATTERNS, TINY_AUDIO, tone, write_tones, write_wav

pytestmark = pytest.mark.usefixtures("one_thread")

KW = {k.replace(".", "__"): v for k, v in {**TINY_AUDIO, **FSDD_PATTERNS}.items()}
FLAGS = ["--model", "timm:test_efficientnet", "--set", "model.pretrained=false", "--workers", "0", "--batch-size", "16",
         "--no-progress", "--accelerator", "cpu", "--epochs", "2", "--set", "data.audio.n_mels=32",
         "--set", "data.audio.clip_seconds=0.25", "--set", "report.bootstrap=20"]


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory):
    """`sftune train` on an FSDD-like folder, task detected, labels and speakers from file names."""
    root = write_tones(tmp_path_factory.mktemp("cli") / "recordings")
    out = root.parent / "bundle"
    result = CliRunner().invoke(cli, ["train", "--data", str(root), "--out", str(out), *FLAGS,
                                      "--set", r"data.label_pattern=^(\d+)_", "--set", r"data.group_pattern=^\d+_([a-z]+)_"])
    assert result.exit_code == 0, result.output
    return root, out


def test_cli_trains_an_audio_bundle_with_a_report(cli_bundle):
    root, out = cli_bundle
    saved = B.read_json(out / B.LINEAGE)
    assert saved["task"] == "audio_classification" and saved["data"]["split"]["method"] == "group"
    import yaml

    config = yaml.safe_load((out / B.CONFIG).read_text())
    assert config["data"]["audio"]["sample_rate"] == 8000 and config["data"]["label_pattern"] == r"^(\d+)_"
    metrics = json.loads((out / B.METRICS).read_text())
    assert 0 <= metrics["acc"] <= 1 and metrics["n"] == len(saved["data"]["split"]["val_files"])
    report = json.loads((out / "report.json").read_text())
    html = (out / "report.html").read_text()
    assert report["data"]["kind"] == "audio"
    wrong = len(report["mistakes"])
    assert html.count("<audio controls") == wrong and html.count("data:audio/wav;base64,") == wrong
    if wrong:
        assert "alt=\"spectrogram of" in html
    assert type(sftune.load(out)).__name__ == "FineTunedAudioModel"


def test_predict_a_long_recording_window_by_window(cli_bundle, tmp_path):
    root, out = cli_bundle
    long = np.concatenate([tone(0, seconds=0.5), tone(2, seconds=0.5, seed=5)])
    path = write_wav(tmp_path / "long.ogg", long)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    result = CliRunner().invoke(cli, ["predict", str(out), str(path), str(bad), str(root / "1_bob_0.wav"),
                                      "--windows", "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output[result.output.index("["):])
    assert [Path(r["path"]).name for r in records] == ["long.ogg", "bad.wav", "1_bob_0.wav"]
    first = records[0]
    assert first["seconds"] == pytest.approx(1.0) and len(first["top_k"]) == 2
    starts = [w["start"] for w in first["windows"]]
    assert starts == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75])  # 0.25 s windows, half-window hop
    assert first["windows"][-1]["end"] == pytest.approx(1.0)
    assert all(w["label"] in ("0", "1", "2") and 0 <= w["score"] <= 1 for w in first["windows"])
    assert records[1]["skipped"] == "empty file (0 bytes)" and records[1]["label"] is None
    # The clip's prediction is the head on the mean of its windows' features.
    model = sftune.load(out)
    p = model.predict([path])[0]
    assert p.label == first["label"] and p.score == pytest.approx(first["score"], abs=1e-5)


def test_predict_without_windows_and_other_bundles_refuse_the_flag(cli_bundle, digits_dir, tmp_path):
    root, out = cli_bundle
    result = CliRunner().invoke(cli, ["predict", str(out), str(root), "--json"])
    records = json.loads(result.output[result.output.index("["):])
    assert result.exit_code == 0 and len(records) == 36 and "windows" not in records[0]
    refused = CliRunner().invoke(cli, ["predict", str(out), "--text", "hello"])
    assert refused.exit_code == 2 and "classifies audio" in refused.output and "--text" in refused.output


def test_eval_and_drift_on_an_audio_bundle(cli_bundle, tmp_path):
    root, out = cli_bundle
    evaluated = sftune.load(out).evaluate(root)
    assert evaluated["n"] == 36 and evaluated["skipped"] == 0
    result = CliRunner().invoke(cli, ["drift", str(out), "--data", str(root), "--json", "--permutations", "99"])
    assert result.exit_code in (0, 3), result.output  # 3: drift found; either way a verdict
    verdict = json.loads(result.output[result.output.index("{"):])
    assert verdict["drift"] == (result.exit_code == 3) and verdict["labeled"] is True
    assert verdict["new_size"] == 36 and verdict["tests"]
    # Unlabeled new audio (a folder of files with unknown names) works too.
    unlabeled = tmp_path / "new"
    for i in range(12):
        write_wav(unlabeled / f"clip{i}.wav", tone(i % 3, seed=50 + i))
    result = CliRunner().invoke(cli, ["drift", str(out), "--data", str(unlabeled), "--json", "--permutations", "99"])
    assert result.exit_code in (0, 3), result.output
    verdict = json.loads(result.output[result.output.index("{"):])
    assert verdict["labeled"] is False and verdict["new_size"] == 12


def test_update_an_audio_bundle_with_new_speakers(cli_bundle, tmp_path):
    root, out = cli_bundle
    new = write_tones(tmp_path / "new", speakers=("eve", "fay"), per_speaker=3)
    result = CliRunner().invoke(cli, ["update", str(out), "--data", str(new), "--out", str(tmp_path / "challenger"),
                                      "--epochs", "1"])
    assert result.exit_code in (0, 4), result.output  # promoted (0) or champion kept (4): the gate decided
    assert "champion" in result.output
    assert B.is_bundle(tmp_path / "challenger")
    assert json.loads((tmp_path / "challenger" / B.LINEAGE).read_text())["task"] == "audio_classification"


def test_linear_probe_caches_features_and_reuses_them(tones_dir, tmp_path, capsys):
    first = sftune.finetune(data=tones_dir, out=tmp_path / "a", strategy="linear_probe", **KW)
    logs = capsys.readouterr()
    sftune.finetune(data=tones_dir, out=tmp_path / "b", strategy="linear_probe", **KW)
    again = capsys.readouterr()
    assert "features: frozen backbone run once over 36 clips" in logs.out + logs.err
    assert "all from the cache" in again.out + again.err
    assert first.metrics["trainable_parameters"] < first.metrics["total_parameters"]
    assert sftune.load(first.path).evaluate(tones_dir)["n"] == 36


def test_full_fine_tuning_with_mixup_learns_the_tones(tones_dir, tmp_path):
    run = sftune.finetune(data=tones_dir, out=tmp_path / "m", strategy="full",
                          **{**KW, "train__epochs": 8, "train__mixup": 0.2, "train__lr": 3e-3})
    assert run.metrics["acc"] > 0.5, run.metrics  # three pitches: chance is 1/3


def test_cutmix_is_refused_for_audio(tones_dir, tmp_path):
    with pytest.raises(SftuneError, match="cutmix.*not for audio"):
        sftune.finetune(data=tones_dir, out=tmp_path / "c", **{**KW, "train__cutmix": 1.0})


# ----------------------------------------------------------------------------- the front end


def test_log_mel_shape_range_and_filterbank():
    frontend = LogMel(8000, win_ms=25, hop_ms=10, n_mels=40)
    assert (frontend.win_length, frontend.hop_length, frontend.n_fft) == (200, 80, 256)
    spec = frontend(torch.from_numpy(np.stack([tone(0, seconds=1.0), tone(2, seconds=1.0)])))
    assert spec.shape == (2, 1, 40, frontend.frames(8000)) == (2, 1, 40, 101)
    assert spec.min() >= 0 and spec.amax(dim=(1, 2, 3)).allclose(torch.ones(2))
    # the 400 Hz tone is loudest in a lower band than the 1200 Hz one
    loudest = spec.mean(dim=3)[:, 0].argmax(dim=1)
    assert loudest[0] < loudest[1]
    fb = mel_filterbank(129, 8000, 40, 0.0, 4000.0)
    assert fb.shape == (129, 40) and fb.max() <= 1.0 and (fb.sum(dim=0) > 0).all()


def test_spec_augment_masks_only_in_training_and_the_clip_mean():
    from sftune.backbones import create_backbone
    from sftune.backbones.audio import AudioBackbone

    augment = SpecAugment(freq_masks=2, freq_width=8, time_masks=2, time_width=10)
    torch.manual_seed(0)
    masked = augment(torch.ones(4, 1, 32, 50))
    assert (masked == 0).any() and (masked == 1).any()
    backbone = AudioBackbone(create_backbone("timm:test_efficientnet", pretrained=False), LogMel(8000, n_mels=32), augment)
    backbone.eval()
    a, b = torch.from_numpy(tone(0, seconds=0.25)), torch.from_numpy(tone(1, seconds=0.25))
    with torch.no_grad():
        one = backbone(torch.stack([a, b]))
        assert torch.equal(one, backbone(torch.stack([a, b])))  # eval: no masking
        both = backbone({"windows": torch.stack([torch.stack([a, b]), torch.stack([a, torch.zeros_like(a)])]),
                         "mask": torch.tensor([[True, True], [True, False]])})
    assert torch.allclose(both[0], one.mean(dim=0), atol=1e-5) and torch.allclose(both[1], one[0], atol=1e-5)


# Every strategy on audio, one short run each (the harness's tiny settings; 2-3 epochs where a
# strategy changes what trains after the first).
STRATEGY_RUNS = {"freeze_unfreeze": {"strategy__unfreeze_epoch": 1},
                 "gradual_unfreeze": {"strategy__stages": 2, "strategy__unfreeze_every": 1, "train__epochs": 3}}


@pytest.mark.parametrize("strategy", sorted(__import__("sftune.strategies", fromlist=["STRATEGIES"]).STRATEGIES.list()))
def test_every_strategy_trains_an_audio_bundle(strategy, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "strategy_tones"
    if not root.exists():
        write_tones(root, per_speaker=2)
    epochs = 2 if strategy in STRATEGY_RUNS else 1
    run = sftune.finetune(data=root, out=tmp_path_factory.mktemp(strategy) / "b", strategy=strategy,
                          **{**KW, "train__epochs": epochs, **STRATEGY_RUNS.get(strategy, {})})
    metrics = run.metrics
    assert metrics["n"] > 0 and 0 <= metrics["acc"] <= 1
    chosen = metrics["strategy"]
    assert chosen != "auto" and (strategy == "auto" or chosen == strategy)
    model = sftune.load(run.path)
    assert model.evaluate(root)["n"] == 24
