"""Annotation against independently known values: analytic motion for propagation, placed faces for the ONNX
contracts (letterbox, crops), hand-computed ratios, IoU flags, and the loader's schema for the rows."""

import json
import logging

import numpy as np
import pytest
import torch

from generator.annotate.labels import Detection, Disagreement, Landmarker54, Landmarker203, ModelIOError, PropagatedLabels, StillLabels, TEMPLATE_LAYOUT, YoloFaceDetector, compare_labels, detect_frames, frame_faces, label_still, propagate_labels, template_still_labels
from generator.animate.liveportrait.algorithm import AnimationOptions, SourceInfo
from generator.animate.liveportrait.camera import rotation_matrix
from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.crop import crop_from_box
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.animate.liveportrait.pipeline import LivePortraitPipeline
from generator.animate.liveportrait.template import MotionSequence
from generator.animate.motion import head_pose_sweep
from generator.annotate.onnx_models import cut_crop
from tests.support.tiny_onnx import write_bad_model, write_landmarker54, write_landmarker203, write_yolo_detector
from thermvision_db.schema.features import frame_features
from thermvision_db.schema.labels import SFTL54_FLIP_PAIRS

# Under rigid motion propagation is exact up to float32 rounding: the measured worst case is 5e-6 px (64 px source,
# 128 px output, and a 76.8 px crop pasted into 96 x 128); 1e-3 px leaves room for other BLAS builds.
TOL_PX = 1e-3

# ------------------------------------------------------------------------------------------- propagation


@pytest.fixture(scope="module")
def pipe():
    nets = LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=0)
    return LivePortraitPipeline(nets, device="cpu", progress=False, chunk_size=4)


# The crop case: a 96 x 128 image, face box (40, 20)-(88, 68), crop side 1.6 x 48 = 76.8 centred at
# (64, 44 - 0.125 * 76.8) = (64, 34.4) in pixel-edge coordinates.
CROP_IMAGE = (96, 128)
CROP_BOX, CROP_SCALE = (40.0, 20.0, 88.0, 68.0), 1.6


_SOURCES: dict = {}


def identity_source(pipe, cropped: bool, flat: bool = False):
    """Built once per kind (F and M are the slow part; propagation never changes a source)."""
    key = (id(pipe), cropped, flat)
    if key not in _SOURCES:
        _SOURCES[key] = _identity_source(pipe, cropped, flat)
    return _SOURCES[key]


def _identity_source(pipe, cropped: bool, flat: bool = False):
    """A real SourceState whose motion is overwritten: pose 0, scale 1, t 0, exp 0, so x_s = x_c and R_s = I."""
    if cropped:
        image = np.full((*CROP_IMAGE, 3), 100, np.uint8)
        source = pipe.prepare_source(image, crop_from_box(CROP_BOX, CROP_IMAGE, crop_size=64, scale=CROP_SCALE))
    else:
        source = pipe.prepare_source(np.full((64, 64, 3), 100, np.uint8))
    kp = source.info.kp.clone()
    if flat:  # every keypoint at depth 0: yaw and pitch become a pure foreshortening
        kp[..., 2] = 0
    K = kp.shape[1]
    zero = torch.zeros(1)
    source.info = SourceInfo(zero, zero, zero, torch.ones(1, 1), torch.zeros(1, 3), torch.zeros(1, K, 3), kp,
                             rotation_matrix(zero, zero, zero), kp.clone())
    return source


def geometry(cropped: bool):
    """(centre of the model's frame in input pixels, input -> output pixel factor, half-size for t) from first
    principles: the whole 64 x 64 image rendered at 128 x 128, or the crop square pasted back 1:1."""
    if cropped:
        side = (CROP_BOX[2] - CROP_BOX[0]) * CROP_SCALE
        centre = np.array([(CROP_BOX[0] + CROP_BOX[2]) / 2, (CROP_BOX[1] + CROP_BOX[3]) / 2 - 0.125 * side])
        return centre, 1.0, side / 2
    return np.array([32.0, 32.0]), 2.0, 64.0


