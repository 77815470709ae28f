"""Finding and checking audio: layouts, file-name patterns, splits (given, pattern, by group), and
every kind of bad file (empty, corrupt, zero-length, silent, non-finite, unreadable) skipped with
a reason or fatal with strict; reading (downmix, resampling, windows)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sftune.data.audio import AudioError, load_mono, random_window, read_audio, resample, window_starts, windows
from sftune.data.audio_sources import find_labeled_audio, is_audio_data
from sftune.data.splits import group_split_indices
from sftune.errors import SftuneError

from .conftest import FSDD_PATTERNS, tone, write_tones, write_wav

LABEL, GROUP = FSDD_PATTERNS["data.label_pattern"], FSDD_PATTERNS["data.group_pattern"]


# ----------------------------------------------------------------------------- bad files


def _bad_files(folder: Path) -> dict[str, Path]:
    """One file of each bad kind, in a class folder, next to good ones."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    corrupt = folder / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)))
    zero = write_wav(folder / "zero.wav", np.zeros(0, dtype=np.float32))
    silent = write_wav(folder / "silent.wav", np.zeros(800, dtype=np.float32))
    nan = np.full(800, np.nan, dtype=np.float32)
    nonfinite = write_wav(folder / "nan.wav", nan, subtype="FLOAT")
    return {"empty": empty, "corrupt": corrupt, "zero": zero, "silent": silent, "nan": nonfinite}


REASONS = {"empty": "empty file", "corrupt": "not readable audio", "zero": "no samples", "silent": "silent",
           "nan": "non-finite"}


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_each_bad_kind_has_its_reason(kind, tmp_path):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(AudioError, match=REASONS[kind]):
        read_audio(path)


def test_unreadable_file_in_a_manifest_is_skipped_with_its_reason(tmp_path):
    root = write_tones(tmp_path / "rec", per_speaker=2)
    rows = ["path,label"] + [f"{p.name},{p.name[0]}" for p in sorted(root.glob("*.wav"))] + ["missing.wav,0"]
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    data = find_labeled_audio(root / "m.csv", seed=1)
    assert [(Path(p).name, r.split(" (")[0]) for p, r in data.skipped] == [("missing.wav", "cannot be read")]


def test_bad_files_are_skipped_counted_and_named(tmp_path):
    root = write_tones(tmp_path / "rec")
    bad = _bad_files(tmp_path / "bad")
    for kind, path in bad.items():
        path.rename(root / f"1_bad_{kind}.wav")
    data = find_labeled_audio(root, label_pattern=LABEL, seed=1)
    skipped = {Path(p).name: r for p, r in data.skipped}
    assert len(skipped) == len(REASONS)
    for kind, reason in REASONS.items():
        assert reason in skipped[f"1_bad_{kind}.wav"]
    assert all(s.path.name not in skipped for s in data.train + data.val)


def test_strict_makes_the_first_bad_file_an_error_naming_it(tmp_path):
    root = write_tones(tmp_path / "rec")
    write_wav(root / "2_zed_0.wav", np.zeros(400, dtype=np.float32))
    with pytest.raises(SftuneError, match=r"2_zed_0\.wav: silent.*--strict"):
        find_labeled_audio(root, label_pattern=LABEL, strict=True)


def test_pipeline_warns_once_with_a_count(tmp_path):
    from sftune.config import build_config
    from sftune.pipelines.audio import AudioPipeline

    from .conftest import TINY_AUDIO

    root = write_tones(tmp_path / "rec")
    (root / "0_zed_9.wav").write_bytes(b"")
    write_wav(root / "1_zed_9.wav", tone(1, channels=2))  # stereo: downmixed
    write_wav(root / "2_zed_9.wav", tone(2, rate=16000), rate=16000)  # another rate: resampled
    lines: list[str] = []
    config = build_config(overrides={**TINY_AUDIO, "data.path": str(root), "data.label_pattern": LABEL})
    pipeline = AudioPipeline(config, 0, lines.append)
    pipeline.load()
    text = "\n".join(lines)
    assert "skipped" in text and "0_zed_9.wav: empty file" in text and "skipped 1 unusable audio file(s) in total" in text
    assert sum("downmixed to mono" in line for line in lines) == 1 and "1 file(s) with several channels" in text
    assert "16000 Hz are resampled to 8000 Hz" in text and config.data.audio.sample_rate == 8000


# ----------------------------------------------------------------------------- layouts and splits


def test_label_pattern_reads_fsdd_names_and_the_official_split(tones_dir):
    data = find_labeled_audio(tones_dir, label_pattern=LABEL, val_pattern=r"_[0]\.wav$")
    assert data.classes == ["0", "1", "2"] and data.split["method"] == "pattern"
    assert all(s.path.name.endswith("_0.wav") for s in data.val)
    assert not any(s.path.name.endswith("_0.wav") for s in data.train)
    assert all(s.label == s.path.name[0] for s in data.train + data.val)


def test_group_split_keeps_each_speaker_on_one_side(tones_dir):
    data = find_labeled_audio(tones_dir, label_pattern=LABEL, group_pattern=GROUP, val_fraction=0.25, seed=3)
    train = {data.groups[s.path] for s in data.train}
    val = {data.groups[s.path] for s in data.val}
    assert data.split["method"] == "group" and val and train and not train & val
    assert sorted(val) == data.split["val_groups"]
    assert not [w for w in data.warnings if "both training and validation" in w[1]]


