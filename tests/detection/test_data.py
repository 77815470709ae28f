"""Detection data: the four formats, class ids, every annotation fault, EXIF, joint box transforms,
the dataset, batching, and the real BCCD data."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sftune.data.images import load_rgb
from sftune.errors import SftuneError
from sftune.tasks.detection.data import (
    BoxSample,
    BoxTarget,
    _stored_to_displayed,
    find_labeled_boxes,
    find_unlabeled_samples,
    is_detection_data,
)
from sftune.tasks.detection.transforms import (
    DetectionDataset,
    build_box_transforms,
    decode_images,
    detection_collate,
)

from .conftest import (
    BCCD,
    CLASS_COLOURS,
    CLASSES,
    FORMATS,
    SIZE,
    add_voc_object,
    box_colour_class,
    draw,
    needs_bccd,
    save_png,
    truth,
    voc_xml,
    write_detection,
)


def find(path, **kw):
    """find_labeled_boxes with its log captured: (result, log lines)."""
    lines: list[str] = []
    return find_labeled_boxes(path, log=lines.append, **kw), lines


def as_objects(sample: BoxSample, classes: list[str]) -> list[tuple[tuple[float, ...], str]]:
    t = sample.target
    return sorted((tuple(round(float(v), 3) for v in b), classes[int(c)]) for b, c in zip(t.boxes, t.labels))


def expected(sample: BoxSample, negatives: int = 0) -> list[tuple[tuple[float, ...], str]]:
    return sorted((tuple(float(v) for v in box), CLASSES[c]) for box, c in truth(sample.image.stem, negatives))


def pixels(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) 0-255."""
    return (image.clamp(0, 1) * 255).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_the_same_boxes_and_classes(tmp_path, fmt):
    path = write_detection(tmp_path / fmt, fmt, n=6, n_val=2, negatives=1)
    assert is_detection_data(path)
    data, lines = find(path)
    assert data.format == fmt and data.classes == CLASSES
    assert sorted(s.image.stem for s in data.val) == ["img_004", "img_005"] and len(data.train) == 4
    assert data.split["method"] == "given"
    for s in data.train + data.val:
        got, want = as_objects(s, data.classes), expected(s, negatives=1)
        assert [c for _, c in got] == [c for _, c in want]
        np.testing.assert_allclose([b for b, _ in got] or np.zeros((0, 4)), [b for b, _ in want] or np.zeros((0, 4)),
                                   atol=1e-3)  # YOLO's 6 decimals
        assert s.target.boxes.dtype == np.float32 and s.target.labels.dtype == np.int64
        assert not s.target.difficult.any() and not s.target.iscrowd.any()
    negative = next(s for s in data.train if s.image.stem == "img_000")
    assert len(negative.target) == 0 and negative.target.boxes.shape == (0, 4)
    assert data.skipped == [] and data.warnings == []
    assert data.sizes[negative.image] == (48, 64)  # (height, width)
    assert len(data.digests) == 6 and len(data.fingerprint) == 64
    assert data.box_stats.negatives == {"train": 1, "val": 0}
    stats = data.box_stats
    assert sum(stats.class_boxes["train"]) == len(stats.widths) == len(stats.heights) == len(stats.image_sizes) > 0
    assert (stats.image_sizes == (48, 64)).all() and stats.summary()["width_px"]["q50"] > 10
    assert (data.category_ids is not None) == (fmt == "coco")
    format_lines = [line for line in lines if line.startswith("detection data:")]
    assert len(format_lines) == 1 and {"voc": "Pascal VOC", "coco": "COCO JSON", "yolo": "YOLO txt",
                                       "csv": "CSV"}[fmt] in format_lines[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_a_split_a_seeded_random_split_is_made(tmp_path, fmt):
    path = write_detection(tmp_path / fmt, fmt, n=10, split=False)
    data, _ = find(path, seed=3)
    assert data.split["method"] == "random" and len(data.val) == 2 and len(data.train) == 8
    again, _ = find(path, seed=3)
    assert [s.image for s in again.val] == [s.image for s in data.val]


def test_format_argument_forces_and_checks(tmp_path):
    path = write_detection(tmp_path / "d", "yolo")
    with pytest.raises(SftuneError, match="unknown; use one of voc, coco, yolo, csv"):
        find(path, format="pascal")
    with pytest.raises(SftuneError, match="no usable training images"):
        find(path, format="voc")


def test_coco_non_contiguous_category_ids_are_mapped_and_stored(tmp_path):
    root = write_detection(tmp_path / "c", "coco", category_ids=[42, 3, 7])  # apple=42, banana=3, cherry=7
    data, lines = find(root)
    # Classes in ascending id order: banana (3), cherry (7), apple (42); category_ids[i] is the id of class i.
    assert data.classes == ["banana", "cherry", "apple"] and data.category_ids == [3, 7, 42]
    for s in data.train + data.val:  # class names (not indices) still match the drawn objects
        assert [c for _, c in as_objects(s, data.classes)] == [c for _, c in expected(s)]
    assert any("COCO categories (ascending id)" in line for line in lines)


def test_coco_xywh_iscrowd_negatives_and_roboflow_supercategory(tmp_path):
    root = tmp_path / "rf"
    objects = [((5, 6, 25, 20), 1)]
    save_png(objects, root / "train" / "a.png")
    save_png([], root / "train" / "empty.png")
    save_png([((30, 10, 50, 30), 0)], root / "valid" / "b.png")
    cats = [{"id": 0, "name": "fruit", "supercategory": "none"}, {"id": 1, "name": "apple", "supercategory": "fruit"},
            {"id": 2, "name": "banana", "supercategory": "fruit"}]
    (root / "train" / "_annotations.coco.json").write_text(json.dumps({
        "images": [{"id": 0, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 1, "file_name": "empty.png", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 2, "bbox": [5, 6, 20, 14], "iscrowd": 0},
                        {"id": 2, "image_id": 0, "category_id": 1, "bbox": [40, 30, 10, 10], "iscrowd": 1}],
        "categories": cats}))
    (root / "valid" / "_annotations.coco.json").write_text(json.dumps({
        "images": [{"id": 0, "file_name": "b.png", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [30, 10, 20, 20]}],
        "categories": cats}))
    assert is_detection_data(root)
    data, lines = find(root)
    assert data.classes == ["apple", "banana"] and data.category_ids == [1, 2]
    assert any("category 0 'fruit'" in line and "not a class" in line for line in lines)
    a = next(s for s in data.train if s.image.name == "a.png")
    np.testing.assert_array_equal(a.target.boxes, [[5, 6, 25, 20], [40, 30, 50, 40]])  # xywh -> xyxy
    assert a.target.labels.tolist() == [1, 0] and a.target.iscrowd.tolist() == [False, True]
    empty = next(s for s in data.train if s.image.name == "empty.png")
    assert len(empty.target) == 0  # an image without annotations is a negative, kept
    assert [s.image.name for s in data.val] == ["b.png"] and data.split["method"] == "given"
    assert data.box_stats.crowd["train"] == 1 and len(data.box_stats.widths) == 1  # crowd boxes aside
    assert data.skipped == [] and data.warnings == []
    alone, _ = find(root / "train" / "_annotations.coco.json")  # one COCO file: a random split of its images
    assert alone.format == "coco" and len(alone.train) + len(alone.val) == 2


def test_coco_annotation_for_an_unlisted_image_and_an_unknown_category(tmp_path):
    root = write_detection(tmp_path / "c", "coco", split=False, n=4)
    file = root / "annotations" / "instances_all.json"
    spec = json.loads(file.read_text())
    spec["annotations"].append({"id": 999, "image_id": 12345, "category_id": 1, "bbox": [1, 1, 5, 5]})
    spec["annotations"].append({"id": 1000, "image_id": 100, "category_id": 99, "bbox": [1, 1, 5, 5]})
    file.write_text(json.dumps(spec))
    data, _ = find(root)
    reasons = sorted(reason for _, reason in data.skipped)
    assert len(reasons) == 2
    assert "category_id 99 is not in 'categories'" in reasons[0]
    assert "image id 12345, which is not in 'images'" in reasons[1]


@pytest.mark.parametrize("names", ["yaml", "yaml_dict", "classes.txt", "none"])
def test_yolo_class_names_from_yaml_list_dict_classes_txt_or_indices(tmp_path, names):
    root = write_detection(tmp_path / "y", "yolo", names=names)
    data, _ = find(root)
    assert data.classes == (CLASSES if names != "none" else ["class_0", "class_1", "class_2"])


def test_yolo_normalised_boxes_are_scaled_to_the_displayed_image(tmp_path):
    root = tmp_path / "y"
    save_png([((8, 12, 40, 36), 2)], root / "images" / "a.png", size=(80, 40))
    save_png([], root / "images" / "b.png", size=(80, 40))
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("2 0.3 0.6 0.4 0.6\n")  # cx 24, cy 24, w 32, h 24 of 80x40
    (root / "labels" / "b.txt").write_text("")  # empty: an image without objects, no warning
    (root / "classes.txt").write_text("apple\nbanana\ncherry\n")
    data, _ = find(root)
    a = next(s for s in data.train + data.val if s.image.stem == "a")
    np.testing.assert_allclose(a.target.boxes, [[8, 12, 40, 36]], atol=1e-4)
    assert a.target.labels.tolist() == [2] and data.warnings == [] and data.skipped == []


def test_yolo_roboflow_layout_and_polygon_lines(tmp_path):
    root = write_detection(tmp_path / "rf", "yolo", layout="roboflow")
    label = root / "train" / "labels" / "img_000.txt"
    label.write_text("1 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n")  # a polygon: its bounding box
    data, lines = find(root)
    assert data.split["method"] == "given" and len(data.val) == 2
    s = next(s for s in data.train if s.image.stem == "img_000")
    np.testing.assert_allclose(s.target.boxes, [[6.4, 4.8, 32, 24]], atol=1e-4)
    assert "train/images/ + train/labels/" in lines[0]


def test_csv_aliases_negatives_and_paths_outside_the_folder(tmp_path):
    root = tmp_path / "c"
    save_png([((2, 3, 20, 30), 0)], root / "img" / "a.png")
    save_png([], root / "img" / "b.png")
    (root / "boxes.csv").write_text("filename,class,xmin,ymin,xmax,ymax\nimg/a.png,apple,2,3,20,30\nimg/b.png,,,,,\n")
    assert is_detection_data(root) and is_detection_data(root / "boxes.csv")  # the folder of one box CSV too
    data, _ = find(root / "boxes.csv")
    assert data.classes == ["apple"] and len(data.train) + len(data.val) == 2
    b = next(s for s in data.train + data.val if s.image.name == "b.png")
    assert len(b.target) == 0
    (root / "sub").mkdir()
    (root / "sub" / "boxes.csv").write_text("path,xmin,ymin,xmax,ymax,label\n../img/a.png,2,3,20,30,apple\n")
    with pytest.raises(SftuneError, match="outside the CSV's folder"):
        find(root / "sub" / "boxes.csv")
    with pytest.raises(SftuneError, match="no path column"):
        (root / "bad.csv").write_text("xmin,ymin,xmax,ymax,label\n1,2,3,4,a\n")
        find(root / "bad.csv", format="csv")


def test_voc_without_imagesets_and_xml_beside_images(tmp_path):
    root = tmp_path / "flat"
    for i in range(5):
        objects = truth(f"img_{i:03d}")
        save_png(objects, root / f"img_{i:03d}.png")
        (root / f"img_{i:03d}.xml").write_text(voc_xml(f"img_{i:03d}", f"img_{i:03d}.png", objects, CLASSES))
    assert is_detection_data(root)
    data, _ = find(root)
    assert data.format == "voc" and len(data.train) + len(data.val) == 5 and data.split["method"] == "random"
    for s in data.train + data.val:
        assert as_objects(s, data.classes) == expected(s)


def test_is_detection_data_is_false_for_segmentation_and_classification(tmp_path):
    classes = tmp_path / "cls"
    for c in ("cat", "dog"):
        save_png([], classes / c / "a.png")
    assert not is_detection_data(classes)
    seg = tmp_path / "seg"
    save_png([], seg / "images" / "a.png")
    save_png([], seg / "masks" / "a.png")
    assert not is_detection_data(seg)
    save_png([], seg / "labels" / "a.png")  # masks kept in labels/: still not YOLO
    assert not is_detection_data(seg)
    empty_ann = tmp_path / "voc_empty"
    (empty_ann / "Annotations").mkdir(parents=True)
    assert not is_detection_data(empty_ann)  # VOC needs .xml files in Annotations/
    (tmp_path / "other.csv").write_text("image,label\na.png,x\n")
    assert not is_detection_data(tmp_path / "other.csv")
    assert not is_detection_data(tmp_path / "missing")
    with pytest.raises(SftuneError, match="in no detection layout"):
        find(seg)


def test_val_path_is_the_validation_set(tmp_path):
    train = write_detection(tmp_path / "a", "voc", n=4, split=False)
    val = write_detection(tmp_path / "b", "yolo", n=3, split=False)
    data, _ = find(train, val_path=val)
    assert len(data.train) == 4 and len(data.val) == 3 and data.split["method"] == "given"
    assert all("b" in s.image.parts for s in data.val)


def test_classes_argument_maps_names_and_drops_others(tmp_path):
    root = write_detection(tmp_path / "d", "voc", n=6)
    data, _ = find(root, classes=["Cherry", "apple"])  # a model's classes: matched by the class-name rule
    assert data.classes == ["Cherry", "apple"]
    assert all(set(s.target.labels.tolist()) <= {0, 1} for s in data.train + data.val)
    assert data.skipped and all("class 'banana' is not one of the classes" in r for _, r in data.skipped)


def test_fingerprint_follows_boxes_and_content(tmp_path):
    root = write_detection(tmp_path / "d", "voc")
    a, _ = find(root)
    assert find(root)[0].fingerprint == a.fingerprint
    add_voc_object(root / "Annotations" / "img_001.xml", "apple", (40, 30, 60, 44))
    assert find(root)[0].fingerprint != a.fingerprint


def test_find_unlabeled_samples(tmp_path):
    root = write_detection(tmp_path / "d", "yolo", split=False, n=3)
    samples = find_unlabeled_samples([root / "images"])
    assert [s.image.name for s in samples] == ["img_000.png", "img_001.png", "img_002.png"]
    assert all(s.target is None for s in samples)
    image, target = DetectionDataset(samples, build_box_transforms()[1])[0]
    assert image.shape == (3, 48, 64) and target["boxes"].shape == (0, 4)


# ------------------------------------------------------------------------------ faults

XML = "Annotations/img_001.xml"


def _swap_png(root: Path, name: str) -> None:
    shutil.copy(root / "JPEGImages" / "img_002.png", root / "JPEGImages" / name)


FAULTS = {
    # name: (make the fault in a VOC folder, the list it lands in, text in the reason)
    "degenerate": (lambda r: add_voc_object(r / XML, "apple", (30, 20, 30, 20)), "skipped",
                   "has zero width and height"),
    "negative size": (lambda r: add_voc_object(r / XML, "apple", (30, 20, 10, 40)), "skipped", "negative width"),
    "clipped": (lambda r: add_voc_object(r / XML, "apple", (50, 30, 80, 46)), "warnings",
                "reaches outside the 64x48 image; clipped to (50, 30, 64, 46)"),
    "outside": (lambda r: add_voc_object(r / XML, "apple", (70, 30, 90, 46)), "skipped",
                "lies outside the 64x48 image"),
    "duplicate": (lambda r: add_voc_object(r / XML, CLASSES[truth("img_001")[0][1]], truth("img_001")[0][0]),
                  "skipped", "repeats box"),
    "near duplicate": (lambda r: add_voc_object(r / XML, CLASSES[truth("img_001")[0][1]],
                                                np.add(truth("img_001")[0][0], (0, 0, 0, 0.2))),
                       "skipped", "(IoU 0.98)"),
    "missing image": (lambda r: (r / "JPEGImages" / "img_001.png").unlink(), "skipped", "its image is missing"),
    "missing annotation": (lambda r: (r / XML).unlink(), "warnings",
                           "no annotation (expected"),
    "class variants": (lambda r: add_voc_object(r / XML, "Apple ", (40, 30, 60, 44)), "warnings",
                       "labels 'apple' (4), 'Apple' (1) are one class"),
    "unknown class": (lambda r: ((r / "classes.txt").write_text("apple\nbanana\ncherry\n"),
                                 add_voc_object(r / XML, "durian", (40, 30, 60, 44))), "skipped",
                      "class 'durian' is not one of the classes"),
    "bad xml": (lambda r: (r / XML).write_text("<annotation><object>"), "skipped", "not a readable VOC XML"),
    "unreadable image": (lambda r: (r / "JPEGImages" / "img_001.png").write_bytes(b"not a png"), "skipped",
                         "not a readable image"),
    "size mismatch": (lambda r: (r / XML).write_text((r / XML).read_text().replace("<width>64<", "<width>128<")),
                      "warnings", "the annotation says the image is 128x48 but it is 64x48"),
    "leakage": (lambda r: (shutil.copy(r / "JPEGImages" / "img_001.png", r / "JPEGImages" / "dup.png"),
                           shutil.copy(r / XML, r / "Annotations" / "dup.xml"),
                           (r / "ImageSets/Main/val.txt").write_text((r / "ImageSets/Main/val.txt").read_text()
                                                                     + "dup\n")),
                "warnings", "identical to training file"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_counted_named_and_fatal_with_strict(tmp_path, fault):
    make, kind, text = FAULTS[fault]
    root = write_detection(tmp_path / "d", "voc", n=6)
    make(root)
    data, lines = find(root)
    entries = getattr(data, kind)
    assert len(entries) == 1 and text in entries[0][1], entries
    assert (data.warnings if kind == "skipped" else data.skipped) == []
    summary = next(line for line in lines if line.startswith("data problems:"))
    assert ("1 skipped, 0 warnings" if kind == "skipped" else "0 skipped, 1 warnings") in summary
    kind_line = next(line for line in lines if line.startswith("  1 "))  # one line per kind: count, files, reason
    assert text in kind_line and Path(entries[0][0].split(" ")[0]).name in kind_line
    with pytest.raises(SftuneError, match="drop --strict") as e:
        find(root, strict=True)
    assert text in str(e.value) and "\n" not in str(e.value)


def test_missing_annotation_keeps_the_image_as_a_negative(tmp_path):
    root = write_detection(tmp_path / "d", "voc", n=6)
    (root / XML).unlink()
    data, _ = find(root)
    s = next(s for s in data.train if s.image.stem == "img_001")
    assert len(s.target) == 0


def test_yolo_missing_label_file_and_bad_lines(tmp_path):
    root = write_detection(tmp_path / "y", "yolo", n=6)
    (root / "labels" / "train" / "img_001.txt").unlink()
    (root / "labels" / "train" / "img_002.txt").write_text("7 0.5 0.5 0.2 0.2\nx y\n0 0.5 0.5 0 0.3\n")
    (root / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data, lines = find(root)
    assert [r for _, r in data.warnings] == [next(r for _, r in data.warnings)]
    assert "no label file" in data.warnings[0][1]
    reasons = " | ".join(r for _, r in data.skipped)
    assert "class index 7 is not one of the 3 classes" in reasons
    assert "is not a box" in reasons and "has zero width" in reasons
    assert "label file without an image" in reasons
    assert len(data.skipped) == 4
    assert len(next(s for s in data.train if s.image.stem == "img_001").target) == 0


def test_class_names_differing_by_case_or_whitespace_merge(tmp_path):
    root = write_detection(tmp_path / "d", "voc", n=6)
    for xml in (root / "Annotations").glob("img_00[01].xml"):
        xml.write_text(xml.read_text().replace(">apple<", ">APPLE <").replace(">banana<", "> Banana<"))
    data, lines = find(root)
    assert data.classes == CLASSES  # the most frequent spellings
    assert len(data.warnings) == 2 and all("are one class" in r for _, r in data.warnings)
    assert any("2 class name variants" in line for line in lines)
    for s in data.train + data.val:
        assert as_objects(s, data.classes) == expected(s)


def test_voc_difficult_objects_are_kept_flagged_and_said(tmp_path):
    root = write_detection(tmp_path / "d", "voc", n=6)
    objects = truth("img_002")
    (root / "Annotations" / "img_002.xml").write_text(voc_xml("img_002", "img_002.png", objects, CLASSES,
                                                              difficult={0}))
    data, lines = find(root, strict=True)  # not a fault: VOC's own flag
    s = next(s for s in data.train if s.image.stem == "img_002")
    assert s.target.difficult.tolist() == [True] + [False] * (len(objects) - 1)
    assert data.box_stats.difficult == {"train": 1, "val": 0}
    assert any("difficult" in line and "left out of mAP" in line for line in lines)
    _, target = DetectionDataset([s], build_box_transforms()[1])[0]
    assert target["difficult"].tolist() == s.target.difficult.tolist()


def test_many_faults_are_all_listed_but_few_files_named(tmp_path):
    root = write_detection(tmp_path / "d", "voc", n=6)
    for i in range(5):
        add_voc_object(root / "Annotations" / f"img_00{i}.xml", "apple", (5, 5, 5, 9))
    data, lines = find(root)
    assert len(data.skipped) == 5
    line = next(line for line in lines if line.startswith("  5 degenerate box"))
    assert "img_000.xml" in line and "img_002.xml" in line and "img_004.xml" not in line and "2 more" in line


# ------------------------------------------------------------------------------ EXIF


def _save_with_orientation(image: np.ndarray, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    fmt = "JPEG" if path.suffix == ".jpg" else "PNG"
    Image.fromarray(image).save(path, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_stored_to_displayed_follows_exif_transpose(tmp_path, orientation):
    objects = [((5, 8, 21, 30), 0), ((40, 2, 60, 12), 2)]
    path = tmp_path / "a.png"
    _save_with_orientation(draw(objects), path, orientation)
    shown = np.asarray(load_rgb(path))
    boxes = _stored_to_displayed(np.array([b for b, _ in objects], np.float64), orientation, SIZE)
    for box, (_, c) in zip(boxes, objects):
        x0, y0, x1, y1 = box.astype(int)
        region = shown[y0:y1, x0:x1]
        assert region.size and (region == CLASS_COLOURS[c]).all()  # the whole box, exactly
        assert (shown == CLASS_COLOURS[c]).all(-1).sum() == (x1 - x0) * (y1 - y0)  # and nothing outside it


def test_exif_rotated_jpegs_boxes_are_on_the_displayed_image(tmp_path):
    """Boxes drawn on the displayed (upright) image are used as they are; boxes drawn on the
    stored pixels (the annotation records the stored size) are turned with the image."""
    root = tmp_path / "d"
    stored_objects = [((6, 8, 26, 30), 1)]  # stored 64x48; EXIF 6 shows it 48x64, turned clockwise
    displayed = _stored_to_displayed(np.array([stored_objects[0][0]], np.float64), 6, SIZE)[0]
    (root / "JPEGImages").mkdir(parents=True)
    for name, boxes, size in (("upright", displayed, (48, 64)), ("stored", stored_objects[0][0], SIZE)):
        image = draw(stored_objects)
        image[-1, -1] = 200 if name == "upright" else 0  # two files, not two copies of one
        _save_with_orientation(image, root / "JPEGImages" / f"{name}.jpg", 6)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(
            voc_xml(name, f"{name}.jpg", [(tuple(float(v) for v in boxes), 1)], CLASSES, size))
    for i in range(3):
        save_png(truth(f"img_{i:03d}"), root / "JPEGImages" / f"img_{i:03d}.png")
        (root / "Annotations" / f"img_{i:03d}.xml").write_text(
            voc_xml(f"img_{i:03d}", f"img_{i:03d}.png", truth(f"img_{i:03d}"), CLASSES))
    data, lines = find(root)
    (where, reason), = data.warnings
    assert "stored.jpg" in where and "EXIF orientation 6" in reason and "turned" in reason
    _, eval_tf = build_box_transforms()
    for s in data.train + data.val:
        if s.image.suffix != ".jpg":
            continue
        assert data.sizes[s.image] == (64, 48)  # (height, width) upright
        np.testing.assert_allclose(s.target.boxes, [displayed], atol=1e-4)
        image, target = DetectionDataset([s], eval_tf)[0]
        assert image.shape == (3, 64, 48)
        assert box_colour_class(pixels(image), target["boxes"][0]) == 1  # the box sits on the banana


# ------------------------------------------------------------------------------ transforms


def test_train_transform_keeps_boxes_on_their_objects(tmp_path):
    """Flip, IoU crop, zoom out and scale: every surviving box still covers its own rectangle,
    and its label, difficult and iscrowd entries followed it."""
    root = write_detection(tmp_path / "d", "voc", n=6)
    data, _ = find(root)
    train_tf, _ = build_box_transforms(hflip=0.5, iou_crop=0.7, zoom_out=0.3, min_size=(40, 56, 72), max_size=160)
    samples = [s for s in data.train if len(s.target) == 3]
    s = samples[0]
    s.target.difficult[:] = [True, False, False]
    ds = DetectionDataset([s], train_tf, seed=0)
    moved = cropped = 0
    for epoch in range(24):
        image, target = ds[(0, epoch)]
        assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        n = len(target["boxes"])
        assert n >= 1 and len(target["labels"]) == len(target["difficult"]) == len(target["iscrowd"]) == n
        h, w = image.shape[-2:]
        assert min(h, w) in (40, 56, 72) or max(h, w) == 160
        img = pixels(image)
        for box, label, hard in zip(target["boxes"], target["labels"], target["difficult"]):
            assert box_colour_class(img, box) == int(label)
            assert bool(hard) == (int(label) == int(s.target.labels[0]))  # the flag followed its box
        scale = w / SIZE[0]
        moved += not np.allclose(target["boxes"][0].numpy() / scale, s.target.boxes[0], atol=2)
        cropped += n < 3
    assert moved >= 6 and cropped >= 1  # the check above was exercised by real moves and crops


def test_eval_transform_changes_no_geometry_and_does_not_normalise(tmp_path):
    root = write_detection(tmp_path / "d", "coco", n=4)
    data, _ = find(root)
    _, eval_tf = build_box_transforms(min_size=100)
    s = data.train[1]
    image, target = DetectionDataset([s], eval_tf)[0]
    torch.testing.assert_close(image, torch.from_numpy(np.array(Image.open(s.image))).permute(2, 0, 1).float() / 255)
    np.testing.assert_array_equal(target["boxes"].numpy(), s.target.boxes)
    assert target["labels"].tolist() == s.target.labels.tolist() and target["image_id"] == 0


def test_negatives_pass_every_transform_and_batch(tmp_path):
    root = write_detection(tmp_path / "d", "yolo", n=6, negatives=2)
    data, _ = find(root)
    train_tf, _ = build_box_transforms(hflip=1.0, iou_crop=1.0, zoom_out=1.0, photometric=1.0)
    ds = DetectionDataset(data.train, train_tf, seed=1)
    loader = torch.utils.data.DataLoader([(i, 0) for i in range(len(ds))], batch_size=4,
                                         collate_fn=lambda keys: detection_collate([ds[k] for k in keys]))
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 4 and all(x.ndim == 3 for x in images)
    empty = [t for t in targets if len(t["boxes"]) == 0]
    assert len(empty) == 2 and all(t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) for t in empty)
    assert [t["image_id"] for t in targets] == [0, 1, 2, 3]


def test_dataset_is_deterministic_per_seed_epoch_index_and_decoded_is_identical(tmp_path):
    root = write_detection(tmp_path / "d", "voc", n=6)
    data, _ = find(root)
    train_tf, _ = build_box_transforms(hflip=0.5, iou_crop=0.5, min_size=(32, 48, 64), max_size=128)
    decoded = decode_images(data.train)
    assert len(decoded) == len(data.train) and decoded.nbytes >= 3 * 64 * 48 * len(data.train)
    a = DetectionDataset(data.train, train_tf, seed=5)
    b = DetectionDataset(data.train, train_tf, seed=5, decoded=decoded)
    torch.manual_seed(123)  # the global RNG must not matter
    for key in [(0, 0), (3, 2), (1, 7)]:
        x1, t1 = a[key]
        _ = a[(2, 9)]  # other draws in between must not matter either
        x2, t2 = b[key]
        torch.testing.assert_close(x1, x2)
        torch.testing.assert_close(t1["boxes"], t2["boxes"])
    draws = [a[(1, e)][1]["boxes"] for e in range(6)]
    assert any(d.shape != draws[0].shape or not torch.equal(d, draws[0]) for d in draws[1:])


def test_samples_datasets_and_transforms_pickle(tmp_path):
    root = write_detection(tmp_path / "d", "csv", n=4)
    data, _ = find(root)
    train_tf, _ = build_box_transforms(iou_crop=0.5, zoom_out=0.5, min_size=48, max_size=96)
    ds = pickle.loads(pickle.dumps(DetectionDataset(data.train, train_tf, seed=2)))
    image, target = ds[(0, 0)]
    assert image.ndim == 3 and target["boxes"].shape[1] == 4
    s = pickle.loads(pickle.dumps(data.train[0]))
    np.testing.assert_array_equal(s.target.boxes, data.train[0].target.boxes)


def test_build_box_transforms_refuses_bad_options():
    with pytest.raises(SftuneError, match="probability"):
        build_box_transforms(hflip=1.5)
    with pytest.raises(SftuneError, match="give min_size too"):
        build_box_transforms(max_size=100)
    with pytest.raises(SftuneError, match="no larger than max_size"):
        build_box_transforms(min_size=200, max_size=100)


def test_detection_collate_keeps_per_image_targets():
    a = (torch.zeros(3, 10, 12), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    b = (torch.ones(3, 20, 8), {"boxes": torch.tensor([[1.0, 2, 3, 4]]), "labels": torch.tensor([1])})
    images, targets = detection_collate([a, b])
    assert [x.shape for x in images] == [(3, 10, 12), (3, 20, 8)] and targets[1]["labels"].tolist() == [1]
    assert detection_collate([]) == ([], [])


def test_box_target_checks_lengths():
    t = BoxTarget(np.zeros((2, 4)), np.zeros(2), None, None)
    assert t.boxes.dtype == np.float32 and t.labels.dtype == np.int64 and t.difficult.tolist() == [False, False]
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        BoxTarget(np.zeros((2, 4)), np.zeros(1), None, None)


# ------------------------------------------------------------------------------ BCCD


@needs_bccd()
def test_real_bccd():
    data, lines = find(BCCD)
    assert data.format == "voc" and len(data.train) == 205 and len(data.val) == 87
    assert sorted(data.classes) == ["Platelets", "RBC", "WBC"]
    assert data.split["method"] == "given" and data.warnings == []
    skipped = sorted(data.skipped)
    assert len(skipped) == 2 and all("zero width and height" in r for _, r in skipped)
    assert "BloodImage_00338.xml" in skipped[0][0] and "BloodImage_00343.xml" in skipped[1][0]
    assert any(s.image.stem == "BloodImage_00343" for s in data.train)
    assert any(s.image.stem == "BloodImage_00338" for s in data.val)
    assert any("2 degenerate box" in line and "BloodImage_00343.xml" in line for line in lines)
    assert "(test.txt and trainval.txt not used)" in lines[0]
    for s in data.train + data.val:
        b = s.target.boxes
        assert ((b[:, 2] - b[:, 0]) > 0).all() and ((b[:, 3] - b[:, 1]) > 0).all()
        assert (b >= 0).all() and (b[:, 2] <= 640).all() and (b[:, 3] <= 480).all()
    assert data.box_stats.class_boxes["train"][data.classes.index("RBC")] > 2000


def test_yolo_without_names_takes_the_given_classes_by_index(tmp_path):
    root = write_detection(tmp_path / "y", "yolo", names="none")
    data, _ = find(root, classes=CLASSES)
    assert data.classes == CLASSES and data.skipped == []
    for s in data.train + data.val:
        assert [c for _, c in as_objects(s, data.classes)] == [c for _, c in expected(s)]