def still_for(cropped: bool) -> StillLabels:
    if cropped:
        box = np.array([52, 30, 24, 26], np.float32)
    else:
        box = np.array([20, 18, 24, 28], np.float32)
    layout = TEMPLATE_LAYOUT * box[2:] + box[:2]
    return StillLabels(box, layout.astype(np.float32), "given")


def drive(pipe, source, relative=False, **fields):
    motion = MotionSequence(relative=relative, **{k: np.asarray(v, np.float32) for k, v in fields.items()})
    return pipe.driving_keypoints(source, motion, AnimationOptions(stitching=False))


def rotations(yaw=0.0, pitch=0.0, roll=0.0):
    """Frame 0 at rest, frame 1 at the given angles."""
    return rotation_matrix(torch.tensor([0.0, pitch]), torch.tensor([0.0, yaw]), torch.tensor([0.0, roll])).numpy()


@pytest.mark.parametrize("cropped", [False, True], ids=["full", "crop"])
def test_zero_motion_is_identity(pipe, cropped):
    source, still = identity_source(pipe, cropped), still_for(cropped)
    labels = propagate_labels(pipe, source, drive(pipe, source, R=rotations()), still)
    c, f, _ = geometry(cropped)
    assert np.abs(labels.landmarks - f * still.landmarks).max() < TOL_PX
    assert np.abs(labels.boxes - f * still.box_xywh).max() < TOL_PX
    assert np.abs(labels.head_pose).max() < 1e-4


@pytest.mark.parametrize("cropped", [False, True], ids=["full", "crop"])
def test_roll_rotates_about_the_frame_centre(pipe, cropped):
    source, still = identity_source(pipe, cropped), still_for(cropped)
    labels = propagate_labels(pipe, source, drive(pipe, source, R=rotations(roll=20.0)), still)
    c, f, _ = geometry(cropped)
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # image y points down
    want = f * (c + (still.landmarks - c) @ rot.T)
    assert np.abs(labels.landmarks[1] - want).max() < TOL_PX
    assert np.allclose(labels.head_pose[1], [0, 0, 20], atol=1e-3)


@pytest.mark.parametrize("cropped", [False, True], ids=["full", "crop"])
def test_translation_moves_by_t_times_half_the_frame(pipe, cropped):
    source, still = identity_source(pipe, cropped), still_for(cropped)
    t = np.array([[0, 0, 0], [0.1, -0.05, 0.3]])  # tz is ignored (LivePortrait keeps tz = 0)
    labels = propagate_labels(pipe, source, drive(pipe, source, t=t), still)
    c, f, half = geometry(cropped)
    want = f * still.landmarks + t[1, :2] * half
    assert np.abs(labels.landmarks[1] - want).max() < TOL_PX
    box = still.box_xywh
    assert np.abs(labels.boxes[1] - [*(f * box[:2] + t[1, :2] * half), *(f * box[2:])]).max() < TOL_PX


@pytest.mark.parametrize("cropped", [False, True], ids=["full", "crop"])
def test_scale_is_about_the_frame_centre(pipe, cropped):
    source, still = identity_source(pipe, cropped), still_for(cropped)
    # relative to frame 0 (absolute motion keeps the source's scale, as upstream)
    labels = propagate_labels(pipe, source, drive(pipe, source, relative=True, scale=[[1.0], [1.3]]), still)
    c, f, _ = geometry(cropped)
    assert np.abs(labels.landmarks[1] - f * (c + 1.3 * (still.landmarks - c))).max() < TOL_PX
    assert np.abs(labels.boxes[1, 2:] - f * 1.3 * still.box_xywh[2:]).max() < TOL_PX


