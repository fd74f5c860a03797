"""The annotation models behind one small contract each: a YOLOv5 / YOLO5Face face detector, a 54-point SF-TL54
style landmark model and LivePortrait's 203-point landmark model, all run with onnxruntime.

Every model is checked when it is loaded (inputs, channels, number and shapes of outputs), so a wrong file fails
at once with a `ModelIOError` naming the file, the tensor, what was expected and what was found, instead of
producing silently wrong labels later. Coordinates are continuous pixels in the COCO convention: pixel i covers
[i, i + 1), so its centre is at i + 0.5; normalised model outputs are fractions of the crop's extent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from thermvision_db.errors import InputError, MissingFileError, ThermVisionError


class ModelIOError(ThermVisionError, ValueError):
    """An ONNX model's inputs or outputs do not match the contract; the message names file, tensor, expected, got."""


@dataclass
class Detection:
    """One face found by a detector, in the image's pixels."""

    box_xywh: np.ndarray  # (4,) float32, COCO [x, y, w, h]
    score: float
    points5: np.ndarray | None = None  # (5, 2) YOLO5Face eyes, nose, mouth corners (x, y)
    landmarks: np.ndarray | None = None  # (54, 2) attached by `detect_frames` when a landmarker is given


# --------------------------------------------------------------------------------------------- loading, checks


def _dims(shape) -> list[int | None]:
    """onnxruntime shapes hold ints, names of symbolic dims, or None; keep only the fixed ones."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in _dims(shape)) + ")"


class _OnnxModel:
    """An onnxruntime session plus the checks every contract shares."""

    what = "model"

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"{self.what} model {self.path} does not exist")
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ModelIOError(f"{self.path}: cannot be loaded as an ONNX {self.what} model: {e}") from None
        self.inputs, self.outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(self.inputs) != 1:
            self.fail("model", f"1 input ({self.input_contract})", f"{len(self.inputs)} inputs")
        self.input = self.inputs[0]
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
        if self.input.type not in types:
            self.fail(f"input {self.input.name!r}", "float or float16", self.input.type)
        self.input_dtype = types[self.input.type]

    input_contract = ""

    def fail(self, tensor: str, expected: str, got: str):
        raise ModelIOError(f"{self.path}: {self.what} {tensor}: expected {expected}, got {got}")

    def check_image_input(self, channels: int, default_size: tuple[int, int]) -> tuple[int, int]:
        """(1, C, H, W) with C = channels; returns (H, W), falling back to default_size for symbolic dims."""
        shape = _dims(self.input.shape)
        name = f"input {self.input.name!r}"
        if len(shape) != 4:
            self.fail(name, f"rank 4 {self.input_contract}", f"shape {_fmt(self.input.shape)}")
        if shape[1] is not None and shape[1] != channels:
            self.fail(name, f"{channels} channel(s) {self.input_contract}",
                      f"{shape[1]} in shape {_fmt(self.input.shape)}")
        return (shape[2] or default_size[0], shape[3] or default_size[1])

    def check_square_crop_input(self, channels: int, default_side: int) -> int:
        """(1, C, S, S): a square face crop; returns S."""
        h, w = self.check_image_input(channels, (default_side, default_side))
        if h != w:
            self.fail(f"input {self.input.name!r}", f"a square crop (1, {channels}, S, S)", f"shape {_fmt(self.input.shape)}")
        return h

    def check_output_size(self, count: int, index: int, values: int, expected: str) -> None:
        """`count` outputs, output `index` holding `values` numbers where its shape is fixed."""
        if len(self.outputs) != count:
            self.fail("outputs", f"{count} output{'s' if count > 1 else ''} {expected}", f"{len(self.outputs)} outputs")
        shape = _dims(self.outputs[index].shape)
        if all(d is not None for d in shape) and int(np.prod(shape)) != values:
            self.fail(f"output {self.outputs[index].name!r}", f"{values} values {expected}",
                      f"shape {_fmt(self.outputs[index].shape)}")

    def run(self, blob: np.ndarray, index: int = 0) -> np.ndarray:
        out = self.session.run([self.outputs[index].name], {self.input.name: blob.astype(self.input_dtype)})[0]
        return np.asarray(out, dtype=np.float64)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1|3|4) uint8 -> (H, W, 3) uint8; grayscale is replicated (thermal stills are gray)."""
    from generator.animate.liveportrait.pipeline import as_rgb

    return as_rgb(image)


# ------------------------------------------------------------------------------------------------- detector


