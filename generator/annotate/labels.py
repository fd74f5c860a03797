"""Boxes, 54 landmarks and head pose for generated frames.

The default path labels the still once and carries the labels through the animation's own motion:

    still = label_still(image, detector, landmarker)        # or given values, or the template prior
    labels = propagate_labels(pipe, source, keypoints, still)  # every frame labelled, head pose exact
    rows = [frame_faces(labels, t) for t in range(len(labels.boxes))]

A detector run on the animated frames is an independent check, not the label: `detect_frames` + `compare_labels`
flag frames where the two disagree. Pixel coordinates follow COCO: pixel i covers [i, i + 1).
The ONNX model contracts live in `generator.onnx_models`; docs/annotate.md describes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from generator.annotate.onnx_models import Detection, Landmarker54, Landmarker203, ModelIOError, YoloFaceDetector
from thermvision_db.errors import InputError
from thermvision_db.schema.labels import NUM_LANDMARKS, iou

__all__ = [
    "ModelIOError", "YoloFaceDetector", "Detection", "Landmarker54", "Landmarker203", "StillLabels", "label_still",
    "template_still_labels", "box_from_landmarks", "PropagatedLabels", "propagate_labels", "detect_frames",
    "Disagreement", "compare_labels", "frame_faces", "TEMPLATE_LAYOUT", "OUTLINE_POINTS_PER_SIDE",
]

log = logging.getLogger(__name__)

Detector = Callable[[np.ndarray], Sequence[Detection]]
Landmarker = Callable[[np.ndarray, np.ndarray], np.ndarray]

# ------------------------------------------------------------------------------------------- template prior


def _template_layout() -> np.ndarray:
    """A mean frontal SF-TL54 layout as fractions (u, v) of the face box (u right, v down, box = forehead to chin,
    ear to ear), drawn from common facial proportions: eyes at 0.41 of the box height, the nose tip at 0.685, the
    mouth at 0.79, the chin at 0.97; left-right symmetric under labels.SFTL54_FLIP_PAIRS.
    """
    phi = np.pi - np.arange(17) * np.pi / 16  # jaw: image-left ear, chin, image-right ear
    jaw = np.stack([0.5 + 0.45 * np.cos(phi), 0.42 + 0.55 * np.sin(phi)], 1)
    brow_y = [0.34, 0.305, 0.295, 0.30, 0.315]
    right_brow = np.stack([np.linspace(0.16, 0.44, 5), brow_y], 1)
    left_brow = np.stack([1 - right_brow[::-1, 0], right_brow[::-1, 1]], 1)
    bridge = np.stack([np.full(4, 0.5), [0.40, 0.47, 0.54, 0.61]], 1)
    nose = np.array([[0.41, 0.66], [0.455, 0.675], [0.5, 0.685], [0.545, 0.675], [0.59, 0.66]])
    # iBUG order per eye: outer corner, upper outer, upper inner, inner corner, lower inner, lower outer
    right_eye = np.array([[0.235, 0.41], [0.285, 0.385], [0.335, 0.385], [0.385, 0.41], [0.335, 0.43], [0.285, 0.43]])
    # left eye: inner corner, upper inner, upper outer, outer corner, lower outer, lower inner
    left_eye = np.array([[0.615, 0.41], [0.665, 0.385], [0.715, 0.385], [0.765, 0.41], [0.715, 0.43], [0.665, 0.43]])
    mouth = np.array([[0.37, 0.79], [0.5, 0.76], [0.63, 0.79], [0.5, 0.85], [0.5, 0.787], [0.5, 0.797]])
    layout = np.concatenate([jaw, right_brow, left_brow, bridge, nose, right_eye, left_eye, mouth])
    assert layout.shape == (NUM_LANDMARKS, 2)
    return layout.astype(np.float64)


TEMPLATE_LAYOUT = _template_layout()
# The prior's face box, as fractions of the image: FLUX stills are centred head-and-shoulders portraits, the face
# about 0.36 of the shorter side wide and 0.46 tall, its centre on the vertical axis a little above the middle.
TEMPLATE_BOX = {"width": 0.36, "height": 0.46, "centre_y": 0.44}


@dataclass
class StillLabels:
    """The still's face: COCO box, optional landmarks, and where they came from (detector, given or template)."""

    box_xywh: np.ndarray  # (4,) float32
    landmarks: np.ndarray | None  # (54, 2) float32 pixel (x, y)
    source: str