@pytest.mark.parametrize("angle", ["yaw", "pitch"])
def test_yaw_and_pitch_foreshorten_a_flat_face(pipe, angle):
    source, still = identity_source(pipe, False, flat=True), still_for(False)
    labels = propagate_labels(pipe, source, drive(pipe, source, R=rotations(**{angle: 30.0})), still)
    c, f, _ = geometry(False)
    axis = 0 if angle == "yaw" else 1
    want = still.landmarks - c
    want[:, axis] *= np.cos(np.deg2rad(30.0))
    assert np.abs(labels.landmarks[1] - f * (c + want)).max() < TOL_PX
    assert labels.head_pose[1, ["yaw", "pitch"].index(angle)] == pytest.approx(30.0, abs=1e-3)


@pytest.mark.parametrize("cropped", [False, True], ids=["full", "crop"])
def test_box_of_a_rotated_square_is_the_bounds_of_its_rotated_corners(pipe, cropped):
    source = identity_source(pipe, cropped)
    c, f, _ = geometry(cropped)
    box = np.array([c[0] - 8, c[1] - 4, 12, 12], np.float32)  # off-centre, so it also swings around c
    still = StillLabels(box, None, "given")
    labels = propagate_labels(pipe, source, drive(pipe, source, R=rotations(roll=30.0)), still)
    a = np.deg2rad(30.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    corners = np.array([[box[0], box[1]], [box[0] + 12, box[1]], [box[0], box[1] + 12], [box[0] + 12, box[1] + 12]])
    moved = f * (c + (corners - c) @ rot.T)
    lo, hi = moved.min(0), moved.max(0)
    assert np.abs(labels.boxes[1] - [*lo, *(hi - lo)]).max() < TOL_PX
    assert labels.landmarks is None


def test_boxes_are_clipped_to_the_frame_and_every_frame_is_labelled(pipe):
    source, still = identity_source(pipe, False), still_for(False)
    labels = propagate_labels(pipe, source, drive(pipe, source, t=[[0, 0, 0], [-0.8, 0, 0], [0, 0.9, 0]]), still)
    assert len(labels) == 3 and labels.frame_size == (128, 128)
    x, y, w, h = labels.boxes.T
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= 128 + 1e-4).all() and (y + h <= 128 + 1e-4).all()
    assert x[1] == 0 and y[2] + h[2] == pytest.approx(128)
    assert labels.landmarks[2][:, 1].max() > 128  # landmarks follow the face out of the frame, unclipped


def test_head_pose_is_the_driven_pose_and_matches_the_rendered_frames(pipe):
    source = pipe.prepare_source(np.full((64, 64, 3), 90, np.uint8))
    motion = head_pose_sweep(9, yaw=30, pitch=20, roll=10)
    kp = pipe.driving_keypoints(source, motion)
    labels = propagate_labels(pipe, source, kp, template_still_labels(64, 64))
    want = np.stack([motion.extra["yaw"], motion.extra["pitch"], motion.extra["roll"]], 1)
    assert np.abs(labels.head_pose - want).max() < 1e-3
    assert len(labels) == len(motion) == 9
    frames = np.stack(list(pipe.iter_frames(source, motion, keypoints={"x_d": kp["x_d"][:2]})))  # W+G are slow
    assert frames.shape[1:3] == labels.frame_size


# --------------------------------------------------------------------------------------------- detector


def test_letterbox_pads_a_wide_image_with_grey_and_maps_boxes_back(tmp_path):
    # 64 x 128 image into a 64 x 64 input: scale 0.5, 64 x 32 content, 16 rows of grey above and below
    path = write_yolo_detector(tmp_path / "det.onnx", [[32, 32, 20, 10, 0.9]], input_size=(64, 64))
    det = YoloFaceDetector(path)
    image = np.full((64, 128), 200, np.uint8)
    boxed, _ = det.letterbox(np.repeat(image[..., None], 3, 2))
    assert boxed.shape == (64, 64, 3)
    assert (boxed[:16] == 114).all() and (boxed[48:] == 114).all() and (boxed[16:48] == 200).all()
    (face,) = det(image)
    # input (22, 27)-(42, 37) -> x / 0.5, (y - 16) / 0.5
    assert np.allclose(face.box_xywh, [44, 22, 40, 20], atol=1e-4)
    assert face.score == pytest.approx(0.9) and face.points5 is None and face.box_xywh.dtype == np.float32