class YoloFaceDetector(_OnnxModel):
    """YOLOv5 / YOLO5Face ONNX export -> faces sorted by score.

    Contract: one input (1, 3, H, W) float RGB in [0, 1], the image letterboxed to H x W as YOLOv5 does (aspect
    kept, grey 114 padding split evenly); one output (1, N, 5 + nc) = [cx, cy, w, h, obj, class scores...] for
    YOLOv5, or (1, N, 16) = [cx, cy, w, h, obj, x1, y1, ..., x5, y5, cls] for YOLO5Face, in input pixels. Older
    exports that add rank-5 per-level grids as further outputs are accepted; only the first output is read.

    A last dimension of 16 is ambiguous (YOLO5Face, or YOLOv5 with 11 classes): `kind="auto"` reads it as
    YOLO5Face; pass kind="yolov5" for the other. Score = obj * cls (class `class_index` for YOLOv5). NMS is
    OpenCV's (cv2.dnn.NMSBoxes), so torchvision is not needed. Symbolic H, W use `input_size`.
    """

    what = "face detector"
    input_contract = "(1, 3, H, W) float RGB in [0, 1]"

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, conf: float = 0.3,
                 iou: float = 0.45, *, kind: str = "auto", input_size: tuple[int, int] = (640, 640),
                 class_index: int = 0, max_det: int = 300):
        super().__init__(path, providers)
        if kind not in ("auto", "yolov5", "yolo5face"):
            raise InputError(f"kind must be 'auto', 'yolov5' or 'yolo5face', got {kind!r}")
        self.input_size = self.check_image_input(3, input_size)
        first, extra = self.outputs[0], self.outputs[1:]
        if any(len(o.shape) != 5 for o in extra):
            shapes = ", ".join(_fmt(o.shape) for o in self.outputs)
            self.fail("outputs", "1 output (1, N, 5 + nc) (plus rank-5 grids only)", f"{len(self.outputs)}: {shapes}")
        shape = _dims(first.shape)
        if len(shape) != 3 or shape[-1] is None or shape[-1] < 6:
            self.fail(f"output {first.name!r}", "(1, N, 5 + nc) with nc >= 1, or (1, N, 16) for YOLO5Face",
                      f"shape {_fmt(first.shape)}")
        self.width = shape[-1]
        if kind == "yolo5face" and self.width != 16:
            self.fail(f"output {first.name!r}", "(1, N, 16) for YOLO5Face", f"shape {_fmt(first.shape)}")
        self.kind = kind if kind != "auto" else ("yolo5face" if self.width == 16 else "yolov5")
        if self.kind == "yolov5" and not 0 <= class_index < self.width - 5:
            raise InputError(f"{self.path}: class_index {class_index} but the model has {self.width - 5} classes")
        self.conf, self.iou, self.class_index, self.max_det = float(conf), float(iou), int(class_index), int(max_det)

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float, int, int]]:
        """YOLOv5's letterbox (no stride rounding): -> (H, W, 3) uint8 and (sx, sy, left, top) to map back."""
        h, w = image.shape[:2]
        H, W = self.input_size
        r = min(H / h, W / w)
        nw, nh = int(round(w * r)), int(round(h * r))
        if (nw, nh) != (w, h):
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        dw, dh = (W - nw) / 2, (H - nh) / 2
        top, bottom, left, right = round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
        return image, (nw / w, nh / h, left, top)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        img = _as_rgb(image)
        h, w = img.shape[:2]
        boxed, (sx, sy, left, top) = self.letterbox(img)
        pred = self.run(boxed.transpose(2, 0, 1)[None].astype(np.float32) / 255)
        if pred.shape[-1] != self.width:
            self.fail(f"output {self.outputs[0].name!r}", f"last dimension {self.width}", f"shape {pred.shape}")
        pred = pred.reshape(-1, self.width)
        cls = pred[:, 15] if self.kind == "yolo5face" else pred[:, 5 + self.class_index]
        scores = pred[:, 4] * cls
        keep = np.flatnonzero(scores > self.conf)
        if not len(keep):
            return []
        cx, cy, bw, bh = pred[keep, :4].T
        xywh = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], 1)
        chosen = cv2.dnn.NMSBoxes(xywh.tolist(), scores[keep].tolist(), self.conf, self.iou)
        chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)
        chosen = chosen[np.argsort(-scores[keep][chosen], kind="stable")][: self.max_det]
        faces = []
        for j in chosen:
            x1, y1, bw_, bh_ = xywh[j]
            x1, x2 = np.clip([(x1 - left) / sx, (x1 + bw_ - left) / sx], 0, w)
            y1, y2 = np.clip([(y1 - top) / sy, (y1 + bh_ - top) / sy], 0, h)
            points = None
            if self.kind == "yolo5face":
                p = pred[keep[j], 5:15].reshape(5, 2)
                points = np.stack([(p[:, 0] - left) / sx, (p[:, 1] - top) / sy], 1).astype(np.float32)
            faces.append(Detection(np.array([x1, y1, x2 - x1, y2 - y1], np.float32), float(scores[keep[j]]), points))
        return faces


# ----------------------------------------------------------------------------------------------- landmarkers


