"""Label files as detectors, annotators and editors write them: BOM, confidences, other classes, YOLO-pose
visibility 0, boxes outside the image. Each input is written here the way the tool writes it."""

import codecs
import math

import numpy as np
import pytest

from thermvision_db.hf.api import load_dataset
from thermvision_db.tools.export import coco_keypoints, yolo_line
from thermvision_db.schema.labels import (
    NUM_LANDMARKS,
    LabelError,
    coco_to_yolo,
    parse_yolo_text,
)
from thermvision_db.demo.miniature import write_miniature

BOX = [16.0, 8.0, 24.0, 40.0]  # COCO pixels in a 64x64 frame


def _yolo(box=BOX, cls=0, size=64):
    return f"{cls} " + " ".join(f"{v:g}" for v in coco_to_yolo(box, size, size))


def test_utf8_bom_from_a_windows_editor_is_read():
    text = (codecs.BOM_UTF8 + (_yolo() + "\r\n").encode()).decode("utf-8")  # Notepad "UTF-8 with BOM", CRLF
    labels = parse_yolo_text(text, 64, 64, "f.txt")
    assert labels.qc == "ok" and np.allclose(labels.faces[0].bbox, BOX, atol=1e-3)


def test_save_conf_value_is_the_face_score():
    # YOLOv5 detect.py --save-txt --save-conf: `cls xc yc w h conf`; ultralytics appends conf after keypoints
    labels = parse_yolo_text(_yolo() + " 0.8731\n", 64, 64)
    assert labels.qc == "ok" and labels.faces[0].score == pytest.approx(0.8731)
    assert np.allclose(labels.faces[0].bbox, BOX, atol=1e-3)
    pose = " ".join("0.5 0.5 2" for _ in range(NUM_LANDMARKS))
    labels = parse_yolo_text(f"{_yolo()} {pose} 0.61\n", 64, 64)
    assert labels.faces[0].score == pytest.approx(0.61) and labels.faces[0].landmarks[0] == [32.0, 32.0]
    assert parse_yolo_text(_yolo() + "\n", 64, 64).faces[0].score is None
    with pytest.raises(LabelError, match="line 1.*not a confidence"):
        parse_yolo_text(_yolo() + " 7\n", 64, 64, "f.txt")


def test_another_class_is_never_a_face():
    labels = parse_yolo_text(_yolo() + "\n" + _yolo([40.0, 40.0, 10.0, 10.0], cls=1) + "\n", 64, 64)
    assert labels.qc == "other_class" and len(labels.faces) == 1
    assert np.allclose(labels.faces[0].bbox, BOX, atol=1e-3)
    only_other = parse_yolo_text(_yolo(cls=2) + "\n", 64, 64)
    assert only_other.qc == "other_class" and only_other.faces == []


def test_box_wholly_outside_the_image_is_flagged_not_a_face():
    # centre at x = 1.4 (normalised): the whole box lies right of the frame
    labels = parse_yolo_text("0 1.4 0.5 0.2 0.2\n", 64, 64)
    assert labels.qc == "outside_image" and labels.faces == []
    both = parse_yolo_text(_yolo() + "\n0 -0.5 0.5 0.2 0.2\n", 64, 64)
    assert both.qc == "outside_image" and len(both.faces) == 1


def test_yolo_pose_visibility_zero_is_missing_and_exports_as_unlabelled():
    rng = np.random.default_rng(0)
    points = rng.uniform(0.3, 0.7, size=(NUM_LANDMARKS, 2))
    visible = np.ones(NUM_LANDMARKS, int) * 2
    visible[[3, 17, 40]] = 0
    # ultralytics writes an unlabelled point as `0 0 0`
    triples = [f"{x:.6f} {y:.6f} 2" if v else "0 0 0" for (x, y), v in zip(points, visible)]
    labels = parse_yolo_text(f"{_yolo()} {' '.join(triples)}\n", 64, 64)
    landmarks = labels.faces[0].landmarks
    assert all(math.isnan(c) for i in (3, 17, 40) for c in landmarks[i])
    assert np.allclose(landmarks[0], points[0] * 64, atol=1e-3)
    flat, count = coco_keypoints(landmarks)
    assert count == NUM_LANDMARKS - 3
    coco = np.asarray(flat).reshape(NUM_LANDMARKS, 3)
    assert coco[3].tolist() == [0, 0, 0] and coco[0, 2] == 2 and (coco[:, 2] == 0).sum() == 3
    line = yolo_line({"bbox": BOX, "landmarks": landmarks}, 64, 64, pose=True).split()
    back = np.asarray([float(v) for v in line[5:]]).reshape(NUM_LANDMARKS, 3)
    assert back[17].tolist() == [0, 0, 0] and np.allclose(back[0, :2], points[0], atol=1e-5)


def test_loader_reads_edited_label_files_end_to_end(tmp_path, hf_cache):
    """BOM, confidence, a second class and a box outside the image in one extracted folder, through load_dataset;
    editing a label in place changes the next load (the cache key follows the files)."""
    corpus = write_miniature(tmp_path, identities=["F_01"], frames_per_video=4, zips=False, missing={},
                             multiple={}, missing_png={})
    member = corpus.members[0]
    truth = corpus.boxes[member.video_id]
    folder = corpus.root / member.labels_dir
    (folder / "frame_0000.txt").write_bytes(codecs.BOM_UTF8 + (_yolo(truth[0]) + " 0.9\n").encode())
    (folder / "frame_0001.txt").write_text(_yolo(truth[1]) + "\n" + _yolo([1, 1, 5, 5], cls=3) + "\n")
    (folder / "frame_0002.txt").write_text("0 1.5 1.5 0.1 0.1\n")
    ds = load_dataset("thermvision_db", "frames", data_dir=corpus.root, cache_dir=hf_cache, split_by="none",
                      split="train").remove_columns("image")
    qc = ds.features["qc"]
    rows = [r for r in ds if r["video_id"] == member.video_id]
    assert [qc.int2str(r["qc"]) for r in rows] == ["ok", "other_class", "outside_image", "ok"]
    assert rows[0]["faces"][0]["score"] == pytest.approx(0.9) and rows[3]["faces"][0]["score"] is None
    assert np.allclose(rows[1]["faces"][0]["bbox"], truth[1], atol=1e-3) and len(rows[1]["faces"]) == 1
    assert rows[2]["faces"] == []
    moved = [truth[3][0] + 5, truth[3][1], truth[3][2], truth[3][3]]
    (folder / "frame_0003.txt").write_text(_yolo(moved) + "\n")  # corrected in place, same size class
    again = load_dataset("thermvision_db", "frames", data_dir=corpus.root, cache_dir=hf_cache, split_by="none",
                         split="train").remove_columns("image")
    row = [r for r in again if r["video_id"] == member.video_id][3]
    assert np.allclose(row["faces"][0]["bbox"], moved, atol=1e-3)