def test_letterbox_on_a_tall_image_pads_columns(tmp_path):
    # 100 x 50 image into 64 x 64: scale 0.64, 32 x 64 content, 16 columns each side
    det = YoloFaceDetector(write_yolo_detector(tmp_path / "det.onnx", [[32, 32, 16, 32, 0.8]], input_size=(64, 64)))
    (face,) = det(np.zeros((100, 50, 3), np.uint8))
    assert np.allclose(face.box_xywh, [(24 - 16) / 0.64, 16 / 0.64, 16 / 0.64, 32 / 0.64], atol=1e-3)


def test_yolo5face_points_are_mapped_back(tmp_path):
    pts = [[[20, 24], [36, 24], [28, 30], [22, 36], [34, 36]]]
    path = write_yolo_detector(tmp_path / "face.onnx", [[28, 30, 20, 24, 0.95]], kind="yolo5face", points5=pts)
    det = YoloFaceDetector(path)
    assert det.kind == "yolo5face"
    (face,) = det(np.zeros((128, 64), np.uint8))  # scale 0.5, 16 columns of padding on the left
    want = (np.asarray(pts[0], np.float64) - [16, 0]) / 0.5
    assert np.allclose(face.points5, want, atol=1e-4)
    assert np.allclose(face.box_xywh, [(18 - 16) / 0.5, 18 / 0.5, 40, 48], atol=1e-4)


def test_nms_drops_a_duplicate_and_the_score_threshold_drops_weak_faces(tmp_path):
    rows = [[20, 20, 16, 16, 0.9], [21, 20, 16, 16, 0.8], [48, 48, 12, 12, 0.6], [48, 20, 10, 10, 0.2]]
    path = write_yolo_detector(tmp_path / "det.onnx", rows, input_size=(64, 64))
    faces = YoloFaceDetector(path)(np.zeros((64, 64, 3), np.uint8))
    assert [round(f.score, 4) for f in faces] == [0.9, 0.6]
    assert np.allclose(faces[0].box_xywh, [12, 12, 16, 16]) and np.allclose(faces[1].box_xywh, [42, 42, 12, 12])
    assert len(YoloFaceDetector(path, conf=0.7)(np.zeros((64, 64, 3), np.uint8))) == 1
    assert len(YoloFaceDetector(path, iou=0.95)(np.zeros((64, 64, 3), np.uint8))) == 3  # looser NMS keeps both


def test_sixteen_columns_default_to_yolo5face_unless_told(tmp_path):
    # a YOLOv5 model with 11 classes has the YOLO5Face width; its face is class 0, YOLO5Face's cls is column 15
    path = write_yolo_detector(tmp_path / "det.onnx", [[32, 32, 10, 10, 0.9]], num_classes=11)
    image = np.zeros((64, 64, 3), np.uint8)
    assert YoloFaceDetector(path)(image) == []
    (face,) = YoloFaceDetector(path, kind="yolov5")(image)
    assert face.score == pytest.approx(0.9)


# -------------------------------------------------------------------------------------------- landmarks


def test_landmarker54_maps_normalised_yx_back_to_image_pixels(tmp_path):
    rng = np.random.default_rng(0)
    yx = rng.uniform(0.1, 0.9, (54, 2))
    box = [30.0, 40.0, 50.0, 60.0]  # side 1.2 * 60 = 72 around the centre (55, 70)
    want = np.stack([55 - 36 + yx[:, 1] * 72, 70 - 36 + yx[:, 0] * 72], 1)
    image = np.zeros((150, 120), np.uint8)
    for shape in ("flat", "pairs"):
        model = Landmarker54(write_landmarker54(tmp_path / f"{shape}.onnx", yx, output_shape=shape))
        got = model(image, box)
        assert got.shape == (54, 2) and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-3


