"""SF-TL54's dlib models as label sources, against dlib's own output on the same images (models trained here with
dlib's trainers), an analytic coordinate mapping, and refusals of files that are not the model they claim to be."""

import hashlib
import json
import sys

import dlib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.annotate.dlib_models import (
    DlibFaceDetector,
    DlibLandmarker54,
    DlibModelError,
    DlibUnavailable,
    box_to_rect,
    rect_to_box,
    resize_to_width,
)
from generator.annotate.labels import TEMPLATE_LAYOUT, PropagatedLabels, compare_labels, detect_frames
from generator.annotate.models import load_detector, load_landmarker
from generator.annotate.sftl54_order import PART_ORDERS, flip_points, order_problem
from tests.generator.annotate.dlib_training import thermal_face, train_detector, train_predictor
from thermvision_db.schema.labels import NUM_LANDMARKS, SFTL54_FLIP_PAIRS, SFTL54_NAMES, iou

TOL_PX = 1e-3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dlib")
    return {"svm": train_detector(folder / "face.svm"), "dat": train_predictor(folder / "sftl54.dat"),
            "dat68": train_predictor(folder / "ibug68.dat", parts=68),
            "unpadded": train_predictor(folder / "unpadded.dat", order=PART_ORDERS["unpadded"]), "folder": folder}


# A 600 x 450 frame: the authors' width 300 halves it exactly; the face is placed at twice the training scale.
FRAME, FACE = (450, 600), (250.0, 150.0, 120.0, 120.0)


def test_rect_mapping_is_exact_for_an_analytic_case():
    # pixels 10..29 x 20..49 of a half-size image = the continuous span [20, 60) x [40, 100) of the frame
    assert rect_to_box(dlib.rectangle(10, 20, 29, 49), 0.5, 0.5).tolist() == [20.0, 40.0, 40.0, 60.0]
    rect = box_to_rect(dlib, [20.0, 40.0, 40.0, 60.0], 0.5, 0.5)
    assert (rect.left(), rect.top(), rect.right(), rect.bottom()) == (10, 20, 29, 49)
    image, sx, sy = resize_to_width(np.zeros(FRAME, np.uint8), 300)
    assert image.shape == (225, 300) and (sx, sy) == (0.5, 0.5)


@settings(max_examples=40, deadline=None)
@given(st.integers(40, 2000), st.integers(40, 2000), st.integers(0, 250), st.integers(0, 150), st.integers(1, 49))
def test_resize_factors_follow_imutils_and_rectangles_round_trip(w, h, left, top, size):
    image, sx, sy = resize_to_width(np.zeros((h, w), np.uint8), 300)
    assert image.shape == (max(1, int(h * (300 / float(w)))), 300)  # imutils.resize(width=300)
    assert (sx, sy) == (300 / w, image.shape[0] / h)
    rect = dlib.rectangle(left, top, left + size, top + size)
    back = box_to_rect(dlib, rect_to_box(rect, sx, sy), sx, sy)
    assert (back.left(), back.top(), back.right(), back.bottom()) == (left, top, left + size, top + size)


def test_detector_boxes_equal_dlibs_own_output_after_the_mapping(models):
    frame = thermal_face(FRAME, FACE)
    faces = DlibFaceDetector(models["svm"])(frame)
    small, _, _ = resize_to_width(frame, 300)
    own = dlib.simple_object_detector(str(models["svm"]))(small, 1)  # as dlib_face_detector.py calls it
    assert len(own) >= 1 and len(faces) == len(own)
    expected = sorted([[r.left() * 2, r.top() * 2, (r.width()) * 2, (r.height()) * 2] for r in own])
    assert np.allclose(sorted(f.box_xywh.tolist() for f in faces), expected, atol=TOL_PX)
    assert iou(faces[0].box_xywh.tolist(), list(FACE)) > 0.5  # it found the face placed there