def template_still_labels(width: int, height: int) -> StillLabels:
    """A prior for a centred portrait when no detector is available (the offline tiny preset): the box of
    TEMPLATE_BOX and the mean layout TEMPLATE_LAYOUT placed in it. Plausible, not measured: QC should treat it so."""
    s = min(width, height)
    w, h = TEMPLATE_BOX["width"] * s, TEMPLATE_BOX["height"] * s
    x, y = width / 2 - w / 2, TEMPLATE_BOX["centre_y"] * height - h / 2
    landmarks = TEMPLATE_LAYOUT * [w, h] + [x, y]
    return StillLabels(np.array([x, y, w, h], np.float32), landmarks.astype(np.float32), "template")


def box_from_landmarks(landmarks) -> np.ndarray:
    """The face box the template would draw around these landmarks: their extent stretched to the template's
    box (landmarks span neither the forehead nor the full box width, so their bare bounds are too small)."""
    pts = _landmarks(landmarks).astype(np.float64)
    lo, hi = pts.min(0), pts.max(0)
    t_lo, t_hi = TEMPLATE_LAYOUT.min(0), TEMPLATE_LAYOUT.max(0)
    wh = (hi - lo) / (t_hi - t_lo)
    return _box([*(lo - t_lo * wh), *wh])


def _box(value) -> np.ndarray:
    box = np.asarray(value, dtype=np.float32).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
        raise InputError(f"a face box is COCO [x, y, w, h] with w, h > 0, got {np.asarray(value).tolist()}")
    return box


def _landmarks(value) -> np.ndarray:
    pts = np.asarray(value, dtype=np.float32)
    if pts.shape != (NUM_LANDMARKS, 2) or not np.all(np.isfinite(pts)):
        raise InputError(f"landmarks must be ({NUM_LANDMARKS}, 2) finite pixel (x, y), got shape {pts.shape}")
    return pts


def label_still(image: np.ndarray, detector: Detector | None = None, landmarker: Landmarker | None = None,
                box=None, landmarks=None) -> StillLabels:
    """Label the still once; everything downstream follows from it.

    Given values win. The box comes from `box`, else the detector's highest-scoring face, else
    `box_from_landmarks(landmarks)`, else the template prior (also when the detector finds nothing, with a
    warning). Landmarks come from `landmarks`, else the landmarker run on the box, else the template layout when
    the box is the template's, else None (a detector box alone does not invent landmarks). `source` names the
    box's origin.
    """
    height, width = np.asarray(image).shape[:2]
    pts = _landmarks(landmarks) if landmarks is not None else None
    if box is not None:
        still = StillLabels(_box(box), None, "given")
    else:
        faces = list(detector(image)) if detector is not None else []
        if faces:
            best = max(faces, key=lambda f: f.score)
            still = StillLabels(_box(best.box_xywh), best.landmarks, "detector")
        elif pts is not None:
            still = StillLabels(box_from_landmarks(pts), None, "given")
        else:
            if detector is not None:
                log.warning("the detector found no face on the still; using the centred-portrait template")
            still = template_still_labels(width, height)
    if pts is not None:
        still.landmarks = pts
    elif landmarker is not None:
        still.landmarks = _landmarks(landmarker(image, still.box_xywh))
    return still


# --------------------------------------------------------------------------------------------- propagation

OUTLINE_POINTS_PER_SIDE = 8