def test_landmarker203_maps_normalised_xy_back_with_the_upstream_crop(tmp_path):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1, (203, 2))
    box = [100.0, 80.0, 40.0, 50.0]  # side 1.5 * 50 = 75, centre (120, 105 - 0.1 * 75)
    left, top = 120 - 37.5, 105 - 7.5 - 37.5
    model = Landmarker203(write_landmarker203(tmp_path / "lm203.onnx", xy))
    got = model(np.zeros((256, 256, 3), np.uint8), box)
    assert np.abs(got - (xy * 75 + [left, top])).max() < 1e-3


def test_the_crop_fed_to_the_models_keeps_pixel_centres():
    image = np.zeros((100, 100), np.uint8)
    image[40:42, 60:62] = 255  # a 2 x 2 spot centred at (61, 41) in edge coordinates
    left, top, side, size = 50.0, 30.0, 25.0, 50  # 2x zoom
    crop = cut_crop(image, left, top, side, size).astype(np.float64)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    centroid = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    assert np.allclose(centroid, [(61 - left) * 2, (41 - top) * 2], atol=0.05)


def test_eye_and_lip_ratios_follow_the_upstream_formula():
    p = np.zeros((203, 2))
    p[0], p[12], p[6], p[18] = [0, 0], [10, 0], [5, -2], [5, 2]  # left eye: 4 / 10
    p[24], p[36], p[30], p[42] = [30, 0], [50, 0], [40, -1], [40, 4]  # right eye: 5 / 20
    p[48], p[66], p[90], p[102] = [10, 30], [18, 30], [14, 29], [14, 31]  # lip: 2 / 8
    assert Landmarker203.eye_lip_ratios(p) == pytest.approx((0.4, 0.25, 0.25), abs=1e-6)


# ----------------------------------------------------------------------------------------------- errors


BAD = [
    (YoloFaceDetector, (1, 3, 64), [(1, 4, 6)], "rank 4"),
    (YoloFaceDetector, (1, 1, 64, 64), [(1, 4, 6)], "3 channel"),
    (YoloFaceDetector, (1, 3, 64, 64), [(1, 4, 6), (1, 4, 6)], "outputs: expected 1 output"),
    (YoloFaceDetector, (1, 3, 64, 64), [(1, 4, 4)], "(1, N, 5 + nc)"),
    (Landmarker54, (1, 256, 256), [(1, 108)], "rank 4"),
    (Landmarker54, (1, 3, 256, 256), [(1, 108)], "1 channel"),
    (Landmarker54, (1, 1, 256, 256), [(1, 108), (1, 2)], "outputs: expected 1 output"),
    (Landmarker54, (1, 1, 256, 256), [(1, 106, 2)], "108 values"),
    (Landmarker203, (1, 1, 224, 224), [(1, 2), (1, 2), (1, 406)], "3 channel"),
    (Landmarker203, (1, 3, 224, 224), [(1, 406)], "outputs: expected 3 outputs"),
    (Landmarker203, (1, 3, 224, 224), [(1, 2), (1, 2), (1, 212)], "406 values"),
]


@pytest.mark.parametrize("cls, input_shape, outputs, expected", BAD,
                         ids=[f"{c.__name__}-{e}" for c, _, _, e in BAD])
def test_contract_violations_name_the_file_and_the_tensor(tmp_path, cls, input_shape, outputs, expected):
    path = write_bad_model(tmp_path / "bad.onnx", input_shape, outputs)
    with pytest.raises(ModelIOError) as err:
        cls(path)
    message = str(err.value)
    assert str(path) in message and expected in message and "got" in message
    assert isinstance(err.value, ValueError)


def test_yolo5face_kind_needs_sixteen_columns(tmp_path):
    path = write_yolo_detector(tmp_path / "det.onnx", [[32, 32, 10, 10, 0.9]])
    with pytest.raises(ModelIOError, match=r"\(1, N, 16\) for YOLO5Face, got shape \(1, 1, 6\)"):
        YoloFaceDetector(path, kind="yolo5face")


