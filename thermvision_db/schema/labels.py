"""Face labels: YOLO box files, landmark schemes, per-frame QC and temporal repair.

The released corpus stores one YOLO text file per frame (`0 xc yc w h`, normalised, `%g`), written by a
YOLOv5 detector: a frame without a detection has no file, a frame with two faces has two lines. Here they
become COCO boxes `[x, y, w, h]` in pixels, every detection kept, with a QC flag per frame.

Files as other tools write them are read too: a UTF-8 BOM (Windows editors), a trailing confidence
(`--save-conf`, kept as `score`), YOLO-pose points with visibility 0 (missing: NaN, never (0, 0)). A line of
another class or a box wholly outside the image is not a face: it is dropped and the frame flagged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from thermvision_db.errors import ThermVisionError, excerpt

logger = logging.getLogger(__name__)

# appended names keep the ids of the earlier ones stable
QC_NAMES = ["ok", "missing", "multiple", "out_of_bounds", "other_class", "outside_image"]
SOURCE_NAMES = ["detector", "interpolated", "propagated"]
NUM_LANDMARKS = 54
BOUNDS_TOLERANCE = 1e-3  # normalised units: detectors print rounded values at the border

# SF-TL54: points 0-47 are the iBUG-68 points 0-47; 48-53 are iBUG 48, 51, 54, 57, 62, 66.
SFTL54_TO_IBUG68 = list(range(48)) + [48, 51, 54, 57, 62, 66]
SFTL54_NAMES = (
    [f"jaw_{i}" for i in range(17)]
    + [f"right_brow_{i}" for i in range(5)]
    + [f"left_brow_{i}" for i in range(5)]
    + [f"nose_bridge_{i}" for i in range(4)]
    + [f"nose_lower_{i}" for i in range(5)]
    + [f"right_eye_{i}" for i in range(6)]
    + [f"left_eye_{i}" for i in range(6)]
    + ["mouth_right_corner", "mouth_upper_outer", "mouth_left_corner", "mouth_lower_outer", "mouth_upper_inner", "mouth_lower_inner"]
)
SFTL54_FLIP_PAIRS = (
    [(i, 16 - i) for i in range(8)]
    + [(17 + i, 26 - i) for i in range(5)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 50)]
)
TFW5_NAMES = ["right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner"]


class LabelError(ThermVisionError, ValueError):
    """A label file that cannot be read; the message names the file and the line."""


@dataclass
class Face:
    """One face: COCO box in pixels, optional (54, 2) landmarks in pixels (x, y), and where it came from."""

    bbox: list[float]
    landmarks: list[list[float]] | None = None  # unlabelled points are [nan, nan]
    source: str = "detector"
    score: float | None = None  # detector confidence when the file carries one

    def as_row(self) -> dict:
        return {"bbox": [float(v) for v in self.bbox], "landmarks": self.landmarks, "source": self.source,
                "score": self.score}


@dataclass
class FrameLabels:
    faces: list[Face] = field(default_factory=list)
    qc: str = "ok"


def parse_yolo_text(text: str, width: int, height: int, name: str = "<labels>") -> FrameLabels:
    """Parse one YOLO label file into faces and a QC flag.

    After `class xc yc w h` a line may carry 54 YOLO-pose points (`x y` or `x y v`) and then one confidence
    (YOLOv5 / ultralytics `save_conf` append it last). QC: `out_of_bounds` (a box clipped at the border) over
    `outside_image` (a box dropped) over `other_class` (a line of another class dropped) over `multiple`.
    """
    faces: list[Face] = []
    flags: set[str] = set()
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        values = _numbers(line, name, number)
        xc, yc, w, h = values[1:5]
        if w <= 0 or h <= 0:
            raise LabelError(f"{name}, line {number}: box width and height must be positive, got w={w:g} h={h:g}")
        if values[0] != FACE_CLASS:
            flags.add("other_class")
            logger.warning("%s, line %d: class %g is not the face class 0; not counted as a face", name, number, values[0])
            continue
        x0, y0, x1, y1 = xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2
        if x1 <= 0 or y1 <= 0 or x0 >= 1 or y0 >= 1:
            flags.add("outside_image")
            logger.warning("%s, line %d: box %s lies wholly outside the image; not a face", name, number, values[1:5])
            continue
        if min(x0, y0) < -BOUNDS_TOLERANCE or max(x1, y1) > 1 + BOUNDS_TOLERANCE:
            flags.add("out_of_bounds")
            logger.warning("%s, line %d: box %s extends outside the image; clipped", name, number, values[1:5])
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1))
        bbox = [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]
        landmarks, score = _pose_points_and_score(values[5:], width, height, name, number)
        faces.append(Face(bbox=[round(v, 4) for v in bbox], landmarks=landmarks, score=score))
    for flag in ("out_of_bounds", "outside_image", "other_class"):
        if flag in flags:
            return FrameLabels(faces, flag)
    if not faces:
        return FrameLabels([], "missing")
    return FrameLabels(faces, "multiple" if len(faces) > 1 else "ok")


FACE_CLASS = 0


def _numbers(line: str, name: str, number: int) -> list[float]:
    try:
        values = [float(p) for p in line.split()]
    except ValueError:
        raise LabelError(f"{name}, line {number}: expected numbers 'class xc yc w h', got {excerpt(line)}") from None
    if len(values) < 5:
        raise LabelError(f"{name}, line {number}: expected 'class xc yc w h' (5 values), got {len(values)}: {excerpt(line)}")
    if not all(math.isfinite(v) for v in values):
        raise LabelError(f"{name}, line {number}: non-finite value in {excerpt(line)}")
    return values


def _pose_points_and_score(extra: Sequence[float], width: int, height: int, name: str,
                           number: int) -> tuple[list[list[float]] | None, float | None]:
    score = None
    if len(extra) % 2 == 1:  # an odd count: the last value is the detector's confidence
        score, extra = float(extra[-1]), extra[:-1]
    if len(extra) not in (0, 2 * NUM_LANDMARKS, 3 * NUM_LANDMARKS):
        raise LabelError(
            f"{name}, line {number}: {len(extra) + (score is not None)} values after the box; expected none, a "
            f"confidence, {2 * NUM_LANDMARKS} or {3 * NUM_LANDMARKS} (54 YOLO-pose landmarks), optionally followed by a confidence"
        )
    if score is not None and not 0.0 <= score <= 1.0:
        raise LabelError(f"{name}, line {number}: the last value ({score:g}) is not a confidence in [0, 1]")
    if not extra:
        return None, score
    per_point = len(extra) // NUM_LANDMARKS
    pts = np.asarray(extra, dtype=np.float64).reshape(NUM_LANDMARKS, per_point)
    xy = pts[:, :2] * [width, height]
    if per_point == 3:
        xy[pts[:, 2] == 0] = np.nan  # YOLO-pose writes an unlabelled point as `0 0 0`
    return xy.round(4).tolist(), score


def parse_landmark_text(text: str, width: int, height: int, name: str = "<landmarks>") -> list[list[float]]:
    """A landmark file: 54 lines of `x y` (pixels, or normalised when every value is <= 1)."""
    rows = [line.replace(",", " ").split() for line in text.splitlines() if line.strip()]
    try:
        pts = np.asarray([[float(v) for v in row[:2]] for row in rows], dtype=np.float64)
    except ValueError:
        raise LabelError(f"{name}: landmark lines must be 'x y' numbers") from None
    if pts.shape != (NUM_LANDMARKS, 2):
        raise LabelError(f"{name}: expected {NUM_LANDMARKS} 'x y' lines, found {len(rows)}")
    if np.all(np.abs(pts) <= 1.0):
        pts = pts * [width, height]
    return pts.round(4).tolist()


def coco_to_yolo(bbox: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] pixels -> YOLO (xc, yc, w, h) normalised."""
    x, y, w, h = bbox
    return ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two COCO boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def repair_track(frames: list[FrameLabels]) -> list[FrameLabels]:
    """One face per frame for a single-subject video: fill gaps, resolve double boxes.

    Missing frames get a box linearly interpolated between the nearest labelled frames (copied at the ends);
    a frame with several boxes keeps the one that best overlaps its temporal neighbours. Both are marked
    `source="interpolated"`; the frame's `qc` keeps the raw detector verdict so nothing is hidden.
    """
    single = [f.faces[0].bbox if len(f.faces) == 1 else None for f in frames]
    resolved: list[list[float] | None] = list(single)
    for i, f in enumerate(frames):  # choose among doubles by agreement with the nearest single boxes
        if len(f.faces) > 1:
            neighbours = [single[j] for j in _nearest_labelled(single, i)]
            if neighbours:
                scores = [sum(iou(face.bbox, n) for n in neighbours) for face in f.faces]
                resolved[i] = f.faces[int(np.argmax(scores))].bbox
            else:
                resolved[i] = max(f.faces, key=lambda face: face.bbox[2] * face.bbox[3]).bbox
    known = [i for i, b in enumerate(resolved) if b is not None]
    out: list[FrameLabels] = []
    for i, f in enumerate(frames):
        if len(f.faces) == 1:
            out.append(f)
            continue
        if len(f.faces) > 1:
            chosen = next(face for face in f.faces if face.bbox == resolved[i])
            out.append(FrameLabels([Face(chosen.bbox, chosen.landmarks, "interpolated", chosen.score)], f.qc))
            continue
        if not known:
            out.append(f)
            continue
        out.append(FrameLabels([Face(_interpolate(resolved, known, i), None, "interpolated")], f.qc))
    return out


def _nearest_labelled(single: list, i: int) -> list[int]:
    before = next((j for j in range(i - 1, -1, -1) if single[j] is not None), None)
    after = next((j for j in range(i + 1, len(single)) if single[j] is not None), None)
    return [j for j in (before, after) if j is not None]


def _interpolate(boxes: list, known: list[int], i: int) -> list[float]:
    prev = max((k for k in known if k < i), default=None)
    nxt = min((k for k in known if k > i), default=None)
    if prev is None or nxt is None:
        return list(boxes[prev if nxt is None else nxt])
    t = (i - prev) / (nxt - prev)
    a, b = np.asarray(boxes[prev]), np.asarray(boxes[nxt])
    return [round(float(v), 4) for v in (1 - t) * a + t * b]
