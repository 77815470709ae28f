"""Segmentation data: layouts, mask formats, class names, faults, joint transforms, dataset, batching."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sftune.errors import SftuneError
from sftune.tasks.segmentation.data import (
    MaskReader,
    MaskSample,
    find_labeled_masks,
    find_unlabeled_samples,
    is_segmentation_data,
    read_mask,
)
from sftune.tasks.segmentation.transforms import (
    SegmentationDataset,
    build_joint_transforms,
    decode_pairs,
    pad_collate,
)

from .conftest import (
    CAMVID,
    CAMVID_CLASSES,
    IMAGE_COLOURS,
    LAYOUTS,
    MASK_COLOURS,
    classes_from_image,
    draw_labels,
    needs_camvid,
    save_image,
    save_mask,
    write_seg_folder,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def find(path, **kw):
    """find_labeled_masks with its log captured: (result, log lines)."""
    lines: list[str] = []
    return find_labeled_masks(path, log=lines.append, **kw), lines


def truth(sample: MaskSample) -> np.ndarray:
    """The classes drawn into a fixture image (its colours name them)."""
    return classes_from_image(np.asarray(Image.open(sample.image).convert("RGB")))


# ------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_found_and_paired(tmp_path, layout):
    path = write_seg_folder(tmp_path / "d", layout=layout, n=8)
    assert is_segmentation_data(path)
    data, lines = find(path)
    assert len(data.train) + len(data.val) == 8
    assert all(s.image.stem == s.mask.stem for s in data.train + data.val)
    assert data.mask_format == "index" and data.classes == ["class_0", "class_1", "class_2"]
    assert data.skipped == [] and data.warnings == []
    if layout == "images_masks":
        assert data.split["method"] == "random" and len(data.val) == 2  # round(8 * 0.2)
    else:
        assert data.split["method"] == "given" and len(data.val) == 2
        assert sorted(s.image.stem for s in data.val) == ["img_006", "img_007"]  # the writer's val pairs
    assert sum(data.class_pixels["train"]) + sum(data.class_pixels["val"]) == 8 * 40 * 30
    assert data.sizes[data.train[0].image] == (30, 40)  # (height, width)
    assert len(data.digests) == 16 and len(data.fingerprint) == 64
    assert any("segmentation data:" in line for line in lines)


def test_camvid_test_split_is_not_used_for_training(tmp_path):
    root = write_seg_folder(tmp_path / "d", layout="camvid", n=8)
    save_image(draw_labels(0), root / "test" / "t.png")
    save_mask(draw_labels(0), root / "testannot" / "t.png")
    data, lines = find(root)
    assert all("test" not in s.image.parts for s in data.train + data.val)
    assert "test/ not used for training" in lines[0]


def test_random_split_is_seeded(seg_images_masks):
    a, _ = find(seg_images_masks, seed=1, val_fraction=0.25)
    b, _ = find(seg_images_masks, seed=1, val_fraction=0.25)
    c, _ = find(seg_images_masks, seed=3, val_fraction=0.25)
    assert a.val == b.val and len(a.val) == 2 and len(a.train) == 6
    assert {s.image for s in a.val} != {s.image for s in c.val}
    assert a.split == {**a.split, "method": "random", "seed": 1, "val_fraction": 0.25}
    assert a.split["val_files"] == sorted(s.image.relative_to(seg_images_masks).as_posix() for s in a.val)


def test_val_path_is_the_validation_set(tmp_path):
    train = write_seg_folder(tmp_path / "train", layout="images_masks", n=6)
    val = write_seg_folder(tmp_path / "val", layout="images_masks", n=3)
    data, _ = find(train, val_path=val)
    assert len(data.train) == 6 and len(data.val) == 3
    assert data.split["method"] == "given" and data.split["source"] == str(val)


def test_image_and_mask_pair_across_extensions_and_mask_suffixes(tmp_path):
    root = write_seg_folder(tmp_path / "d", layout="images_masks", n=6, image_ext="jpg")
    for m in sorted((root / "masks").glob("*.png"))[:3]:
        m.rename(m.with_name(m.stem + "_mask.png"))  # Carvana style
    data, _ = find(root)
    pairs = data.train + data.val
    assert len(pairs) == 6 and data.skipped == []
    assert {s.image.suffix for s in pairs} == {".jpg"} and sum(s.mask.stem.endswith("_mask") for s in pairs) == 3


def test_manifest_reads_pairs_and_ignores_test_rows(tmp_path):
    path = write_seg_folder(tmp_path / "d", layout="csv", n=8)
    with path.open("a") as fh:
        fh.write("img/img_000.png,ann/img_000.png,test\n")
    data, lines = find(path)
    assert len(data.train) == 6 and len(data.val) == 2 and data.split["method"] == "given"
    assert "1 test rows not used for training" in lines[0]


def test_manifest_paths_outside_its_folder_are_refused(tmp_path):
    write_seg_folder(tmp_path / "d", layout="images_masks", n=6)
    manifest = tmp_path / "d" / "lists" / "pairs.csv"
    manifest.parent.mkdir()
    manifest.write_text("image,mask\n" + "".join(f"../images/img_{i:03d}.png,../masks/img_{i:03d}.png\n"
                                                  for i in range(6)))
    with pytest.raises(SftuneError, match="points outside the manifest's folder.*allow_outside_root"):
        find(manifest)
    data, _ = find(manifest, allow_outside_root=True)
    assert len(data.train) + len(data.val) == 6


def test_is_segmentation_data_is_false_for_other_data(tmp_path, digits_dir):
    assert not is_segmentation_data(digits_dir)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\na.png,cat\n")
    assert not is_segmentation_data(csv_path)
    assert not is_segmentation_data(tmp_path / "missing")


def test_not_a_segmentation_folder_is_one_line_error(tmp_path, digits_dir):
    with pytest.raises(SftuneError, match="not a segmentation data folder: expected train/ \\+ trainannot/") as e:
        find(digits_dir)
    assert "\n" not in str(e.value)


def test_a_folder_without_any_pair_names_the_layout(tmp_path):
    root = write_seg_folder(tmp_path / "d", layout="images_masks", n=4)
    for m in (root / "masks").iterdir():
        m.unlink()
    with pytest.raises(SftuneError, match=r"no usable image/mask pairs .*images/ \+ masks/ layout.*image without a mask"):
        find(root)


def test_find_unlabeled_samples(seg_images_masks):
    samples = find_unlabeled_samples([seg_images_masks / "images"])
    assert len(samples) == 8 and all(s.mask is None for s in samples)


# ------------------------------------------------------------------------------ mask formats


@pytest.mark.parametrize("fmt", ["index", "palette", "16bit", "rgb"])
def test_each_mask_format_reads_the_drawn_classes(tmp_path, fmt):
    root = write_seg_folder(tmp_path / "d", n=4, classes=4, mask_format=fmt, table="classes.json" if fmt == "rgb" else None)
    data, lines = find(root)
    assert data.mask_format == fmt and data.num_classes == 4
    assert sum(line.startswith("masks: ") for line in lines) == 1  # the format is stated once
    reader = data.reader()
    for s in data.train + data.val:
        mask = reader(s.mask)
        assert mask.dtype == np.int64 and mask.shape == (30, 40)
        np.testing.assert_array_equal(mask, truth(s))


def test_palette_index_wins_over_palette_colour(tmp_path):
    path = save_mask(draw_labels(1, classes=4), tmp_path / "m.png", "palette")
    im = Image.open(path)
    assert im.mode == "P" and tuple(im.getpalette()[3:6]) == MASK_COLOURS[1] != (1, 1, 1)
    np.testing.assert_array_equal(read_mask(path, "palette"), draw_labels(1, classes=4))
    data, lines = find(write_seg_folder(tmp_path / "d", n=4, classes=4, mask_format="palette"))
    assert "palette indices, not colours" in next(line for line in lines if line.startswith("masks: "))
    assert data.colormap == MASK_COLOURS[:4]  # the palette's colours, for drawing


def test_binary_masks_map_255_to_foreground(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=6, classes=2, mask_format="binary")
    data, lines = find(root)
    assert data.mask_format == "binary" and data.classes == ["background", "foreground"]
    assert data.ignore_index == 255  # still marks padding; 255 in the masks means foreground
    assert "255 is read as class 1 (foreground)" in " ".join(lines)
    s = data.train[0]
    mask = data.reader()(s.mask)
    assert set(np.unique(mask).tolist()) == {0, 1}
    np.testing.assert_array_equal(mask, truth(s))


def test_binary_jpeg_masks_are_thresholded_and_warned(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=4, classes=2, mask_format="binary", mask_ext="jpg")
    data, _ = find(root)
    assert data.mask_format == "binary"
    assert len(data.warnings) == 4 and all("JPEG mask" in w for _, w in data.warnings)
    s = data.train[0]
    assert (data.reader()(s.mask) == truth(s)).mean() > 0.99


def test_16bit_values_above_255_are_read(tmp_path):
    labels = draw_labels(0).astype(np.uint16) * 150  # 0, 150, 300
    path = tmp_path / "m.png"
    Image.fromarray(labels).save(path)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(read_mask(path, "16bit"), labels.astype(np.int64))


@pytest.mark.parametrize("table", ["classes.json", "classes_dict.json", "labelmap.txt"])
def test_rgb_masks_through_a_colour_table_file(tmp_path, table):
    root = write_seg_folder(tmp_path / "d", n=4, classes=3, mask_format="rgb", table=table,
                            class_names=None)
    data, _ = find(root)
    assert data.mask_format == "rgb" and data.classes == ["c0", "c1", "c2"]
    assert data.colormap == MASK_COLOURS[:3]
    s = data.val[0]
    np.testing.assert_array_equal(data.reader()(s.mask), truth(s))


def test_rgb_masks_through_the_colormap_argument_and_unknown_colours(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=4, classes=3, mask_format="rgb")
    with pytest.raises(SftuneError, match="no colour table was found; put classes.json"):
        find(root)
    # Class 2's colour left out of the table: its pixels become ignore_index, counted once.
    data, _ = find(root, colormap=MASK_COLOURS[:2], ignore_index=255)
    assert data.classes == ["class_0", "class_1"]
    (where, problem), = data.warnings
    assert f"colour {MASK_COLOURS[2]} is not in the colour table" in problem and "in 4 masks" in problem
    s = data.train[0]
    expected = truth(s)
    expected[expected == 2] = 255
    np.testing.assert_array_equal(data.reader()(s.mask), expected)


def test_gray_rgb_masks_are_index_masks(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=4, classes=3, layout="images_masks")
    for m in (root / "masks").iterdir():
        Image.open(m).convert("RGB").save(m)
    data, _ = find(root)
    assert data.mask_format == "index" and data.num_classes == 3
    s = data.train[0]
    np.testing.assert_array_equal(data.reader()(s.mask), truth(s))


def test_a_colour_mask_among_index_masks_is_skipped(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=6, classes=3, layout="images_masks")
    odd = root / "masks" / "img_002.png"
    save_mask(draw_labels(2), odd, "rgb")
    data, _ = find(root)
    assert data.mask_format == "index" and len(data.train) + len(data.val) == 5
    (where, reason), = data.skipped
    assert str(odd) in where and "RGB colour mask among 5 index masks" in reason


# ------------------------------------------------------------------------------ classes, ignore_index


def test_class_names_from_classes_txt_or_argument_else_generated(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=4, class_names=["sky", "road", "car"])
    data, _ = find(root)
    assert data.classes == ["sky", "road", "car"]
    data, _ = find(root, classes=["a", "b", "c"])
    assert data.classes == ["a", "b", "c"]
    (root / "classes.txt").unlink()
    data, lines = find(root)
    assert data.classes == ["class_0", "class_1", "class_2"]
    assert any("set ignore_index" in line for line in lines)  # says class names are guessed from values


def test_ignore_index_is_configurable_camvid_style(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=8, classes=3, void=11)
    data, lines = find(root)  # 255 default: void 11 becomes a 12th class, and the log says what to set
    assert data.num_classes == 12 and data.classes[-1] == "class_11"
    assert any("set ignore_index to it (CamVid: 11)" in line for line in lines)
    data, lines = find(root, ignore_index=11)
    assert data.num_classes == 3 and data.ignore_index == 11 and data.warnings == []
    assert not any("set ignore_index" in line for line in lines)
    s = data.train[0]
    assert (data.reader()(s.mask)[-2:] == 11).all()
    assert data.mask_classes[s.mask] == (0, 1, 2)


def test_a_void_class_named_last_is_dropped(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=4, classes=3, void=3, class_names=["a", "b", "c", "void"])
    data, lines = find(root, ignore_index=3)
    assert data.classes == ["a", "b", "c"]
    assert any("'void' (3) is the ignore_index" in line for line in lines)


def test_gray_level_masks_are_warned_about(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=4, classes=3)
    for m in [*(root / "trainannot").iterdir(), *(root / "valannot").iterdir()]:
        save_mask(np.asarray(Image.open(m)) * 85, m)  # 0, 85, 170: saved "for viewing"
    data, _ = find(root)
    assert any("3 distinct values up to 170" in w and "gray levels" in w for _, w in data.warnings)


def test_values_beyond_the_named_classes_skip_the_pair(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=8, classes=2, class_names=["a", "b"])
    save_mask(draw_labels(0, classes=3), root / "trainannot" / "img_000.png")  # holds class 2
    data, _ = find(root)
    (where, reason), = data.skipped
    assert "img_000.png" in where and "mask values 2 are no class" in reason and "set ignore_index" in reason
    assert len(data.train) == 5
    with pytest.raises(SftuneError, match="mask values 2 are no class.*drop --strict"):
        find(root, strict=True)


def test_fingerprint_follows_content_and_settings(seg_camvid):
    a, _ = find(seg_camvid)
    assert find(seg_camvid)[0].fingerprint == a.fingerprint
    assert find(seg_camvid, ignore_index=2)[0].fingerprint != a.fingerprint
    save_mask(np.zeros((30, 40), np.uint8) + 1, seg_camvid / "trainannot" / "img_000.png")
    assert find(seg_camvid)[0].fingerprint != a.fingerprint


# ------------------------------------------------------------------------------ faults


def _jpeg_with_orientation(labels: np.ndarray, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(IMAGE_COLOURS[labels], mode="RGB").save(path, exif=exif.tobytes(), quality=95)


FAULTS = {
    # name: (make the fault in a CamVid folder, expected kind of entry, text in the reason)
    "no mask": (lambda r: (r / "trainannot" / "img_000.png").unlink(), "skipped", "image without a mask"),
    "no image": (lambda r: (r / "train" / "img_000.png").unlink(), "skipped", "mask without an image"),
    "size": (lambda r: save_mask(np.zeros((20, 40), np.uint8), r / "trainannot" / "img_000.png"), "skipped",
             "image is 40x30 but its mask is 40x20"),
    "corrupt image": (lambda r: (r / "train" / "img_000.png").write_bytes(b"not a png"), "skipped",
                      "img_000.png: not a readable image"),
    "corrupt mask": (lambda r: (r / "trainannot" / "img_000.png").write_bytes(b"\x89PNG broken"), "skipped",
                     "img_000.png: not a readable mask"),
    "ambiguous": (lambda r: shutil.copy(r / "train" / "img_000.png", r / "train" / "img_000.bmp"), "skipped",
                  "same name but different extensions"),
    "jpeg mask": (lambda r: save_mask(draw_labels(0), r / "trainannot" / "img_000.jpg")
                  and (r / "trainannot" / "img_000.png").unlink(), "warnings", "JPEG mask: lossy"),
    "leakage": (lambda r: (shutil.copy(r / "train" / "img_001.png", r / "val" / "dup.png"),
                           shutil.copy(r / "trainannot" / "img_001.png", r / "valannot" / "dup.png")),
                "warnings", "identical to training file"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_counted_listed_and_fatal_with_strict(tmp_path, fault):
    make, kind, text = FAULTS[fault]
    root = write_seg_folder(tmp_path / "d", n=8, classes=3)
    make(root)
    data, lines = find(root)
    entries = getattr(data, kind)
    assert len(entries) == 1 and text in entries[0][1], entries
    assert (data.warnings if kind == "skipped" else data.skipped) == []
    summary = next(line for line in lines if line.startswith("data problems:"))
    assert ("1 skipped, 0 warnings" if kind == "skipped" else "0 skipped, 1 warnings") in summary
    assert any(text in line for line in lines)  # the first faults are logged one by one
    with pytest.raises(SftuneError, match="drop --strict") as e:
        find(root, strict=True)
    assert text in str(e.value) and "\n" not in str(e.value)


def test_size_mismatch_names_both_files(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=8)
    save_mask(np.zeros((20, 40), np.uint8), root / "trainannot" / "img_003.png")
    data, _ = find(root)
    (where, _), = data.skipped
    assert where == f"{root / 'train' / 'img_003.png'} + {root / 'trainannot' / 'img_003.png'}"
    assert len(data.train) == 5


def test_exif_rotated_images_are_compared_upright(tmp_path):
    """load_rgb turns a photo by its EXIF orientation: the mask must match the turned image."""
    root = write_seg_folder(tmp_path / "d", layout="images_masks", n=6)
    labels = draw_labels(0)  # stored 40x30; orientation 6 shows it 30x40
    (root / "images" / "img_000.png").unlink()
    (root / "images" / "img_001.png").unlink()
    _jpeg_with_orientation(labels, root / "images" / "img_000.jpg", 6)
    _jpeg_with_orientation(labels, root / "images" / "img_001.jpg", 6)
    save_mask(np.ascontiguousarray(np.rot90(labels, -1)), root / "masks" / "img_000.png")  # drawn upright: fine
    save_mask(labels, root / "masks" / "img_001.png")  # drawn on the stored pixels: misaligned
    data, _ = find(root)
    (where, reason), = data.skipped
    assert "img_001.jpg" in where and "EXIF orientation 6" in reason
    good = next(s for s in data.train + data.val if s.image.name == "img_000.jpg")
    assert data.sizes[good.image] == (40, 30)
    ds = SegmentationDataset([good], data.reader(), build_joint_transforms(MEAN, STD, None)[1])
    image, mask = ds[0]
    assert image.shape == (3, 40, 30) and mask.shape == (40, 30)


def test_many_faults_are_all_listed_but_few_logged(tmp_path):
    root = write_seg_folder(tmp_path / "d", layout="images_masks", n=16)
    for i in range(8):
        (root / "masks" / f"img_{i:03d}.png").unlink()
    data, lines = find(root)
    assert len(data.skipped) == 8 and len(data.train) + len(data.val) == 8
    assert "8 no mask" in next(line for line in lines if line.startswith("data problems:"))
    assert sum(line.startswith("  ") for line in lines) == 6  # 5 faults + "... 3 more"


# ------------------------------------------------------------------------------ transforms


def _unnormalize(image: torch.Tensor) -> np.ndarray:
    x = image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    return (x.clamp(0, 1) * 255).permute(1, 2, 0).numpy()


def _agreement(image: torch.Tensor, mask: torch.Tensor, ignore: int = 255, margin: int = 2) -> float:
    """Share of labeled pixels, at least ``margin`` px inside their region, whose image colour
    names the mask's class (bilinear image edges blur over a pixel or two; region interiors don't)."""
    m = mask.numpy()
    padded = np.pad(m, margin, mode="edge")
    h, w = m.shape
    inside = np.ones_like(m, dtype=bool)
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            inside &= padded[dy: dy + h, dx: dx + w] == m
    keep = inside & (m != ignore)
    return float((classes_from_image(_unnormalize(image))[keep] == m[keep]).mean())


def test_train_transform_keeps_image_and_mask_aligned(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=2, size=(64, 48), classes=4)
    data, _ = find(root)
    train_tf, _ = build_joint_transforms(MEAN, STD, crop_size=40, scale=(0.5, 2.0), hflip=0.5)
    ds = SegmentationDataset(data.train, data.reader(), train_tf, seed=0)
    flipped = 0
    for epoch in range(12):
        image, mask = ds[(0, epoch)]
        assert image.shape == (3, 40, 40) and image.dtype == torch.float32
        assert mask.shape == (40, 40) and mask.dtype == torch.int64
        # Interpolated edges blur a few pixels; a misaligned mask (unflipped, unscaled) disagrees on
        # the whole rectangle: compare with the mask mirrored as a control.
        assert _agreement(image, mask) > 0.99
        control = _agreement(image, mask.flip(-1))
        flipped += control < 0.9
    assert flipped >= 6  # the control fails for most draws, so the check above can fail


def test_transforms_add_no_new_mask_values_and_pad_with_ignore(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=2, size=(40, 30), classes=4, void=11)
    data, _ = find(root, ignore_index=11)
    train_tf, _ = build_joint_transforms(MEAN, STD, crop_size=64, scale=(0.5, 1.5), ignore_index=11)
    ds = SegmentationDataset(data.train, data.reader(), train_tf, seed=0)
    allowed = set(np.unique(data.reader()(data.train[0].mask)).tolist()) | {11}
    padded = 0
    for epoch in range(10):
        image, mask = ds[(0, epoch)]
        assert image.shape == (3, 64, 64)  # every draw is smaller than the crop: padded
        assert set(mask.unique().tolist()) <= allowed
        dark = (image == image.amin(dim=(1, 2), keepdim=True)).all(0)  # padded image pixels are 0 (black)
        padded += int(((mask == 11) | ~dark).all())
    assert padded == 10


def test_eval_transform_changes_no_geometry(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=2, size=(41, 29))
    data, _ = find(root)
    _, eval_tf = build_joint_transforms(MEAN, STD, crop_size=16)
    s = data.train[0]
    image, mask = SegmentationDataset([s], data.reader(), eval_tf)[0]
    assert image.shape == (3, 29, 41) and mask.shape == (29, 41)
    np.testing.assert_array_equal(mask.numpy(), data.reader()(s.mask))
    pixels = torch.from_numpy(np.array(Image.open(s.image))).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(image, (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])


# ------------------------------------------------------------------------------ dataset


def test_dataset_is_deterministic_per_seed_epoch_index_and_decoded_is_identical(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=6, size=(40, 30))
    data, _ = find(root)
    train_tf, _ = build_joint_transforms(MEAN, STD, crop_size=24)
    reader = data.reader()
    decoded = decode_pairs(data.train, reader)
    assert decoded.labels.dtype == np.uint8 and decoded.nbytes >= 4 * 40 * 30 * len(data.train)
    a = SegmentationDataset(data.train, reader, train_tf, seed=5)
    b = SegmentationDataset(data.train, reader, train_tf, seed=5, decoded=decoded)
    torch.manual_seed(123)  # the global RNG must not matter
    for key in [(0, 0), (3, 2), (1, 7)]:
        x1, y1 = a[key]
        _ = a[(2, 9)]  # other draws in between must not matter either
        x2, y2 = b[key]
        torch.testing.assert_close(x1, x2)
        assert torch.equal(y1, y2)
    epochs = [a[(0, e)][1] for e in range(4)]
    assert any(not torch.equal(epochs[0], y) for y in epochs[1:])
    other_seed = SegmentationDataset(data.train, reader, train_tf, seed=6)
    assert any(not torch.equal(a[(i, 0)][1], other_seed[(i, 0)][1]) for i in range(len(data.train)))


def test_unlabeled_samples_give_an_all_ignore_mask(tmp_path):
    root = write_seg_folder(tmp_path / "d", layout="images_masks", n=2)
    samples = find_unlabeled_samples([root / "images"])
    _, eval_tf = build_joint_transforms(MEAN, STD, None)
    image, mask = SegmentationDataset(samples, MaskReader("index", None, 255), eval_tf)[0]
    assert image.shape == (3, 30, 40) and mask.shape == (30, 40) and (mask == 255).all()
    decoded = decode_pairs(samples, MaskReader("index", None, 255))
    assert (decoded[1][1] == 255).all()


def test_pad_collate_pads_to_a_multiple_of_the_stride():
    a = (torch.ones(3, 30, 40), torch.zeros(30, 40, dtype=torch.int64))
    b = (torch.full((3, 20, 50), 2.0), torch.ones(20, 50, dtype=torch.int64))
    images, masks = pad_collate([a, b], stride=32, ignore_index=255)
    assert images.shape == (2, 3, 32, 64) and masks.shape == (2, 32, 64) and masks.dtype == torch.int64
    assert (images[0, :, :30, :40] == 1).all() and (images[0, :, 30:] == 0).all() and (images[0, :, :, 40:] == 0).all()
    assert (masks[0, :30, :40] == 0).all() and (masks[0, 30:] == 255).all() and (masks[0, :, 40:] == 255).all()
    assert (masks[1, :20, :50] == 1).all() and (masks[1, 20:] == 255).all()
    images, masks = pad_collate([a, b], stride=1, ignore_index=-1)
    assert images.shape == (2, 3, 30, 50) and masks[1, 25, 0] == -1


# ------------------------------------------------------------------------------ real data


@needs_camvid()
def test_real_camvid_subset():
    start = time.perf_counter()
    data, lines = find(CAMVID, ignore_index=11, classes=CAMVID_CLASSES)
    elapsed = time.perf_counter() - start
    assert len(data.train) == 62 and len(data.val) == 34 and data.split["method"] == "given"
    assert data.mask_format == "index" and data.classes == CAMVID_CLASSES
    assert data.skipped == [] and data.warnings == []
    assert "12 values: 0-11" in next(line for line in lines if line.startswith("masks: "))
    assert all(n > 0 for n in data.class_pixels["train"])
    # ~0.5 s on an idle machine; generous here because other jobs share the CPUs.
    assert elapsed < 6, f"scanning CamVid took {elapsed:.1f} s"
    plain, _ = find(CAMVID)
    assert plain.num_classes == 12  # without ignore_index=11, void is a 12th class
    _, eval_tf = build_joint_transforms(MEAN, STD, None, ignore_index=11)
    image, mask = SegmentationDataset(data.val[:1], data.reader(), eval_tf)[0]
    assert image.shape == (3, 360, 480) and mask.shape == (360, 480)
    assert set(mask.unique().tolist()) <= set(range(12))


def test_classes_json_names_without_colours_for_index_masks(tmp_path):
    root = write_seg_folder(tmp_path / "d", n=4)
    (root / "classes.json").write_text(json.dumps(["bg", "x", "y"]))
    data, _ = find(root)
    assert data.classes == ["bg", "x", "y"] and data.colormap is None


@pytest.mark.parametrize("fmt", ["index", "palette", "binary", "rgb"])
def test_classes_and_colormap_of_a_result_read_the_data_again_alike(tmp_path, fmt):
    """A bundle stores classes, colormap and ignore_index and passes them back for evaluation."""
    classes = 2 if fmt == "binary" else 4
    names = None if fmt == "binary" else ["a", "b", "c", "void"]
    root = write_seg_folder(tmp_path / "d", n=6, classes=classes, mask_format=fmt, class_names=names,
                            table="labelmap.txt" if fmt == "rgb" else None)
    ignore = 255 if fmt == "binary" else 3
    first, _ = find(root, ignore_index=ignore)
    again, _ = find(root, ignore_index=ignore, classes=first.classes, colormap=first.colormap)
    assert (again.mask_format, again.classes, again.train, again.val) == (first.mask_format, first.classes,
                                                                        first.train, first.val)
    if fmt == "rgb":  # 'void' (3) is ignore_index: 3 classes, its colour stays in the table
        assert first.classes == ["a", "b", "c"] and len(first.colormap) == 4
        voids = sum(int((truth(s) == 3).sum()) for s in first.train)
        assert voids > 0 and sum(first.class_pixels["train"]) == len(first.train) * 40 * 30 - voids
        s = first.train[0]
        np.testing.assert_array_equal(first.reader()(s.mask), truth(s))  # the void colour reads as 3