@pytest.mark.parametrize("cls", [YoloFaceDetector, Landmarker54, Landmarker203])
def test_missing_and_unreadable_model_files(tmp_path, cls):
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        cls(missing)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelIOError, match="junk.onnx"):
        cls(junk)


# ---------------------------------------------------------------------------------------------- the still


def fixed_detector(*faces):
    return lambda image: [Detection(np.asarray(b, np.float32), s) for b, s in faces]


def test_given_values_win_over_the_models(tmp_path):
    image = np.zeros((64, 64), np.uint8)
    pts = TEMPLATE_LAYOUT * 20 + 10
    landmarker = Landmarker54(write_landmarker54(tmp_path / "lm.onnx", np.full((54, 2), 0.5)))
    still = label_still(image, fixed_detector(([0, 0, 5, 5], 0.9)), landmarker, box=[8, 9, 24, 25], landmarks=pts)
    assert still.source == "given" and np.allclose(still.box_xywh, [8, 9, 24, 25]) and np.allclose(still.landmarks, pts)
    from_points = label_still(image, landmarks=pts)
    assert from_points.source == "given" and np.allclose(from_points.box_xywh, [10, 10, 20, 20], atol=0.2)


def test_the_detector_picks_the_best_face_and_the_landmarker_runs_on_it(tmp_path):
    image = np.zeros((64, 64), np.uint8)
    yx = np.tile([[0.25, 0.75]], (54, 1))
    landmarker = Landmarker54(write_landmarker54(tmp_path / "lm.onnx", yx))
    detector = fixed_detector(([0, 0, 10, 10], 0.4), ([20, 20, 20, 10], 0.8))
    still = label_still(image, detector, landmarker)
    assert still.source == "detector" and np.allclose(still.box_xywh, [20, 20, 20, 10])
    # crop side 24 centred at (30, 25): x = 18 + 0.75 * 24, y = 13 + 0.25 * 24
    assert np.allclose(still.landmarks, np.tile([[36, 19]], (54, 1)), atol=1e-3)
    assert label_still(image, detector).landmarks is None  # a box alone does not invent landmarks


def test_without_models_or_faces_the_template_prior_is_used(caplog):
    image = np.zeros((512, 512, 3), np.uint8)
    prior = template_still_labels(512, 512)
    plain = label_still(image)
    assert plain.source == "template" and np.array_equal(plain.box_xywh, prior.box_xywh)
    with caplog.at_level(logging.WARNING, logger="generator.annotate.labels"):
        missed = label_still(image, fixed_detector())
    assert missed.source == "template" and "no face" in caplog.text


@pytest.mark.parametrize("size", [(512, 512), (768, 512)])
def test_the_template_is_a_plausible_centred_face(size):
    height, width = size
    prior = template_still_labels(width, height)
    x, y, w, h = prior.box_xywh
    pts = prior.landmarks.astype(np.float64)
    assert prior.landmarks.shape == (54, 2) and prior.source == "template"
    assert x + w / 2 == pytest.approx(width / 2) and 0.3 * height < y + h / 2 < 0.5 * height
    assert (pts >= [x, y]).all() and (pts <= [x + w, y + h]).all()
    mirrored = pts.copy()
    mirrored[:, 0] = 2 * (x + w / 2) - mirrored[:, 0]
    for a, b in SFTL54_FLIP_PAIRS:
        mirrored[[a, b]] = mirrored[[b, a]]
    assert np.abs(mirrored - pts).max() < 1e-3  # left-right symmetric in SF-TL54 order
    brows, eyes, nose_tip = pts[17:27, 1].max(), pts[36:48, 1].mean(), pts[33, 1]
    mouth, chin = pts[48:54, 1].mean(), pts[8, 1]
    assert brows < eyes < nose_tip < mouth < chin == pts[:, 1].max()
    assert pts[36:42, 0].max() < pts[42:48, 0].min()  # right eye on the image left


