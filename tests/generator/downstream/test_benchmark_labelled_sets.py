"""Labelled-set readers: what our exporter writes reads back as the corpus's labels; each hostile item is refused
with the file (and line or annotation) named, or counted where leaving it out is the rule."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from generator.downstream.labelled_sets import LabelledSetError, from_coco, from_corpus, from_yolo
from thermvision_db.demo.miniature import write_miniature
from thermvision_db.tools.export import export


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    mini = write_miniature(root / "mini", identities=("F_01", "M_10"), frames_per_video=4, zips=False, landmarks=True)
    cache = str(root / "hf")
    export(mini.root, "coco", root / "coco", cache_dir=cache, progress=False)
    with pytest.warns(UserWarning):  # M_10's missing frames have no landmarks: yolo-pose says so
        export(mini.root, "yolo-pose", root / "yolo", cache_dir=cache, progress=False)
    return mini, root, from_corpus(mini.root, cache_dir=cache, qc_ok_only=False)


def _by_stem(labelled):
    return {os.path.splitext(os.path.basename(f.frame_id))[0]: f for f in labelled.frames}


def test_our_coco_and_yolo_exports_read_back_as_the_corpus_labels(small):
    mini, root, corpus = small
    truth = _by_stem(corpus)
    for name, labelled, atol in (("coco", from_coco(root / "coco" / "annotations" / "train.json", root / "coco" / "images"), 1e-4),
                                 ("yolo", from_yolo(root / "yolo", split="train"), 1e-5 * 64 * 2)):
        read = _by_stem(labelled)
        assert read and set(read) <= set(truth), name
        for stem, frame in read.items():
            np.testing.assert_allclose(frame.boxes, truth[stem].boxes, atol=atol, err_msg=f"{name} {stem}")
            for a, b in zip(frame.landmarks, truth[stem].landmarks):
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_allclose(a, b, atol=atol)
            assert frame.load().shape[:2] == (64, 64)
    assert from_yolo(root / "yolo").source["splits"] == corpus.source["splits"] == ["train"]  # two identities: train only


def test_qc_verdicts_other_than_ok_are_left_out_and_counted(small):
    mini, root, corpus = small
    ok = from_corpus(mini.root, cache_dir=str(root / "hf"))
    assert len(ok.frames) + sum(ok.skipped.values()) == len(corpus.frames)
    assert ok.skipped == {"qc_missing": 1}  # M_10_S1 frame 3 lost its label file (frame 4 is past 4 frames)
    assert ok.describe()["skipped"] == dict(ok.skipped)


def _image(path, size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 90).save(path)
    return path


def _coco(tmp_path, annotations, images=None, categories=None, raw=None):
    root = tmp_path / "images"
    _image(root / "a.png")
    doc = {"images": images if images is not None else [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
           "annotations": annotations, "categories": categories or [{"id": 1, "name": "face"}]}
    path = tmp_path / "set.json"
    path.write_text(raw if raw is not None else json.dumps(doc))
    return path, root


def test_a_plain_coco_detection_file(tmp_path):
    path, root = _coco(tmp_path, [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12]}])
    frame = from_coco(path, root).frames[0]
    assert frame.boxes.tolist() == [[1, 2, 10, 12]] and frame.landmarks == [None]


@pytest.mark.parametrize("case, message", [
    ("missing_image", "not found under"),
    ("negative_w", "width and height must be > 0"),
    ("nan", "not valid JSON"),
    ("no_face_category", "no category named 'face'"),
    ("huge", "byte bound"),
    ("escaping_path", "leaves the images folder"),
    ("absolute_path", "leaves the images folder"),
    ("symlink_out", "outside"),
    ("keypoints_68", "68 keypoints; SF-TL54 has 54"),
    ("unknown_image_id", "names no image"),
    ("not_coco", "'images' list"),
    ("bbox_text", "bbox must be 4 finite numbers"),
    ("keypoints_text", "flat list of finite"),
    ("image_id_list", "needs an 'id' \\(integer or text\\)"),
    ("duplicate_id", "appears twice"),
])
def test_hostile_coco_files_are_refused_by_name(tmp_path, case, message):
    ann = {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12]}
    kwargs, bound = {}, {}
    if case == "missing_image":
        kwargs["images"] = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "gone.png"}]
    elif case == "negative_w":
        ann["bbox"] = [1, 2, -10, 12]
    elif case == "nan":
        kwargs["raw"] = '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 1, "image_id": 1, ' \
                        '"category_id": 1, "bbox": [NaN, 0, 4, 4]}], "categories": [{"id": 1, "name": "face"}]}'
    elif case == "no_face_category":
        kwargs["categories"] = [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]
    elif case == "huge":
        bound["max_bytes"] = 100
    elif case == "escaping_path":
        _image(tmp_path / "outside.png")
        kwargs["images"] = [{"id": 1, "file_name": "../outside.png"}]
    elif case == "absolute_path":
        kwargs["images"] = [{"id": 1, "file_name": str(_image(tmp_path / "abs.png"))}]
    elif case == "symlink_out":
        (tmp_path / "images").mkdir()
        os.symlink(_image(tmp_path / "elsewhere" / "b.png"), tmp_path / "images" / "b.png")
        kwargs["images"] = [{"id": 1, "file_name": "b.png"}]
    elif case == "keypoints_68":
        ann["keypoints"] = [5.0, 5.0, 2] * 68
    elif case == "unknown_image_id":
        ann["image_id"] = 9
    elif case == "not_coco":
        kwargs["raw"] = "[1, 2, 3]"
    elif case == "bbox_text":
        ann["bbox"] = ["1", 2, 10, 12]
    elif case == "keypoints_text":
        ann["keypoints"] = [[5.0, 5.0, 2]] * 54
    elif case == "duplicate_id":
        kwargs["images"] = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "a.png"}]
    elif case == "image_id_list":
        kwargs["images"] = [{"id": [1], "file_name": "a.png"}]
    path, root = _coco(tmp_path, [ann], **kwargs)
    with pytest.raises(LabelledSetError, match=message) as err:
        from_coco(path, root, **bound)
    assert str(path) in str(err.value)


def test_other_categories_and_crowds_are_left_out_and_counted(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [1, 2, 10, 12]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12], "iscrowd": 1}]
    path, root = _coco(tmp_path, anns, categories=[{"id": 1, "name": "Face"}, {"id": 2, "name": "hand"}])
    labelled = from_coco(path, root)
    assert len(labelled.frames[0].boxes) == 1
    assert labelled.skipped == {"annotations_not_face": 1, "annotations_crowd": 1}


def test_a_corrupt_image_is_named_when_read(tmp_path):
    path, root = _coco(tmp_path, [])
    (root / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    frame = from_coco(path, root).frames[0]  # width and height come from the JSON
    with pytest.raises(LabelledSetError, match="a.png: not a readable image"):
        frame.load()


def _yolo(tmp_path, line: str | None, name="x"):
    _image(tmp_path / "set" / "images" / "val" / f"{name}.png")
    if line is not None:
        label = tmp_path / "set" / "labels" / "val" / f"{name}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(line)
    return tmp_path / "set"


def test_plain_ultralytics_boxes_and_background_images(tmp_path):
    root = _yolo(tmp_path, "0 0.5 0.5 0.25 0.5\n\n")
    _yolo(tmp_path, None, name="empty")
    frames = {f.frame_id: f for f in from_yolo(root).frames}
    assert frames["val/x.png"].boxes.tolist() == [[12.0, 8.0, 8.0, 16.0]]
    assert len(frames["val/empty.png"].boxes) == 0  # no label file: a frame without a face


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2\n", ":1: a YOLO line"),
    ("0 0.5 0.5 0.2 0.2\n0 0.5 zero 0.2 0.2\n", ":2: not a YOLO line"),
    ("0 1.5 0.5 0.2 0.2\n", ":1: box .* not normalised"),
    ("0 0.5 0.5 0.2 0.2 " + "0.5 0.5 2 " * 68 + "\n", ":1: 204 keypoint values \\(68 points\\)"),
    ("0 0.5 0.5 0.2 0.2 " + "1.5 0.5 2 " * 54 + "\n", ":1: keypoints outside"),
    ("0 0.5 0.5 0.2 nan\n", ":1: a YOLO line"),
])
def test_hostile_yolo_lines_are_named_by_file_and_line(tmp_path, line, message):
    root = _yolo(tmp_path, line)
    with pytest.raises(LabelledSetError, match=message) as err:
        from_yolo(root)
    assert "x.txt:" in str(err.value)


def test_yolo_other_classes_counted_and_symlinks_out_refused(tmp_path):
    root = _yolo(tmp_path, "1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("names: {0: person, 1: face}\n")
    labelled = from_yolo(root)
    assert len(labelled.frames[0].boxes) == 1 and labelled.skipped == {"boxes_not_face": 1}
    os.symlink(_image(tmp_path / "outside" / "y.png"), root / "images" / "val" / "y.png")
    with pytest.raises(LabelledSetError, match="outside"):
        from_yolo(root)
    os.remove(root / "images" / "val" / "y.png")
    os.symlink(tmp_path / "outside", root / "images" / "linked")
    with pytest.raises(LabelledSetError, match="folder .*outside"):
        from_yolo(root)
    os.remove(root / "images" / "linked")
    (tmp_path / "outside" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    os.remove(root / "labels" / "val" / "x.txt")
    os.symlink(tmp_path / "outside" / "x.txt", root / "labels" / "val" / "x.txt")
    with pytest.raises(LabelledSetError, match="label file .*outside"):
        from_yolo(root)


def test_a_corrupt_yolo_image_is_named(tmp_path):
    root = _yolo(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    (root / "images" / "val" / "x.png").write_bytes(b"GIF89a broken")
    with pytest.raises(LabelledSetError, match="x.png: not a readable image"):
        from_yolo(root)


def test_an_oversized_yolo_label_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from generator.downstream import labelled_sets

    root = _yolo(tmp_path, "0 0.5 0.5 0.2 0.2\n" * 4)
    monkeypatch.setattr(labelled_sets, "MAX_LABEL_BYTES", 40)
    with pytest.raises(LabelledSetError, match="x.txt: over the 40-byte bound"):
        from_yolo(root)
