"""Bad image files: each is skipped with a warning naming it (and counted), or refused with --strict;
odd-but-valid images (1x1, 20000 px wide, animated, EXIF-rotated, unicode class names) train."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_digits, with_callbacks
from sftune.data.images import MAX_PIXELS, load_rgb
from sftune.data.sources import find_labeled_images
from sftune.errors import SftuneError

from .conftest import assert_clear_error, cli_run, good_images, save_png, train_args

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ----------------------------------------------------------------------- bad files


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, side: int = 20_000) -> Path:
    """A real decompression bomb: a ~50 KB PNG that inflates to side x side 1-bit pixels (400 Mpx)."""
    row = b"\x00" * (1 + -(-side // 8))  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def _truncated_jpeg(p: Path) -> None:
    data = _jpeg_bytes()
    p.write_bytes(data[: len(data) // 2])


def _corrupt_png(p: Path) -> None:
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))


def _zero_bytes(p: Path) -> None:
    p.write_bytes(b"")


def _text_named_jpg(p: Path) -> None:
    p.write_text("this is not an image\n")


def _html_named_png(p: Path) -> None:
    p.write_text("<!doctype html><html><body>404 Not Found</body></html>")


def _bomb(p: Path) -> None:
    png_bomb(p)


def _dangling_symlink(p: Path) -> None:
    p.symlink_to(p.parent / "gone.png")


def _symlink_loop_file(p: Path) -> None:
    other = p.with_name("loop_b.jpg")
    p.symlink_to(other)
    other.symlink_to(p)


def _unreadable(p: Path) -> None:
    save_png(p, (8, 8))
    p.chmod(0)


BAD_FILES = {
    # name: (writer, file name, words the skip reason must hold)
    "truncated JPEG": (_truncated_jpeg, "cut.jpg", "not a readable image"),
    "corrupt PNG": (_corrupt_png, "noise.png", "not a readable image"),
    "zero-byte file": (_zero_bytes, "empty.jpg", "empty file (0 bytes)"),
    "text file named .jpg": (_text_named_jpg, "notes.jpg", "not a readable image"),
    "HTML page named .png": (_html_named_png, "page.png", "not a readable image"),
    "decompression bomb (20000x20000 PNG, 50 KB)": (_bomb, "bomb.png", "too large (20000x20000 px"),
    "dangling symlink": (_dangling_symlink, "dangling.png", "file not found"),
    "symlink loop (a.jpg -> b.jpg -> a.jpg)": (_symlink_loop_file, "loop_a.jpg", "cannot read"),
    "unreadable permissions (chmod 000)": (_unreadable, "locked.png", "cannot read (Permission denied)"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_skipped_with_its_reason_and_refused_when_strict(kind, tmp_path, bad_input):
    write, name, reason = BAD_FILES[kind]
    if kind.startswith("unreadable") and IS_ROOT:
        pytest.skip("root reads any file whatever its permissions (covered by the simulated variant below)")
    root = good_images(tmp_path / "data", per_class=4)
    bad = root / "1" / name
    write(bad)

    data = find_labeled_images(root)
    assert [(Path(p).name, r) for p, r in data.skipped if Path(p).name == name], data.skipped
    (path, why), = [(p, r) for p, r in data.skipped if Path(p).name == name]
    assert path == str(bad) and reason in why, why
    assert len(data.train) + len(data.val) == 12  # every good image kept
    bad_input(f"{kind}: skipped", "skipped with warning")

    with pytest.raises(SftuneError) as e:
        find_labeled_images(root, strict=True)
    message = str(e.value)
    assert str(bad) in message and "--strict" in message and "\n" not in message, message
    bad_input(f"{kind} with --strict", "clear error")


def test_unreadable_file_simulated(tmp_path, monkeypatch, bad_input):
    """chmod 000 cannot stop root, so the EACCES that any other user gets is injected here."""
    root = good_images(tmp_path / "data", per_class=4)
    locked = save_png(root / "2" / "locked.png", (8, 8))
    real = Path.read_bytes

    def read_bytes(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    data = find_labeled_images(root)
    assert data.skipped == [(str(locked), "cannot read (Permission denied); fix its permissions or remove it")]
    bad_input("unreadable file (EACCES)", "skipped with warning")


def test_bomb_is_refused_before_decoding_also_when_predicting(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000 and 20_000 * 20_000 > MAX_PIXELS
    with pytest.raises(Image.DecompressionBombError, match="over the limit"):
        load_rgb(bomb)  # the loader used by training, eval and predict applies the same limit


def test_symlink_folder_loop_does_not_hang(tmp_path, bad_input):
    root = good_images(tmp_path / "data", per_class=4)
    (root / "0" / "again").symlink_to(root / "0", target_is_directory=True)
    (root / "1" / "up").symlink_to(root, target_is_directory=True)
    data = find_labeled_images(root)
    assert len(data.train) + len(data.val) == 12 and not data.skipped
    bad_input("symlink loop between folders", "handled")


def test_file_that_disappears_during_training_is_one_clear_line(tmp_path, monkeypatch, bad_input):
    """Checked at the start, then deleted (a network share dropping out): a one-line error naming it,
    also when the file is read in a DataLoader worker process."""
    import lightning as L

    root = good_images(tmp_path / "data", per_class=6)
    victim = sorted((root / "0").iterdir())[0]

    class Delete(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            victim.unlink(missing_ok=True)

    with_callbacks(monkeypatch, Delete())
    result = cli_run(*train_args(root, tmp_path / "run", "--strategy", "full", "--workers", "1",
                                 "--set", "data.decode_cache=false", "--set", "trainer.channels_last=false"))
    line = assert_clear_error(result, str(victim), "could not be read during training")
    assert "Original Traceback" not in line
    bad_input("image deleted while training (read in a worker)", "clear error")


# ----------------------------------------------------------------- odd but valid


def test_exif_rotation_is_honoured_in_the_decoded_cache(tmp_path):
    from sftune.data.decoded_cache import decoded_images
    from sftune.data.sources import Sample

    path = tmp_path / "rotated.jpg"
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255  # left half black, right half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": displayed 20 wide, 40 high, black on top
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=100)
    shown = np.asarray(load_rgb(path))
    assert shown.shape == (40, 20, 3)
    assert shown[:15].mean() < 30 and shown[25:].mean() > 225
    decoded, _ = decoded_images([Sample(path, "x")], ["exif-test-" + os.urandom(4).hex()], short_side=64, workers=1)
    assert np.asarray(decoded[0]).shape == (40, 20, 3)


def test_odd_images_and_unicode_classes_train_end_to_end(tmp_path, bad_input):
    """One real run over a folder holding every kind of bad file next to odd-but-valid images:
    bad files skipped and counted, leakage warned and counted, the rest trains; --strict refuses."""
    src = write_digits(tmp_path / "src", per_class=8)
    classes = {"0": "café", "1": "猫 cat", "2": "🐱-ü"}  # accents, CJK + space, emoji
    root = tmp_path / "data"
    for digit, name in classes.items():
        files = sorted((src / digit).iterdir())
        for split, chunk in (("train", files[:6]), ("val", files[6:])):
            (root / split / name).mkdir(parents=True)
            for f in chunk:
                shutil.copy(f, root / split / name / f.name)
    train = root / "train"
    # Odd but valid: must be kept and trained on.
    save_png(train / "café" / "one_pixel.png", (1, 1), 0)
    save_png(train / "猫 cat" / "wide.png", (20_000, 8), 200)
    frames = [Image.new("L", (16, 16), 0), Image.new("L", (16, 16), 255)]
    frames[0].save(train / "🐱-ü" / "anim.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (30, 10), (0, 0, 0)).save(train / "café" / "rotated.jpg", exif=exif.tobytes())
    Image.new("RGB", (16, 16)).save(train / "café" / "actually_png.jpg", format="PNG")  # wrong extension
    # Bad: skipped, each named, counted.
    bad = []
    for kind in ("truncated JPEG", "zero-byte file", "text file named .jpg", "decompression bomb (20000x20000 PNG, 50 KB)",
                 "dangling symlink", "symlink loop (a.jpg -> b.jpg -> a.jpg)"):
        write, name, _ = BAD_FILES[kind]
        write(train / "猫 cat" / name)
        bad.append(train / "猫 cat" / name)
    bad.append(train / "猫 cat" / "loop_b.jpg")  # the other end of the loop
    # Leakage: a validation image copied into training.
    leaked = sorted((root / "val" / "café").iterdir())[0]
    shutil.copy(leaked, train / "café" / "copy_of_val.png")

    out = tmp_path / "run"
    result = cli_run(*train_args(root, out, "--strategy", "full", "--epochs", "2"))
    assert result.exit_code == 0, result.output[-3000:]
    assert "Traceback" not in result.output
    listed = [path for path in bad if f"warning: skipped {path}: " in result.output]
    assert len(listed) == 5  # the first 5 are named one per line, then the total
    assert "skipped 7 unreadable file(s) in total" in result.output
    assert "train/val leakage" in result.output and str(leaked) in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped"] == 7 and metrics["data_warnings"] == 1
    lineage = json.loads((out / "lineage.json").read_text())
    assert {Path(s["path"]).name for s in lineage["data"]["skipped"]} == {p.name for p in bad}
    assert lineage["data"]["train_images"] == 6 * 3 + 6  # 5 odd-but-valid images + the leaked copy
    labels = json.loads((out / "labels.json").read_text(encoding="utf-8"))["classes"]
    assert labels == sorted(classes.values())
    for kind in ("1x1 image", "20000x8 image", "animated GIF", "EXIF-rotated JPEG", "PNG named .jpg",
                 "unicode class folder names"):
        bad_input(kind, "handled")
    for path in bad:
        bad_input(f"{path.name} inside a training run", "skipped with warning")
    bad_input("the same image in train and val", "warning")

    predicted = cli_run("predict", out, train / "🐱-ü" / "anim.gif", train / "猫 cat" / "wide.png", "--json")
    assert predicted.exit_code == 0, predicted.output
    assert {p["label"] for p in json.loads(predicted.output)} <= set(classes.values())

    strict = cli_run(*train_args(root, tmp_path / "strict", "--strict"))
    assert_clear_error(strict, "--strict")
    assert not (tmp_path / "strict").exists()
    bad_input("the same folder with --strict", "clear error")


def test_leakage_alone_is_fatal_with_strict(tmp_path, bad_input):
    root = tmp_path / "data"
    src = good_images(tmp_path / "src", per_class=6)
    for digit in ("0", "1", "2"):
        files = sorted((src / digit).iterdir())
        for split, chunk in (("train", files[:4]), ("val", files[4:])):
            (root / split / digit).mkdir(parents=True)
            for f in chunk:
                shutil.copy(f, root / split / digit / f.name)
    twin = root / "train" / "2" / "twin.png"
    shutil.copy(root / "val" / "2" / sorted(os.listdir(root / "val" / "2"))[0], twin)
    data = find_labeled_images(root)
    assert len(data.warnings) == 1 and str(twin) in data.warnings[0][1] and "leakage" in data.warnings[0][1]
    with pytest.raises(SftuneError, match="leakage") as e:
        find_labeled_images(root, strict=True)
    assert "drop --strict" in str(e.value)
    bad_input("train/val duplicate with --strict", "clear error")


def test_same_image_under_two_labels_is_warned(tmp_path, bad_input):
    root = good_images(tmp_path / "data", per_class=4)
    first = sorted((root / "0").iterdir())[0]
    shutil.copy(first, root / "1" / "mislabelled.png")
    data = find_labeled_images(root)
    assert any("labelled '0', '1'" in problem for _, problem in data.warnings), data.warnings
    bad_input("one image in two class folders", "warning")
