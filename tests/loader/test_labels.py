import numpy as np
import pytest

from thermvision_db.schema.labels import (
    SFTL54_FLIP_PAIRS, SFTL54_NAMES, SFTL54_TO_IBUG68, Face, FrameLabels, LabelError, coco_to_yolo, iou,
    parse_landmark_text, parse_yolo_text, repair_track,
)


def test_yolo_line_becomes_coco_pixels():
    labels = parse_yolo_text("0 0.5 0.5 0.25 0.5\n", 64, 128)
    assert labels.qc == "ok"
    assert labels.faces[0].bbox == [24.0, 32.0, 16.0, 64.0]


def test_release_style_g_formatting_round_trips_on_512_grid():
    # the release prints integer pixels on the 512 grid with %g
    box = [131.0, 147.0, 239.0, 301.0]
    line = "0 " + " ".join(f"{v:g}" for v in coco_to_yolo(box, 512, 512))
    parsed = parse_yolo_text(line, 512, 512).faces[0].bbox
    assert np.allclose(parsed, box, atol=1e-3)


def test_two_lines_are_multiple_and_both_kept():
    labels = parse_yolo_text("0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1\n", 100, 100)
    assert labels.qc == "multiple" and len(labels.faces) == 2


def test_empty_file_is_missing():
    assert parse_yolo_text("\n", 10, 10).qc == "missing"


@pytest.mark.parametrize("text, fragment", [
    ("0 0.5 0.5 0.2 0.2\n0 0.5 oops 0.2 0.2\n", "line 2"),
    ("0 0.5 0.5 0.2\n", "5 values"),
    ("0 0.5 0.5 -0.2 0.2\n", "positive"),
    ("0 0.5 0.5 0.2 0.2 1 2 3\n", "54 YOLO-pose"),
])
def test_malformed_lines_name_file_and_line(text, fragment):
    with pytest.raises(LabelError) as err:
        parse_yolo_text(text, 64, 64, "labels/frame_0007.txt")
    assert "labels/frame_0007.txt" in str(err.value) and fragment in str(err.value)


def test_box_outside_image_is_flagged_and_clipped():
    labels = parse_yolo_text("0 0.95 0.5 0.3 0.2\n", 100, 100)
    assert labels.qc == "out_of_bounds"
    x, y, w, h = labels.faces[0].bbox
    assert x + w == pytest.approx(100.0) and x == pytest.approx(80.0)


def test_yolo_pose_landmarks_in_pixels():
    points = np.random.default_rng(0).random((54, 2))
    line = "0 0.5 0.5 0.4 0.4 " + " ".join(f"{v:.6f}" for v in points.ravel())
    face = parse_yolo_text(line, 200, 100).faces[0]
    assert np.allclose(face.landmarks, points * [200, 100], atol=1e-3)


def test_landmark_file_normalised_or_pixels():
    points = np.arange(108, dtype=float).reshape(54, 2)
    text = "\n".join(f"{x} {y}" for x, y in points)
    assert np.allclose(parse_landmark_text(text, 64, 64), points)
    assert np.allclose(parse_landmark_text("\n".join(f"{x / 200} {y / 200}" for x, y in points), 64, 32), points / 200 * [64, 32])
    with pytest.raises(LabelError, match="54"):
        parse_landmark_text("1 2\n3 4\n", 64, 64, "lm.txt")


def test_sftl54_scheme_is_consistent():
    assert len(SFTL54_NAMES) == 54 and len(SFTL54_TO_IBUG68) == 54
    assert SFTL54_TO_IBUG68[:48] == list(range(48)) and SFTL54_TO_IBUG68[48:] == [48, 51, 54, 57, 62, 66]
    flat = [i for pair in SFTL54_FLIP_PAIRS for i in pair]
    assert len(flat) == len(set(flat))
    fixed = set(range(54)) - set(flat)
    assert fixed == {8, 27, 28, 29, 30, 33, 49, 51, 52, 53}


def test_iou_known_values():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 1, 1], [5, 5, 1, 1]) == 0.0


def _track(boxes):
    frames = []
    for b in boxes:
        if b is None:
            frames.append(FrameLabels([], "missing"))
        elif isinstance(b[0], list):
            frames.append(FrameLabels([Face(x) for x in b], "multiple"))
        else:
            frames.append(FrameLabels([Face(b)], "ok"))
    return frames


def test_repair_interpolates_gaps_linearly_and_copies_at_ends():
    boxes = [None, [0, 0, 10, 10], None, None, [30, 0, 10, 16], None]
    out = repair_track(_track(boxes))
    assert out[0].faces[0].bbox == [0, 0, 10, 10] and out[0].faces[0].source == "interpolated"
    assert np.allclose(out[2].faces[0].bbox, [10, 0, 10, 12]) and np.allclose(out[3].faces[0].bbox, [20, 0, 10, 14])
    assert out[5].faces[0].bbox == [30, 0, 10, 16]
    assert out[1].faces[0].source == "detector"
    assert [f.qc for f in out] == ["missing", "ok", "missing", "missing", "ok", "missing"]


def test_repair_keeps_the_temporally_consistent_box_of_a_double():
    true = [20, 20, 10, 10]
    spurious = [0, 0, 4, 4]
    out = repair_track(_track([true, [spurious, [21, 20, 10, 10]], true]))
    assert out[1].faces[0].bbox == [21, 20, 10, 10] and len(out[1].faces) == 1
    assert out[1].faces[0].source == "interpolated" and out[1].qc == "multiple"