def test_detector_without_resizing_searches_the_frame_itself(models):
    frame = thermal_face((120, 160), (40.0, 30.0, 60.0, 60.0))
    faces = DlibFaceDetector(models["svm"], resize_width=None, upsample=0)(frame)
    own = dlib.simple_object_detector(str(models["svm"]))(frame, 0)
    assert [f.box_xywh.tolist() for f in faces] == [[r.left(), r.top(), r.width(), r.height()] for r in own]


def test_landmarks_equal_dlibs_parts_in_sftl54_order(models):
    frame = thermal_face(FRAME, FACE)
    points = DlibLandmarker54(models["dat"])(frame, FACE)
    shape = dlib.shape_predictor(str(models["dat"]))(frame, dlib.rectangle(250, 150, 369, 269))
    own = np.array([[p.x, p.y] for p in shape.parts()], np.float64) + 0.5  # pixel indices -> COCO centres
    assert points.shape == (NUM_LANDMARKS, 2) == (len(SFTL54_NAMES), 2)
    assert np.abs(points - own).max() < TOL_PX
    assert order_problem(points) is None  # trained on the SF-TL54 layout: the order check agrees


def test_a_predictor_with_unpadded_part_names_is_renumbered(models):
    frame = thermal_face(FRAME, FACE)
    assert order_problem(DlibLandmarker54(models["unpadded"])(frame, FACE)) is not None
    points = DlibLandmarker54(models["unpadded"], part_order="unpadded")(frame, FACE)
    shape = dlib.shape_predictor(str(models["unpadded"]))(frame, dlib.rectangle(250, 150, 369, 269))
    parts = np.array([[p.x, p.y] for p in shape.parts()], np.float64) + 0.5
    assert np.abs(points[PART_ORDERS["unpadded"]] - parts).max() < TOL_PX
    assert order_problem(points) is None


def test_order_check_and_flip_pairs_are_consistent():
    face = TEMPLATE_LAYOUT * 100 + 50
    assert order_problem(face) is None
    assert order_problem(flip_points(face, 200)) is None  # the mirrored face, renumbered by the flip pairs
    assert order_problem(face * [-1, 1] + [200, 0]) is not None  # mirrored but not renumbered
    assert order_problem(face[PART_ORDERS["unpadded"]]) is not None
    def part(name):
        return name.replace("right_", "").replace("left_", "").rsplit("_", 1)[0]

    for a, b in SFTL54_FLIP_PAIRS:  # each pair joins two points of the same part (jaw, brow, eye, ...)
        assert part(SFTL54_NAMES[a]) == part(SFTL54_NAMES[b])


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated"), ("junk", "not a dlib shape_predictor"), ("dat68", "68 parts"),
    ("svm_as_dat", "not a dlib shape_predictor"), ("missing", "does not exist"), ("empty", "0 bytes")])