# ------------------------------------------------------------------------------------ detector vs labels


def propagated_track(T=4):
    boxes = np.array([[10 + t, 12, 20, 24] for t in range(T)], np.float32)
    lm = np.stack([TEMPLATE_LAYOUT * [20, 24] + b[:2] for b in boxes]).astype(np.float32)
    return PropagatedLabels(boxes, lm, np.zeros((T, 3), np.float32), (64, 64))


def test_a_detector_that_agrees_flags_nothing():
    labels = propagated_track()
    dets = [Detection(b.copy(), 0.9, landmarks=l.copy()) for b, l in zip(labels.boxes, labels.landmarks)]
    result = compare_labels(labels, dets)
    assert isinstance(result, Disagreement) and result.frames == []
    assert np.allclose(result.iou, 1) and np.allclose(result.nme, 0, atol=1e-6)
    assert result.summary["flagged"] == 0 and result.summary["mean_iou"] == pytest.approx(1.0)


def test_a_detector_half_a_box_off_flags_every_frame():
    labels = propagated_track()
    dets = [Detection(b + [10, 0, 0, 0], 0.9) for b in labels.boxes]  # IoU = 10 x 24 / (30 x 24) = 1/3
    result = compare_labels(labels, dets)
    assert result.frames == [0, 1, 2, 3] and np.allclose(result.iou, 1 / 3) and result.nme is None


def test_a_missed_frame_is_flagged_and_the_summary_is_json(tmp_path):
    labels = propagated_track()
    path = write_yolo_detector(tmp_path / "det.onnx", [[20, 24, 20, 24, 0.9]], input_size=(64, 64))
    yolo = YoloFaceDetector(path)
    lm = Landmarker54(write_landmarker54(tmp_path / "lm.onnx", np.full((54, 2), 0.5)))
    frames = [np.zeros((64, 64), np.uint8)] * 4
    frames[2] = np.full((64, 64), 255, np.uint8)
    detector = lambda im: [] if im.max() == 255 else yolo(im)  # noqa: E731 (a detector that misses frame 2)
    dets = detect_frames(iter(frames), detector, lm)
    assert dets[2] is None and all(d.landmarks.shape == (54, 2) for i, d in enumerate(dets) if i != 2)
    result = compare_labels(labels, dets)
    assert 2 in result.frames and np.isnan(result.iou[2]) and result.summary["missed"] == 1
    assert result.iou[0] == pytest.approx(1.0, abs=1e-4)
    json.dumps(result.summary, allow_nan=False)


def test_frame_rows_encode_with_the_loader_schema():
    labels = propagated_track()
    features = frame_features(["S_0"])
    det = Detection(np.array([11, 12, 20, 24], np.float32), 0.8, landmarks=labels.landmarks[0] + 1)
    faces = frame_faces(labels, 0, det)
    assert [f["source"] for f in faces] == ["propagated", "detector"]
    row = {"image": np.zeros((64, 64, 3), np.uint8), "video_id": "S_0_hp", "identity": "S_0", "gender": "male",
           "set": "head_pose", "driving_template": "head_pose", "frame_index": 0, "faces": faces, "qc": "ok",
           "head_pose": dict(zip(["yaw", "pitch", "roll"], labels.head_pose[0].tolist())), "seed": 1, "prompt": "p"}
    encoded = features.encode_example(row)
    assert [f["source"] for f in encoded["faces"]] == [2, 0]
    assert np.allclose(encoded["faces"][0]["bbox"], labels.boxes[0])
    no_landmarks = PropagatedLabels(labels.boxes, None, labels.head_pose)
    encoded = features.encode_example({**row, "faces": frame_faces(no_landmarks, 3, Detection(det.box_xywh, 0.5))})
    assert encoded["faces"][0]["landmarks"] is None and encoded["faces"][1]["landmarks"] is None
    with pytest.raises(IndexError):
        frame_faces(labels, 4)
