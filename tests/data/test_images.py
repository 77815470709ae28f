"""Reading single image files: every mode becomes RGB, broken files are refused with a reason."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

import sftune.data.images as images
from sftune.data.images import inspect_image, is_image_file, load_rgb, to_rgb

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def _close(pixel, expected, tol=3):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


# ------------------------------------------------------------------------ modes -> RGB


def test_grayscale_png_becomes_rgb_with_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (6, 4), 77).save(path)
    im = load_rgb(path)
    assert im.mode == "RGB"
    assert im.size == (6, 4)
    assert im.getpixel((3, 2)) == (77, 77, 77)


def test_rgba_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    im.putpixel((1, 1), (255, 0, 0, 255))  # one opaque red pixel
    im.putpixel((2, 2), (0, 0, 0, 128))  # half-transparent black
    im.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == WHITE  # transparent -> white, not the hidden red and not black
    assert out.getpixel((1, 1)) == RED
    assert _close(out.getpixel((2, 2)), (127, 127, 127), tol=2)


def test_la_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (3, 3), (0, 0)).save(path)  # black, fully transparent
    assert load_rgb(path).getpixel((1, 1)) == WHITE


def test_palette_with_transparency_composited_on_white(tmp_path):
    path = tmp_path / "palette.png"
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))  # index 0 black, 1 red
    im.putpixel((1, 1), 1)
    im.info["transparency"] = 0  # index 0 is transparent
    im.save(path)
    with Image.open(path) as check:
        assert check.mode == "P" and check.info.get("transparency") == 0
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == WHITE  # the transparent black becomes white
    assert out.getpixel((1, 1)) == RED


def test_palette_without_transparency_keeps_colors(tmp_path):
    path = tmp_path / "palette.gif"
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    im.save(path)
    assert load_rgb(path).getpixel((2, 2)) == BLUE


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # C=0 M=Y=max K=0: red
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    out = load_rgb(path)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((8, 8))
    assert r > 230 and g < 30 and b < 30, (r, g, b)


def test_16bit_png_values_scale_to_0_255(tmp_path):
    path = tmp_path / "deep.png"
    raw = np.array([[0, 65535], [128 * 257, 257]], dtype=np.uint16)
    Image.fromarray(raw).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"
    out = load_rgb(path)
    assert out.mode == "RGB"
    arr = np.asarray(out)
    assert arr.dtype == np.uint8
    assert arr[..., 0].tolist() == [[0, 255], [128, 1]]
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_dark_16bit_png_is_scaled_like_any_16bit_png(tmp_path):
    path = tmp_path / "dark16.png"
    Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint16)).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"
    arr = np.asarray(load_rgb(path))[..., 0]
    # 255 / 65535 of full scale is black in 8 bits (at most 1 after rounding).
    assert arr.max() <= 1, arr.tolist()


def test_exif_orientation_6_rotates_and_swaps_size(tmp_path):
    path = tmp_path / "rotated.jpg"
    im = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    im.save(path, exif=exif.tobytes())
    with Image.open(path) as check:
        assert check.size == (40, 20)
        assert check.getexif().get(0x0112) == 6
    out = load_rgb(path)
    assert out.size == (20, 40)
    assert out.mode == "RGB"


def test_exif_orientation_via_to_rgb_in_memory(tmp_path):
    path = tmp_path / "rotated8.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (30, 10), GREEN).save(path, exif=exif.tobytes())
    with Image.open(path) as im:
        assert to_rgb(im).size == (10, 30)


def test_animated_gif_gives_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 2
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.getpixel((4, 4)) == RED


def test_animated_gif_first_frame_even_if_handle_was_advanced(tmp_path):
    path = tmp_path / "anim2.gif"
    frames = [Image.new("RGB", (8, 8), GREEN), Image.new("RGB", (8, 8), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as im:
        im.seek(1)
        im.seek(0)
        assert to_rgb(im).getpixel((1, 1)) == GREEN


def test_webp(tmp_path):
    path = tmp_path / "x.webp"
    Image.new("RGB", (8, 8), GREEN).save(path, lossless=True)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.getpixel((3, 3)) == GREEN


def test_bmp(tmp_path):
    path = tmp_path / "x.bmp"
    Image.new("RGB", (8, 6), BLUE).save(path)
    out = load_rgb(path)
    assert out.size == (8, 6) and out.getpixel((0, 5)) == BLUE


def test_to_rgb_handles_bilevel_and_32bit_int_in_memory():
    assert to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == WHITE
    deep = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(deep))[0, :, 0].tolist() == [0, 255]


# ----------------------------------------------------------------- inspect_image (the scan)


@pytest.mark.parametrize(
    "name, mode, kwargs",
    [
        ("a.png", "L", {}),
        ("a.png", "RGBA", {}),
        ("a.jpg", "CMYK", {}),
        ("a.webp", "RGB", {"lossless": True}),
        ("a.bmp", "RGB", {}),
        ("a.gif", "P", {}),
        ("a.tiff", "RGB", {}),
    ],
)
def test_inspect_accepts_readable_images_and_hashes_bytes(tmp_path, name, mode, kwargs):
    path = tmp_path / name
    Image.new(mode, (20, 12)).save(path, **kwargs)
    digest, reason = inspect_image(path)
    assert reason is None
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_inspect_accepts_16bit_and_exif_rotated(tmp_path):
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(deep)
    rotated = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(rotated, exif=exif.tobytes())
    assert inspect_image(deep)[1] is None
    assert inspect_image(rotated)[1] is None


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    digest, reason = inspect_image(path)
    assert digest is None
    assert "empty" in reason and "0 bytes" in reason
    with pytest.raises(OSError):  # PIL.UnidentifiedImageError is an OSError
        load_rgb(path)


def test_truncated_jpeg_is_refused(tmp_path):
    full = tmp_path / "full.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, quality=90)
    data = full.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    digest, reason = inspect_image(path)
    assert digest is None
    assert reason.startswith("not a readable image")
    with pytest.raises(OSError):  # LOAD_TRUNCATED_IMAGES is off: no grey half-image
        load_rgb(path)


def test_text_file_named_jpg_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n", encoding="utf-8")
    assert is_image_file(path)  # the extension alone says image...
    digest, reason = inspect_image(path)
    assert digest is None  # ...the content says otherwise
    assert "not a readable image" in reason and "UnidentifiedImageError" in reason
    with pytest.raises(OSError):
        load_rgb(path)


def test_unreadable_path_reports_cannot_read(tmp_path):
    digest, reason = inspect_image(tmp_path / "missing.png")
    assert digest is None and reason.startswith("file not found")
    (tmp_path / "folder.png").mkdir()
    digest, reason = inspect_image(tmp_path / "folder.png")
    assert digest is None and reason.startswith("cannot read")


def test_image_over_pixel_limit_is_refused_by_scan(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    path = tmp_path / "big.png"
    Image.new("RGB", (12, 12)).save(path)  # 144 px > 100
    digest, reason = inspect_image(path)
    assert digest is None
    assert "too large" in reason and "12x12" in reason
    small = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(small)  # exactly at the limit: accepted
    assert inspect_image(small)[1] is None


def test_image_over_pixel_limit_is_refused_by_loader(tmp_path, monkeypatch):
    # load_rgb relies on PIL's own limit (set from MAX_PIXELS at import), with the warning as an error.
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "big.png"
    Image.new("RGB", (12, 12)).save(path)  # 144 px: over the limit, under PIL's 2x hard error
    with pytest.raises((Image.DecompressionBombWarning, Image.DecompressionBombError)):
        load_rgb(path)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (20, 20)).save(huge)  # 400 px: PIL's hard error
    with pytest.raises(Image.DecompressionBombError):
        load_rgb(huge)


def test_pil_limit_matches_module_limit():
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS == 16_384 * 16_384
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_loader_honours_module_pixel_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    path = tmp_path / "big.png"
    Image.new("RGB", (12, 12)).save(path)
    assert inspect_image(path)[1] is not None  # the scan refuses it...
    with pytest.raises(Exception):  # ...so the loader must too
        load_rgb(path)


def test_hidden_files_and_unknown_extensions_are_not_images(tmp_path):
    assert not is_image_file(tmp_path / ".hidden.png")
    assert not is_image_file(tmp_path / "notes.txt")
    assert is_image_file(tmp_path / "UPPER.JPG")
    assert is_image_file(tmp_path / "scan.TIFF")