def test_landmarker_refusals_name_the_file_and_the_cause(models, case, message):
    folder = models["folder"]
    path = {"dat68": models["dat68"], "missing": folder / "none.dat"}.get(case, folder / f"{case}.dat")
    if case == "truncated":
        data = models["dat"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "junk":
        path.write_bytes(b"<html>not a model</html>" * 20)
    elif case == "svm_as_dat":
        path.write_bytes(models["svm"].read_bytes())
    elif case == "empty":
        path.write_bytes(b"")
    with pytest.raises(Exception) as info:
        load_landmarker(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_detector_refusals(models):
    folder = models["folder"]
    bad = folder / "bad.svm"
    bad.write_bytes(models["svm"].read_bytes()[:100])
    with pytest.raises(DlibModelError, match="not a dlib simple_object_detector"):
        load_detector(bad)
    with pytest.raises(DlibModelError, match=r"\.svm: dlib simple_object_detector"):
        load_detector(models["dat"])  # a predictor given as the detector: refused by its suffix
    pred_as_svm = folder / "pred.svm"
    pred_as_svm.write_bytes(models["dat"].read_bytes())
    with pytest.raises(DlibModelError, match="pred.svm: not a dlib simple_object_detector"):
        load_detector(pred_as_svm)


def test_without_dlib_one_message_names_the_extra(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(DlibUnavailable, match=r"thermvision-db\[dlib\]"):
        load_detector(models["svm"])


def test_records_carry_sha256_and_settings(models):
    record = DlibFaceDetector(models["svm"]).record()
    assert record["sha256"] == hashlib.sha256(models["svm"].read_bytes()).hexdigest()
    assert record["settings"]["resize_width"] == 300 and record["settings"]["upsample"] == 1


def test_compare_labels_reports_agreement_with_a_dlib_detector(models):
    frames = [thermal_face(FRAME, (250.0 + 10 * t, 150.0, 120.0, 120.0)) for t in range(4)]
    boxes = np.array([[250.0 + 10 * t, 150.0, 120.0, 120.0] for t in range(4)], np.float32)
    propagated = PropagatedLabels(boxes, None, np.zeros((4, 3), np.float32), FRAME)
    detections = detect_frames(frames, DlibFaceDetector(models["svm"]))
    report = compare_labels(propagated, detections)
    expected = [iou(boxes[t].tolist(), d.box_xywh.tolist()) for t, d in enumerate(detections)]
    assert np.allclose(report.iou, expected)
    assert report.summary["iou_quantiles"]["p50"] == pytest.approx(float(np.median(expected)))
    assert sum(report.summary["iou_histogram"]["counts"]) == 4
    json.dumps(report.summary)


def test_corpus_settings_load_dlib_models_and_record_them(models):
    from generator.corpus.models import load_annotators, weight_records
    from generator.corpus.settings import GenerationSettings

    s = GenerationSettings(preset="tiny", label_detector=str(models["svm"]), label_landmarker=str(models["dat"]))
    detector, landmarker, _ = load_annotators(s)
    assert isinstance(detector, DlibFaceDetector) and isinstance(landmarker, DlibLandmarker54)
    records = {r["role"]: r for r in weight_records(s, torch.nn.Linear(1, 1)) if r["role"].startswith("label")}
    assert records["label_detector"]["settings"]["resize_width"] == 300
    assert records["label_landmarker"]["sha256"] == hashlib.sha256(models["dat"].read_bytes()).hexdigest()


def test_detector_agreement_over_a_corpus_matches_hand_computed_ious(models):
    from types import SimpleNamespace

    from generator.annotate.agreement import agreement_markdown, detector_agreement

    placed = [(250.0, 150.0, 120.0, 120.0), (230.0, 160.0, 120.0, 120.0)]
    video = SimpleNamespace(video_id="v", frames=[thermal_face(FRAME, b) for b in placed] + [np.full(FRAME, 40, np.uint8)],
                            boxes=[[list(b)] for b in placed] + [[]])
    detector = DlibFaceDetector(models["svm"])
    result = detector_agreement([video], detector)
    expected = [iou(list(b), detector(thermal_face(FRAME, b))[0].box_xywh.tolist()) for b in placed]
    assert result["frames"] == 3 and result["compared"] == 2  # the empty frame has neither labels nor a face
    assert result["mean_iou"] == pytest.approx(np.mean(expected))
    assert result["detector"]["sha256"] == hashlib.sha256(models["svm"].read_bytes()).hexdigest()
    assert "Agreement with a face detector" in "\n".join(agreement_markdown(result))


def test_evaluate_command_reports_agreement_with_a_dlib_detector(models, tmp_path):
    from thermvision_db.cli.main import main
    from thermvision_db.demo.miniature import write_miniature

    write_miniature(tmp_path / "corpus", identities=2, frames_per_video=2, size=64, zips=False)
    out = tmp_path / "report"
    assert main(["evaluate", str(tmp_path / "corpus"), "--out", str(out), "--label-detector", str(models["svm"]),
                 "--fid-features", "none"]) == 0
    report = (out / "report.md").read_text()
    assert "## Agreement with a face detector" in report and hashlib.sha256(
        models["svm"].read_bytes()).hexdigest()[:12] in report and "of 8 frames compared" in report
