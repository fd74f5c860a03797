"""The thermal models SF-TL54 publishes, run with dlib: its HOG+SVM face detector (`.svm`, a dlib
`simple_object_detector`) and its 54-point shape predictor (`.dat`, a dlib `shape_predictor`).

The detector follows the authors' published usage (`dlib_face_detector.py`): the frame is resized to width 300
(height `int(h * 300 / w)`, OpenCV INTER_AREA, as `imutils.resize` does) and searched with one upsampling. Boxes
are mapped back to the frame exactly: a dlib rectangle (l, t, r, b) covers pixels l..r, i.e. the continuous span
[l, r + 1), and a resize scales continuous coordinates by the size ratio per axis. Shape-predictor points are
pixel indices (dlib `point`), i.e. centres, so + 0.5 gives the COCO convention (pixel i covers [i, i + 1)).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from generator.annotate.onnx_models import Detection
from thermvision_db.errors import InputError, MissingExtraError, MissingFileError, ThermVisionError

DLIB_EXTRA = 'dlib models need the dlib extra: pip install "thermvision-db[dlib]" (the dlib-bin wheel)'
AUTHORS_WIDTH, AUTHORS_UPSAMPLE = 300, 1  # dlib_face_detector.py: imutils.resize(width=300), detector(image, 1)
MAX_MODEL_BYTES = 1 << 30  # dlib's own 68-point predictor is 100 MB; a bigger file is not a face model
NUM_PARTS = 54


class DlibModelError(ThermVisionError, ValueError):
    """A file that is not the dlib model it should be; the message names the file and the cause."""


class DlibUnavailable(MissingExtraError):
    """dlib is not installed: the message names the extra."""


def import_dlib():
    try:
        import dlib
    except ImportError:
        raise DlibUnavailable(DLIB_EXTRA) from None
    return dlib


def _check_file(path: str | os.PathLike, what: str, suffix: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist")
    if path.suffix.lower() != suffix:
        raise DlibModelError(f"{path}: a dlib {what} is a {suffix} file, got {path.suffix or 'no suffix'}")
    size = path.stat().st_size
    if size == 0 or size > MAX_MODEL_BYTES:
        raise DlibModelError(f"{path}: {size} bytes is not a dlib {what} (empty, or over {MAX_MODEL_BYTES} bytes)")
    return path


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def gray_or_rgb(image: np.ndarray) -> np.ndarray:
    """dlib takes (H, W) gray or (H, W, 3) RGB uint8; (H, W, 1) is squeezed and an alpha channel dropped."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InputError(f"dlib models take uint8 images, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise InputError(f"an image is (H, W) or (H, W, 1|3|4), got shape {img.shape}")
    return np.ascontiguousarray(img)


def resize_to_width(image: np.ndarray, width: int | None) -> tuple[np.ndarray, float, float]:
    """`imutils.resize(image, width=width)` (INTER_AREA, height int(h * width / w)) -> image, sx, sy (new / old)."""
    h, w = image.shape[:2]
    if width is None or width == w:
        return image, 1.0, 1.0
    new_h = max(1, int(h * (width / float(w))))
    return cv2.resize(image, (int(width), new_h), interpolation=cv2.INTER_AREA), width / w, new_h / h