def test_a_split_that_shares_speakers_is_warned_about(tones_dir):
    data = find_labeled_audio(tones_dir, label_pattern=LABEL, group_pattern=GROUP, val_pattern=r"_0\.wav$")
    warned = [p for _, p in data.warnings if "both training and validation" in p]
    assert len(warned) == 1 and "ann" in warned[0] and "speakers" in warned[0]
    with pytest.raises(SftuneError, match="both training and validation"):
        find_labeled_audio(tones_dir, label_pattern=LABEL, group_pattern=GROUP, val_pattern=r"_0\.wav$", strict=True)


def test_group_split_rule():
    groups = ["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5
    train, val = group_split_indices(groups, 0.25, seed=0)
    assert len(val) == 5 and len({groups[i] for i in val}) == 1 and sorted(train + val) == list(range(20))
    assert group_split_indices(groups, 0.25, seed=0) == (train, val)  # seeded: the same every time
    assert group_split_indices(["x"] * 4, 0.5, seed=0) == ([0, 1, 2, 3], [])  # one group: never all to val


def test_class_folders_with_a_test_folder(tmp_path):
    from .conftest import write_class_folders

    root = write_class_folders(tmp_path / "f", n=3)
    (root / "val").rename(root / "test")
    (root / "train" / "0" / "notes.txt").write_text("not audio")
    data = find_labeled_audio(root)
    assert data.split["method"] == "given" and len(data.val) == 6 and len(data.train) == 9
    assert any("not an audio file" in p for _, p in data.warnings)


def test_manifest_with_split_and_group_columns(tmp_path):
    root = write_tones(tmp_path / "rec", per_speaker=2)
    rows = ["path,label,split,group"]
    for p in sorted(root.glob("*.wav")):
        digit, speaker, _ = p.stem.split("_")
        rows.append(f"{p.name},{digit},{'test' if speaker == 'dan' else 'train'},{speaker}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    data = find_labeled_audio(root / "manifest.csv")
    assert {data.groups[s.path] for s in data.val} == {"dan"} and "dan" not in {data.groups[s.path] for s in data.train}
    assert is_audio_data(root / "manifest.csv") and is_audio_data(root)


def test_manifest_outside_its_folder_is_refused(tmp_path):
    write_wav(tmp_path / "outside.wav", tone(0))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.csv").write_text("path,label\n../outside.wav,0\n")
    with pytest.raises(SftuneError, match="outside the manifest's folder"):
        find_labeled_audio(tmp_path / "sub" / "m.csv")


def test_flat_folder_without_a_pattern_says_how_to_label(tones_dir):
    with pytest.raises(SftuneError, match=re.escape("data.label_pattern")):
        find_labeled_audio(tones_dir)


def test_names_that_miss_the_pattern_are_warned_about(tmp_path):
    root = write_tones(tmp_path / "rec")
    write_wav(root / "unnamed.wav", tone(0))
    data = find_labeled_audio(root, label_pattern=LABEL)
    assert any("does not match data.label_pattern" in p and "unnamed.wav" in w for w, p in data.warnings)


# ----------------------------------------------------------------------------- reading


def test_stereo_is_downmixed_and_rates_resampled(tmp_path):
    stereo = np.stack([tone(0), -tone(0) * 0 + tone(0) * 0.5], axis=1)
    path = write_wav(tmp_path / "s.flac", stereo, rate=16000)
    audio = read_audio(path)
    assert audio.channels == 2 and audio.rate == 16000 and audio.samples.ndim == 1
    np.testing.assert_allclose(audio.samples, stereo.mean(axis=1), atol=1e-3)  # FLAC is 16-bit
    assert len(load_mono(path, 8000)) == len(stereo) // 2
    t = np.arange(16000) / 16000
    down = resample(np.sin(2 * np.pi * 300 * t).astype(np.float32), 16000, 8000)
    peak = np.argmax(np.abs(np.fft.rfft(down)))  # 1 s at 8 kHz: bin = Hz
    assert len(down) == 8000 and peak == 300


def test_windows_cover_a_long_recording_and_pad_a_short_one():
    assert window_starts(100, 40, 20) == [0, 20, 40, 60]
    assert window_starts(90, 40, 20) == [0, 20, 40, 50]  # the last window ends at the end
    assert window_starts(30, 40, 20) == [0]
    w = windows(np.arange(30, dtype=np.float32), 40, 20)
    assert w.shape == (1, 40) and w[0, 29] == 29 and not w[0, 30:].any()
    rng = np.random.default_rng(0)
    crop = random_window(np.ones(30, dtype=np.float32), 40, rng)
    assert crop.shape == (40,) and crop.sum() == 30


def test_audio_is_detected_by_task_auto(tones_dir, tmp_path):
    """task=auto finds audio files (a folder of them, or a manifest naming them); images stay images."""
    from sftune.config import build_config, resolve_task

    config = resolve_task(build_config(overrides={"data.path": str(tones_dir)}))
    assert config.task.name == "audio_classification" and config.model.name == "efficientnet_lite0"
    (tmp_path / "pics" / "a").mkdir(parents=True)
    (tmp_path / "pics" / "a" / "x.png").write_bytes(b"")
    assert not is_audio_data(tmp_path / "pics")
