"""`benchmark_landmarks`: analytic NME for a known offset, analytic AUC / failure rate, pose bins by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from generator.annotate.sftl54_order import LEFT_EYE, RIGHT_EYE
from generator.downstream.landmarks import (OUTER_EYE_CORNERS, benchmark_landmarks, ced, inter_ocular, per_pose,
                                            pose_bin, summarise)
from generator.downstream.labelled_sets import LabelledFrame, LabelledSet
from thermvision_db.demo.miniature import canonical_landmarks
from thermvision_db.schema.labels import SFTL54_FLIP_PAIRS

pytestmark = pytest.mark.usefixtures("private_hash_cache")


def _face(box) -> np.ndarray:
    """The analytic face (the miniature's canonical SF-TL54 points) placed in a COCO box."""
    x, y, w, h = box
    return canonical_landmarks() * [w, h] + [x, y]


def test_outer_eye_corners_are_36_and_45_on_an_analytic_face():
    assert OUTER_EYE_CORNERS == (36, 45) and (36, 45) in SFTL54_FLIP_PAIRS
    face = _face([10, 20, 50, 60])
    right, left = face[list(RIGHT_EYE)], face[list(LEFT_EYE)]
    # the subject's right eye is on the image's left: its outer corner is its leftmost point, and vice versa
    assert face[36, 0] == right[:, 0].min() and face[45, 0] == left[:, 0].max()
    assert inter_ocular(face) == pytest.approx((0.76 - 0.24) * 50)  # canonical eyes: centres 0.32, 0.68, radius 0.08


def _set(boxes, poses=None, landmarks=True) -> LabelledSet:
    frames = []
    for i, box in enumerate(boxes):
        box = np.asarray(box, np.float64)
        points = _face(box) if landmarks is True or (landmarks and landmarks[i]) else None
        frames.append(LabelledFrame(f"f{i}", lambda: np.zeros((120, 120), np.uint8), box[None], [points], 120, 120,
                                    None if poses is None else poses[i]))
    return LabelledSet(frames, {"kind": "planted", "path": "-", "splits": ["all"]})


@pytest.mark.parametrize("dx, dy", [(0.0, 0.0), (1.5, -2.0), (3.0, 4.0)])
def test_truth_plus_a_constant_offset_gives_the_analytic_nme(dx, dy, tmp_path):
    boxes = [[10, 10, 50, 60], [20, 5, 40, 44], [0, 30, 64, 70]]
    data = _set(boxes)
    out = benchmark_landmarks(lambda image, box: _face(box) + [dx, dy], data, out_dir=tmp_path, progress=False)
    shift = math.hypot(dx, dy)
    io = [shift / (0.52 * b[2]) for b in boxes]
    diag = [shift / math.hypot(b[2], b[3]) for b in boxes]
    assert out["metrics"]["inter_ocular"]["nme_mean"] == pytest.approx(np.mean(io), abs=1e-12)
    assert out["metrics"]["box_diagonal"]["nme_mean"] == pytest.approx(np.mean(diag), abs=1e-12)
    assert out["mean_error_px"] == pytest.approx(shift)
    assert out["box_given"].startswith("the ground-truth box")
    assert (tmp_path / "ced.png").is_file() and (tmp_path / "results.json").is_file()
    assert out["per_pose"] is None  # nothing knows the head pose here


def test_failure_rate_and_auc_of_known_errors():
    errors = [0.02, 0.04, 0.06, 0.08, 0.12]
    s = summarise(errors, 0.1)
    assert s["failure_rate"] == pytest.approx(0.2)  # one of five over 0.1
    # AUC = mean of max(0, 1 - e / 0.1) = (0.8 + 0.6 + 0.4 + 0.2 + 0) / 5
    assert s["auc"] == pytest.approx(0.4)
    xs, ys = ced(errors, 0.1, points=100001)
    assert np.trapezoid(ys, xs) / 0.1 == pytest.approx(0.4, abs=1e-4)  # the area under the plotted curve
    # errors uniform on [0, 0.2]: half fail, AUC = integral_0^0.1 (x / 0.2) dx / 0.1 = 0.25
    uniform = summarise(np.linspace(0, 0.2, 20001), 0.1)
    assert uniform["failure_rate"] == pytest.approx(0.5, abs=1e-3) and uniform["auc"] == pytest.approx(0.25, abs=1e-4)
    assert summarise([float("inf")], 0.1) == {"faces": 1, "nme_mean": float("inf"), "nme_median": float("inf"),
                                             "failure_rate": 1.0, "auc": 0.0}  # a NaN prediction fails
    assert summarise([float("nan")])["faces"] == 0  # no normaliser: left out


def test_pose_bins_by_hand():
    yaws = [-5.0, 14.99, 15.0, -29.0, 30.0, 44.0, 45.0, -80.0]
    assert [pose_bin(y) for y in yaws] == ["0-15", "0-15", "15-30", "15-30", "30-45", "30-45", ">45", ">45"]
    faces = [{"head_pose": {"yaw": y, "pitch": p, "roll": 0.0}, "inter_ocular": e, "box_diagonal": e / 2}
             for y, p, e in zip(yaws, [0, 0, 0, 0, 0, 0, 20, -20], [0.01, 0.03, 0.05, 0.07, 0.09, 0.11, 0.2, 0.0])]
    bins = per_pose(faces)
    assert {b: s["faces"] for b, s in bins["yaw"].items()} == {"0-15": 2, "15-30": 2, "30-45": 2, ">45": 2}
    assert bins["yaw"]["0-15"]["inter_ocular"]["nme_mean"] == pytest.approx(0.02)
    assert bins["yaw"]["30-45"]["inter_ocular"]["failure_rate"] == pytest.approx(0.5)
    assert bins["yaw"][">45"]["box_diagonal"]["nme_mean"] == pytest.approx(0.05)
    assert {b: s["faces"] for b, s in bins["pitch"].items()} == {"0-15": 6, "15-30": 2, "30-45": 0, ">45": 0}


def test_benchmark_bins_by_the_frames_head_pose_and_counts_faces_without_landmarks():
    poses = [{"yaw": y, "pitch": 0.0, "roll": 0.0} for y in (0.0, 20.0, 50.0, 10.0)]
    data = _set([[10, 10, 50, 60]] * 4, poses=poses, landmarks=[True, True, True, False])
    out = benchmark_landmarks(lambda image, box: _face(box) + [2.6, 0], data, progress=False)
    assert out["counts"]["faces_scored"] == 3 and out["counts"]["faces_without_landmarks"] == 1
    yaw = out["per_pose"]["yaw"]
    assert [yaw[b]["faces"] for b in ("0-15", "15-30", "30-45", ">45")] == [1, 1, 0, 1]
    assert yaw["15-30"]["inter_ocular"]["nme_mean"] == pytest.approx(2.6 / 26)


def test_unlabelled_points_are_left_out_and_a_missing_eye_corner_is_counted():
    data = _set([[10, 10, 50, 60], [10, 10, 50, 60]])
    data.frames[0].landmarks[0][:10] = np.nan  # ten jaw points unlabelled: the mean is over the other 44
    data.frames[1].landmarks[0][45] = np.nan  # no outer corner: no inter-ocular NME for this face

    def landmarker(image, box):
        p = _face(box)
        p[:10] += 100  # wrong on the unlabelled points only
        return p

    out = benchmark_landmarks(landmarker, data, progress=False)
    assert out["metrics"]["inter_ocular"]["nme_mean"] == 0 and out["metrics"]["inter_ocular"]["faces"] == 1
    assert out["counts"]["faces_without_inter_ocular"] == 1
    assert out["metrics"]["box_diagonal"]["faces"] == 2