def square_crop(box_xywh, scale: float, vy_ratio: float = 0.0) -> tuple[float, float, float]:
    """Square crop around a COCO box: side = scale * max(w, h), centre shifted by vy_ratio * side -> left, top, side."""
    x, y, w, h = (float(v) for v in np.asarray(box_xywh, dtype=np.float64).reshape(4))
    if w <= 0 or h <= 0:
        raise InputError(f"face box must have a positive width and height, got {[x, y, w, h]}")
    side = max(w, h) * scale
    cx, cy = x + w / 2, y + h / 2 + vy_ratio * side
    return cx - side / 2, cy - side / 2, side


def cut_crop(image: np.ndarray, left: float, top: float, side: float, size: int) -> np.ndarray:
    """The square [left, left + side) x [top, top + side) resampled to size x size (zeros outside the image)."""
    k = size / side
    # crop edge coordinate = k * (image edge coordinate - left); cv2 works on pixel centres, hence the +-0.5
    M = np.array([[k, 0, k * (0.5 - left) - 0.5], [0, k, k * (0.5 - top) - 0.5]], dtype=np.float64)
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


class Landmarker54(_OnnxModel):
    """SF-TL54-style 54-point model (ThermVision's thermal landmark layout, order of labels.SFTL54_NAMES).

    Contract: input (1, 1, S, S) float grayscale in [0, 1] (S = 256 when symbolic), a square crop of side
    `crop_scale` (1.2) x the box's longer side centred on the box, so the whole face fits with a margin; one
    output of 108 numbers, (1, 108) or (1, 54, 2): 54 (y, x) pairs normalised to the crop, 0 at its top/left edge
    and 1 at its bottom/right edge.
    """

    what = "54-point landmark"
    input_contract = "(1, 1, 256, 256) float grayscale in [0, 1]"

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, *, crop_scale: float = 1.2):
        super().__init__(path, providers)
        self.size, self.crop_scale = self.check_square_crop_input(1, 256), float(crop_scale)
        self.check_output_size(1, 0, 108, "(1, 108) or (1, 54, 2)")

    def __call__(self, image: np.ndarray, box_xywh) -> np.ndarray:
        img = _as_rgb(image)
        left, top, side = square_crop(box_xywh, self.crop_scale)
        crop = cv2.cvtColor(cut_crop(img, left, top, side, self.size), cv2.COLOR_RGB2GRAY)
        out = self.run(crop[None, None].astype(np.float32) / 255)
        if out.size != 108:
            self.fail(f"output {self.outputs[0].name!r}", "108 values", f"shape {out.shape}")
        yx = out.reshape(54, 2)
        return np.stack([left + yx[:, 1] * side, top + yx[:, 0] * side], 1).astype(np.float32)


class Landmarker203(_OnnxModel):
    """LivePortrait's 203-point landmark.onnx.

    Contract: input (1, 3, 224, 224) float RGB in [0, 1], a square crop of side 1.5 x the box's longer side,
    centre moved up by 0.1 x side (upstream's crop_image(dsize=224, scale=1.5, vy_ratio=-0.1), applied to the box
    instead of the 106 insightface points); three outputs, the third (1, 406) = 203 (x, y) normalised to the crop
    (upstream multiplies by 224 to get crop pixels). Outputs 0 and 1 are undocumented upstream and unused.
    """

    what = "203-point landmark"
    input_contract = "(1, 3, 224, 224) float RGB in [0, 1]"

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, *, crop_scale: float = 1.5,
                 vy_ratio: float = -0.1):
        super().__init__(path, providers)
        self.size = self.check_square_crop_input(3, 224)
        self.crop_scale, self.vy_ratio = float(crop_scale), float(vy_ratio)
        self.check_output_size(3, 2, 406, "(the third output: (1, 406) = 203 (x, y))")

    def __call__(self, image: np.ndarray, box_xywh) -> np.ndarray:
        img = _as_rgb(image)
        left, top, side = square_crop(box_xywh, self.crop_scale, self.vy_ratio)
        crop = cut_crop(img, left, top, side, self.size)
        out = self.run(crop.transpose(2, 0, 1)[None].astype(np.float32) / 255, index=2)
        if out.size != 406:
            self.fail(f"output {self.outputs[2].name!r}", "406 values", f"shape {out.shape}")
        xy = out.reshape(203, 2)
        return np.stack([left + xy[:, 0] * side, top + xy[:, 1] * side], 1).astype(np.float32)

    @staticmethod
    def eye_lip_ratios(points203: np.ndarray) -> tuple[float, float, float]:
        """Upstream's retargeting inputs: eye_left |p6-p18|/|p0-p12|, eye_right |p30-p42|/|p24-p36|,
        lip |p90-p102|/|p48-p66| (opening over width; ~0.35 for an open eye, 0 for closed eyes and mouth)."""
        p = np.asarray(points203, dtype=np.float64).reshape(203, 2)

        def ratio(a: int, b: int, c: int, d: int) -> float:
            return float(np.linalg.norm(p[a] - p[b]) / (np.linalg.norm(p[c] - p[d]) + 1e-6))

        return ratio(6, 18, 0, 12), ratio(30, 42, 24, 36), ratio(90, 102, 48, 66)
