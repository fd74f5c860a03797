"""One way to open a label model from a file, whatever wrote it: `.onnx` (onnxruntime) or dlib's `.svm` / `.dat`.

`generate --label-detector/--label-landmarker`, `annotate` and the Python API all pass through here, so every
entry point accepts the same files and refuses the same ones with the same message.
"""

from __future__ import annotations

import os
from pathlib import Path

from generator.annotate.dlib_models import DlibFaceDetector, DlibLandmarker54, DlibModelError

DETECTOR_SUFFIXES = {".onnx": "YOLOv5 / YOLO5Face ONNX", ".svm": "dlib simple_object_detector (SF-TL54's)"}
LANDMARKER_SUFFIXES = {".onnx": "SF-TL54-style ONNX", ".dat": "dlib 54-part shape_predictor (SF-TL54's)"}


def _suffix(path, table: dict, what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in table:
        kinds = "; ".join(f"{s}: {k}" for s, k in table.items())
        raise DlibModelError(f"{path}: a {what} is {kinds}; got {suffix or 'no suffix'}")
    return suffix


def load_detector(path: str | os.PathLike, **options):
    """A face detector `image -> list[Detection]` from an .onnx or .svm file (options go to its class)."""
    if _suffix(path, DETECTOR_SUFFIXES, "face detector") == ".svm":
        return DlibFaceDetector(path, **options)
    from generator.annotate.onnx_models import YoloFaceDetector

    return YoloFaceDetector(path, **options)


def load_landmarker(path: str | os.PathLike, **options):
    """A 54-point landmarker `(image, box_xywh) -> (54, 2)` from an .onnx or .dat file."""
    if _suffix(path, LANDMARKER_SUFFIXES, "54-point landmark model") == ".dat":
        return DlibLandmarker54(path, **options)
    from generator.annotate.onnx_models import Landmarker54

    return Landmarker54(path, **options)


def model_record(model) -> dict:
    """What labelled the frames: path, sha256, kind and settings (dlib models), or path and sha256 (ONNX)."""
    if hasattr(model, "record"):
        return model.record()
    from generator.weights import sha256_file

    return {"path": str(model.path), "sha256": sha256_file(model.path), "kind": f"onnx {type(model).__name__}"}