def rect_to_box(rect, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
    """dlib rectangle (inclusive pixel indices) in an image scaled by (sx, sy) -> COCO box in the frame."""
    l, t, r, b = rect.left(), rect.top(), rect.right(), rect.bottom()
    return np.array([l / sx, t / sy, (r + 1 - l) / sx, (b + 1 - t) / sy], np.float64)


def box_to_rect(dlib, box_xywh, sx: float = 1.0, sy: float = 1.0):
    """COCO box in the frame -> the dlib rectangle of the pixels it covers in the image scaled by (sx, sy)."""
    x, y, w, h = (float(v) for v in np.asarray(box_xywh, np.float64).reshape(4))
    if not (w > 0 and h > 0 and all(math.isfinite(v) for v in (x, y, w, h))):
        raise InputError(f"a face box is COCO [x, y, w, h] with w, h > 0, got {[x, y, w, h]}")
    l, t = math.floor(x * sx + 0.5), math.floor(y * sy + 0.5)
    r, b = math.floor((x + w) * sx + 0.5) - 1, math.floor((y + h) * sy + 0.5) - 1
    return dlib.rectangle(l, t, max(l, r), max(t, b))


def _sha256(path: Path) -> str:
    from generator.weights import sha256_file

    return sha256_file(path)


class DlibFaceDetector:
    """SF-TL54's `dlib_face_detector.svm` (any dlib HOG `simple_object_detector`) -> faces sorted by score.

    `resize_width=300, upsample=1` are the authors' settings; `resize_width=None` searches the frame as it is.
    Score = the SVM's detection score (dlib's `run`); faces below `adjust_threshold` (dlib's 0) are dropped.
    """

    kind = "dlib simple_object_detector"

    def __init__(self, path: str | os.PathLike, *, resize_width: int | None = AUTHORS_WIDTH,
                 upsample: int = AUTHORS_UPSAMPLE, adjust_threshold: float = 0.0):
        self.path = _check_file(path, "face detector", ".svm")
        dlib = self._dlib = import_dlib()
        try:
            self.model = dlib.fhog_object_detector(str(self.path))
        except (RuntimeError, MemoryError) as err:
            raise DlibModelError(f"{self.path}: not a dlib simple_object_detector (.svm) file, or truncated "
                                 f"(dlib: {_first_line(err)})") from None
        if resize_width is not None and int(resize_width) < 1 or int(upsample) < 0:
            raise InputError(f"resize_width must be >= 1 or None and upsample >= 0, got {resize_width}, {upsample}")
        self.resize_width = None if resize_width is None else int(resize_width)
        self.upsample, self.adjust_threshold = int(upsample), float(adjust_threshold)
        self.sha256 = _sha256(self.path)

    @property
    def settings(self) -> dict:
        return {"resize_width": self.resize_width, "upsample": self.upsample, "interpolation": "INTER_AREA",
                "adjust_threshold": self.adjust_threshold}

    def record(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "kind": self.kind, "settings": self.settings}

    def __call__(self, image: np.ndarray) -> list[Detection]:
        img = gray_or_rgb(image)
        h, w = img.shape[:2]
        small, sx, sy = resize_to_width(img, self.resize_width)
        rects, scores, _ = self.model.run(small, self.upsample, self.adjust_threshold)
        faces = []
        for rect, score in zip(rects, scores):
            x0, y0, bw, bh = rect_to_box(rect, sx, sy)
            x0, x1 = np.clip([x0, x0 + bw], 0, w)
            y0, y1 = np.clip([y0, y0 + bh], 0, h)
            if x1 > x0 and y1 > y0:
                faces.append(Detection(np.array([x0, y0, x1 - x0, y1 - y0], np.float32), float(score)))
        return sorted(faces, key=lambda f: -f.score)


class DlibLandmarker54:
    """SF-TL54's `dlib_landmarks_predictor.dat` (a dlib `shape_predictor` with 54 parts) -> (54, 2) pixels (x, y)
    in SF-TL54 order (`part_order`, see `generator.annotate.sftl54_order`).

    The predictor runs on the frame at its own size (`resize_width=None`) inside the dlib rectangle of the pixels
    the box covers; with `resize_width` the frame and box are scaled first and the points mapped back.
    """

    kind = "dlib shape_predictor"

    def __init__(self, path: str | os.PathLike, *, resize_width: int | None = None, part_order: str = "padded"):
        from generator.annotate.sftl54_order import PART_ORDERS

        self.path = _check_file(path, "54-point landmark model", ".dat")
        dlib = self._dlib = import_dlib()
        try:
            self.model = dlib.shape_predictor(str(self.path))
            parts = self.model(np.zeros((8, 8), np.uint8), dlib.rectangle(0, 0, 7, 7)).num_parts
        except (RuntimeError, MemoryError) as err:
            raise DlibModelError(f"{self.path}: not a dlib shape_predictor (.dat) file, or truncated "
                                 f"(dlib: {_first_line(err)})") from None
        if parts != NUM_PARTS:
            known = {68: " (the iBUG 68-point layout, e.g. dlib's shape_predictor_68_face_landmarks.dat)",
                     5: " (dlib's 5-point model)"}.get(parts, "")
            raise DlibModelError(f"{self.path}: a shape predictor with {parts} parts{known}; the SF-TL54 thermal "
                                 f"landmark model has {NUM_PARTS}")
        if part_order not in PART_ORDERS:
            raise InputError(f"part_order must be one of {', '.join(PART_ORDERS)}, got {part_order!r}")
        self.part_order, self._to_sftl54 = part_order, PART_ORDERS[part_order]
        self.resize_width = None if resize_width is None else int(resize_width)
        self.sha256 = _sha256(self.path)

    @property
    def settings(self) -> dict:
        return {"resize_width": self.resize_width, "part_order": self.part_order}

    def record(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "kind": self.kind, "settings": self.settings}

    def __call__(self, image: np.ndarray, box_xywh) -> np.ndarray:
        img = gray_or_rgb(image)
        small, sx, sy = resize_to_width(img, self.resize_width)
        shape = self.model(small, box_to_rect(self._dlib, box_xywh, sx, sy))
        parts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        points = np.empty_like(parts)
        points[self._to_sftl54] = parts  # predictor part k is SF-TL54 point _to_sftl54[k]
        return ((points + 0.5) / [sx, sy]).astype(np.float32)


def dlib_defaults(role: str, path) -> dict:
    """{kind, settings} of the dlib model a corpus run loads for `role` from `path` ({} for other files)."""
    suffix = Path(path).suffix.lower()
    if role == "label_detector" and suffix == ".svm":
        return {"kind": DlibFaceDetector.kind, "settings": {"resize_width": AUTHORS_WIDTH, "upsample": AUTHORS_UPSAMPLE,
                                                            "interpolation": "INTER_AREA", "adjust_threshold": 0.0}}
    if role == "label_landmarker" and suffix == ".dat":
        return {"kind": DlibLandmarker54.kind, "settings": {"resize_width": None, "part_order": "padded"}}
    return {}