def box_outline(box_xywh, per_side: int = OUTLINE_POINTS_PER_SIDE) -> np.ndarray:
    """4 * per_side points around a COCO box's edge, corners included: a warped box's bounds come from them."""
    x, y, w, h = (float(v) for v in np.asarray(box_xywh).reshape(4))
    s = np.arange(per_side) / per_side
    top = np.stack([x + s * w, np.full(per_side, y)], 1)
    right = np.stack([np.full(per_side, x + w), y + s * h], 1)
    bottom = np.stack([x + w - s * w, np.full(per_side, y + h)], 1)
    left = np.stack([np.full(per_side, x), y + h - s * h], 1)
    return np.concatenate([top, right, bottom, left])


@dataclass
class PropagatedLabels:
    """Per-frame labels carried from the still: boxes (T, 4) COCO, landmarks (T, 54, 2) or None, head pose (T, 3)
    yaw, pitch, roll in degrees (the pose the animation was given), and the frame size (H, W)."""

    boxes: np.ndarray
    landmarks: np.ndarray | None
    head_pose: np.ndarray
    frame_size: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.boxes)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def propagate_labels(pipeline, source, keypoints: dict, still: StillLabels) -> PropagatedLabels:
    """Carry the still's box and landmarks into every animated frame through the animation's own motion.

    Points move with `pipeline.map_source_points` (exact at the implicit keypoints, rigid + interpolated residual
    in between). The box is the axis-aligned bounds of its mapped outline, clipped to the frame; landmarks are
    not clipped. Head pose is the driven yaw, pitch, roll. No frame is left unlabelled.
    """
    box = _box(still.box_xywh)
    outline = box_outline(box)
    points = outline if still.landmarks is None else np.concatenate([outline, _landmarks(still.landmarks)])
    # map_source_points puts pixel centres at integers; labels put them at i + 0.5
    moved = np.asarray(pipeline.map_source_points(source, points - 0.5, keypoints), dtype=np.float64) + 0.5
    if source.crop is not None:
        H, W = source.crop.original_size
    else:
        H = W = int(pipeline.cfg.output_size)
    ring = moved[:, : len(outline)]
    x0 = np.clip(ring[..., 0].min(1), 0, W)
    x1 = np.clip(ring[..., 0].max(1), 0, W)
    y0 = np.clip(ring[..., 1].min(1), 0, H)
    y1 = np.clip(ring[..., 1].max(1), 0, H)
    boxes = np.stack([x0, y0, x1 - x0, y1 - y0], 1).astype(np.float32)
    landmarks = None if still.landmarks is None else moved[:, len(outline):].astype(np.float32)
    pose = np.stack([_numpy(keypoints[k]).reshape(-1) for k in ("yaw", "pitch", "roll")], 1).astype(np.float32)
    if len(pose) != len(boxes):
        raise InputError(f"keypoints hold {len(pose)} head poses for {len(boxes)} frames")
    return PropagatedLabels(boxes, landmarks, pose, (int(H), int(W)))


# ----------------------------------------------------------------------------------------- detector check


def detect_frames(frames: Iterable[np.ndarray], detector: Detector,
                  landmarker: Landmarker | None = None) -> list[Detection | None]:
    """The highest-scoring face per frame (None where the detector finds none), with landmarks attached when a
    landmarker is given. Frames are consumed one at a time, so a generator of decoded frames streams."""
    out: list[Detection | None] = []
    for frame in frames:
        faces = list(detector(frame))
        if not faces:
            out.append(None)
            continue
        best = max(faces, key=lambda f: f.score)
        if landmarker is not None:
            best = replace(best, landmarks=_landmarks(landmarker(frame, best.box_xywh)))
        out.append(best)
    return out


@dataclass
class Disagreement:
    """Propagated labels against a detector: per-frame IoU (nan = no detection), per-frame NME (landmark error
    over the inter-ocular distance, nan where unavailable; None when either side has no landmarks), the frames
    flagged (IoU below the threshold or detector missed) and a JSON-serialisable summary."""

    iou: np.ndarray
    nme: np.ndarray | None
    frames: list[int]
    summary: dict = field(default_factory=dict)


OUTER_EYE_CORNERS = (36, 45)  # SF-TL54 = iBUG 36 and 45: the NME normaliser (inter-ocular distance)


def _stat(values: np.ndarray, fn) -> float | None:
    values = values[np.isfinite(values)]
    return float(fn(values)) if len(values) else None


IOU_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
IOU_BINS = np.linspace(0.0, 1.0, 11)


def iou_distribution(ious) -> dict:
    """The agreement as a distribution over detected frames: IoU quantiles and a 10-bin histogram on [0, 1]."""
    values = np.asarray(ious, np.float64)
    values = values[np.isfinite(values)]
    quantiles = ({f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in IOU_QUANTILES}
                 if len(values) else {f"p{round(q * 100):02d}": None for q in IOU_QUANTILES})
    counts = np.histogram(values, bins=IOU_BINS)[0] if len(values) else np.zeros(len(IOU_BINS) - 1, int)
    return {"iou_quantiles": quantiles, "iou_histogram": {"bins": IOU_BINS.round(2).tolist(),
                                                          "counts": [int(c) for c in counts]}}


def compare_labels(propagated: PropagatedLabels, detections: Sequence[Detection | None],
                   iou_threshold: float = 0.5) -> Disagreement:
    """Flag frames where the detector misses the face or its box overlaps the propagated box by IoU < threshold."""
    T = len(propagated.boxes)
    if len(detections) != T:
        raise InputError(f"{len(detections)} detections for {T} propagated frames")
    ious = np.full(T, np.nan)
    nme = np.full(T, np.nan) if propagated.landmarks is not None else None
    for t, det in enumerate(detections):
        if det is None:
            continue
        ious[t] = iou(propagated.boxes[t].tolist(), np.asarray(det.box_xywh).tolist())
        if nme is not None and det.landmarks is not None:
            ref = propagated.landmarks[t].astype(np.float64)
            a, b = OUTER_EYE_CORNERS
            norm = max(float(np.linalg.norm(ref[a] - ref[b])), 1e-6)
            nme[t] = float(np.linalg.norm(np.asarray(det.landmarks, np.float64) - ref, axis=1).mean() / norm)
    if nme is not None and np.isnan(nme).all():
        nme = None
    flagged = [t for t in range(T) if not (ious[t] >= iou_threshold)]  # nan (missed) fails the comparison
    missed = int(np.isnan(ious).sum())
    summary = {
        "frames": T, "detected": T - missed, "missed": missed, "flagged": len(flagged),
        "iou_threshold": float(iou_threshold), "mean_iou": _stat(ious, np.mean), "min_iou": _stat(ious, np.min),
        "mean_nme": None if nme is None else _stat(nme, np.mean),
        "max_nme": None if nme is None else _stat(nme, np.max),
        **iou_distribution(ious),
    }
    return Disagreement(ious, nme, flagged, summary)


# ------------------------------------------------------------------------------------------------ rows


def _row_points(points) -> list[list[float]] | None:
    if points is None:
        return None
    return [[float(x), float(y)] for x, y in np.asarray(points, dtype=np.float64).reshape(NUM_LANDMARKS, 2)]


def frame_faces(propagated: PropagatedLabels, t: int, detection: Detection | None = None) -> list[dict]:
    """Face rows for frame t in the loader's schema: the propagated face first, the detector's second if given."""
    if not 0 <= t < len(propagated.boxes):
        raise IndexError(f"frame {t} out of range for {len(propagated.boxes)} propagated frames")
    rows = [{
        "bbox": [float(v) for v in propagated.boxes[t]],
        "landmarks": None if propagated.landmarks is None else _row_points(propagated.landmarks[t]),
        "source": "propagated",
    }]
    if detection is not None:
        rows.append({"bbox": [float(v) for v in np.asarray(detection.box_xywh).reshape(4)],
                     "landmarks": _row_points(detection.landmarks), "source": "detector"})
    return rows
