"""Motion sources for the animation stage, all returning a `MotionSequence`.

- `head_pose_sweep`: exact yaw, then pitch, then roll per frame (default 354 frames, like the paper's set).
- `expression_set`: blinks and mouth opening through the eye/lip retargeting MLPs (default 250 frames).
- `motion_from_video`: a driving video through the (driving) motion extractor; aligned videos need no
  detector, others are cropped with a pluggable ONNX face detector.
- `load_liveportrait_pkl`: upstream `.pkl` templates, read with a restricted unpickler.
- `save_template` / `load_template`: our format, `.npz` (no pickle) or `.safetensors`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from generator.liveportrait.camera import rotation_matrix
from generator.liveportrait.template import MotionSequence
from generator.safe_pickle import UnsafePickleError, safe_pickle_load

__all__ = ["MotionSequence", "head_pose_sweep", "expression_set", "motion_from_video", "load_liveportrait_pkl",
           "save_template", "load_template", "OnnxFaceDetector", "load_motion", "UnsafePickleError"]


# ---------------------------------------------------------------- procedural programs
def _swing(n: int, amplitude: float) -> np.ndarray:
    """0 -> +A -> 0 -> -A -> 0 over n frames; the extremes are hit exactly, cosine easing between them."""
    keys = np.array([0.0, amplitude, 0.0, -amplitude, 0.0])
    pos = np.round(np.linspace(0, n - 1, 5)).astype(int)
    i = np.arange(n)
    seg = np.clip(np.searchsorted(pos, i, side="right") - 1, 0, 3)
    span = np.maximum(pos[seg + 1] - pos[seg], 1)
    eased = 0.5 - 0.5 * np.cos(np.pi * np.clip((i - pos[seg]) / span, 0, 1))
    return keys[seg] + (keys[seg + 1] - keys[seg]) * eased


def head_pose_sweep(num_frames: int = 354, yaw: float = 45.0, pitch: float = 25.0, roll: float = 25.0,
                    fps: float = 30.0) -> MotionSequence:
    """Yaw sweep +-yaw, then pitch, then roll, one smooth swing each (extremes reached); exact per frame.

    Applied as absolute rotations (not relative to the source), so the per-frame pose written beside the video
    is the pose the head was given.
    """
    if num_frames < 3:
        raise ValueError("a head-pose sweep needs at least 3 frames")
    sizes = [num_frames // 3 + (1 if i < num_frames % 3 else 0) for i in range(3)]
    angles = np.zeros((3, num_frames), dtype=np.float64)  # yaw, pitch, roll
    start = 0
    for axis, (n, amp) in enumerate(zip(sizes, (yaw, pitch, roll))):
        angles[axis, start:start + n] = _swing(n, amp)
        start += n
    y, p, r = angles
    R = rotation_matrix(p, y, r).numpy()
    return MotionSequence(R=R, fps=fps, relative=False, name="head_pose",
                          extra={"yaw": y.astype(np.float32), "pitch": p.astype(np.float32),
                                 "roll": r.astype(np.float32)})


def _pulse(n: int, low: float, high: float, start_high: bool = True) -> np.ndarray:
    """Smooth high -> low -> high (or the reverse) over n frames."""
    s = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / max(n - 1, 1))  # 0 -> 1 -> 0
    return high - (high - low) * s if start_high else low + (high - low) * s


def expression_set(num_frames: int = 250, eye_open: float = 0.35, lip_open: float = 0.6,
                   fps: float = 30.0) -> MotionSequence:
    """Blinks, then mouth openings, then both together, driven through R_eye and R_lip.

    Ratios follow upstream's landmark definitions: eye ~0.35 open, 0 closed; lip 0 closed, ~0.6 wide open.
    """
    if num_frames < 10:
        raise ValueError("an expression set needs at least 10 frames")
    eye = np.full(num_frames, eye_open)
    lip = np.zeros(num_frames)
    third = num_frames // 3
    blink = max(third // 4, 3)
    for k in range(4):  # four blinks
        a = k * (third // 4)
        eye[a:a + blink] = _pulse(len(eye[a:a + blink]), 0.0, eye_open)
    mouth = max(third // 3, 3)
    for k in range(3):  # three mouth openings of growing width
        a = third + k * ((third) // 3)
        seg = lip[a:a + mouth]
        lip[a:a + mouth] = _pulse(len(seg), 0.0, lip_open * (k + 1) / 3, start_high=False)
    tail = slice(2 * third, num_frames)  # combined: slow mouth opening with a blink in the middle
    n = num_frames - 2 * third
    lip[tail] = _pulse(n, 0.0, lip_open, start_high=False)
    mid = 2 * third + n // 2 - blink // 2
    eye[mid:mid + blink] = _pulse(len(eye[mid:mid + blink]), 0.0, eye_open)
    return MotionSequence(eye_ratio=eye[:, None], lip_ratio=lip[:, None], fps=fps, relative=False,
                          name="expression")


# ---------------------------------------------------------------- upstream .pkl templates (restricted unpickler)
def load_liveportrait_pkl(path: str | os.PathLike) -> MotionSequence:
    """Upstream motion template: {'n_frames', 'output_fps', 'motion': [{'R', 'exp', 'scale', 't', ...}], 'c_eyes_lst'...}."""
    path = Path(path)
    data = safe_pickle_load(path.read_bytes(), str(path))
    if not isinstance(data, dict) or "motion" not in data:
        raise ValueError(f"{path} is not a LivePortrait motion template (no 'motion' list)")
    frames = data["motion"]
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path}: 'motion' must be a non-empty list of per-frame dicts")

    def stack(key: str, shape: tuple) -> np.ndarray | None:
        if not all(isinstance(f, dict) and key in f for f in frames):
            return None
        return np.stack([np.asarray(f[key], np.float32).reshape(shape) for f in frames])

    R = stack("R", (3, 3))
    exp = np.stack([np.asarray(f["exp"], np.float32).reshape(-1, 3) for f in frames]) if "exp" in frames[0] else None
    fps = float(data.get("output_fps", 25))
    return MotionSequence(R=R, exp=exp, scale=stack("scale", (1,)), t=stack("t", (3,)), fps=fps, relative=True,
                          name=path.stem)


# ---------------------------------------------------------------- our template format
def save_template(motion: MotionSequence, path: str | os.PathLike) -> Path:
    """`.npz` (loaded without pickle) or `.safetensors`; metadata (fps, relative, name) as JSON."""
    path = Path(path)
    arrays = {n: np.ascontiguousarray(getattr(motion, n), np.float32) for n in MotionSequence.FIELDS
              if getattr(motion, n) is not None}
    meta = {"fps": motion.fps, "relative": motion.relative, "name": motion.name, "format": "thermvision-motion/1"}
    tmp = path.with_name(path.name + ".partial")
    if path.suffix == ".npz":
        with open(tmp, "wb") as fh:
            np.savez(fh, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(tmp), metadata={"thermvision_motion": json.dumps(meta)})
    else:
        raise ValueError(f"{path}: motion templates are saved as .npz or .safetensors")
    os.replace(tmp, path)
    return path


def load_template(path: str | os.PathLike) -> MotionSequence:
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode()) if "__meta__" in arrays else {}
    elif path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
        with safe_open(str(path), "np") as fh:
            meta = json.loads((fh.metadata() or {}).get("thermvision_motion", "{}"))
    else:
        raise ValueError(f"{path}: not a motion template (.npz, .safetensors or LivePortrait .pkl)")
    unknown = set(arrays) - set(MotionSequence.FIELDS)
    if unknown:
        raise ValueError(f"{path}: unknown motion fields {sorted(unknown)}; expected some of {MotionSequence.FIELDS}")
    return MotionSequence(**arrays, fps=float(meta.get("fps", 25.0)), relative=bool(meta.get("relative", True)),
                          name=str(meta.get("name", path.stem)))


def load_motion(path: str | os.PathLike) -> MotionSequence:
    """Any template file by suffix."""
    return load_liveportrait_pkl(path) if Path(path).suffix == ".pkl" else load_template(path)


# ---------------------------------------------------------------- driving videos
class OnnxFaceDetector:
    """Any ONNX face detector with the contract: input (1, 3, H, W) float RGB in [0, 1]; first output
    (N, 5) or (1, N, 5) boxes [x1, y1, x2, y2, score] in input pixels (or (N, 4) without scores).

    Fixed input sizes are read from the model; frames are resized to them and boxes scaled back.
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, min_score: float = 0.3):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"face detector {self.path} does not exist")
        self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4:
            raise ValueError(f"{self.path}: detector input must be (1, 3, H, W), got {shape}")
        self.size = (shape[2], shape[3]) if all(isinstance(s, int) for s in shape[2:]) else None
        self.min_score = min_score

    def __call__(self, image: np.ndarray) -> tuple[float, float, float, float] | None:
        """Largest confident face box in `image` pixels, or None."""
        import cv2

        h, w = image.shape[:2]
        x = image if self.size is None else cv2.resize(image, (self.size[1], self.size[0]))
        blob = x.astype(np.float32).transpose(2, 0, 1)[None] / 255
        boxes = np.asarray(self.session.run(None, {self.input_name: blob})[0], dtype=np.float64)
        boxes = boxes.reshape(-1, boxes.shape[-1])
        if boxes.shape[-1] not in (4, 5):
            raise ValueError(f"{self.path}: detector output must be (N, 4|5) boxes, got {boxes.shape}")
        if boxes.shape[-1] == 5:
            boxes = boxes[boxes[:, 4] >= self.min_score]
        if not len(boxes):
            return None
        if self.size is not None:
            boxes[:, [0, 2]] *= w / self.size[1]
            boxes[:, [1, 3]] *= h / self.size[0]
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return tuple(float(v) for v in boxes[int(np.argmax(areas)), :4])


def motion_from_video(path: str | os.PathLike, pipeline, detector=None, batch_size: int = 32,
                      max_frames: int | None = None, crop_scale: float = 1.6) -> MotionSequence:
    """Run the driving motion extractor over a video's frames (in batches) -> relative MotionSequence.

    An aligned (square, face-filling) video is just resized; otherwise `detector(frame) -> box` finds the face
    on frame 0 (re-detected where it fails) and one box averaged over the video crops every frame, as upstream.
    """
    import torch
    from tqdm.auto import tqdm

    from generator.liveportrait.crop import crop_from_box, warp_crop
    from generator.liveportrait.pipeline import as_rgb, to_input
    from thermvision_db.video import iter_frames, probe

    info = probe(path)
    if detector is None and info.width != info.height:
        raise ValueError(f"{path} is {info.width}x{info.height}: not square, so not an aligned face video; "
                         "pass a face detector (--detector model.onnx) to crop it")
    frames = []
    for i, frame in enumerate(iter_frames(path)):
        if max_frames is not None and i >= max_frames:
            break
        frames.append(frame)
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    if detector is not None:
        boxes = [b for b in (detector(f) for f in frames[:: max(1, len(frames) // 16)]) if b is not None]
        if not boxes:
            raise ValueError(f"{path}: the face detector found no face")
        crop = crop_from_box(np.mean(boxes, axis=0), frames[0].shape[:2], crop_size=pipeline.cfg.input_size,
                             scale=crop_scale, vy_ratio=-0.1)
        frames = [warp_crop(f, crop) for f in frames]
    extractor = pipeline.nets.driving_extractor
    size, chans = pipeline.cfg.input_size, extractor.cfg.image_channel
    out: dict[str, list] = {k: [] for k in ("pitch", "yaw", "roll", "exp", "scale", "t")}
    with torch.no_grad():
        for start in tqdm(range(0, len(frames), batch_size), desc="driving motion", disable=not pipeline.progress):
            x = to_input(np.stack([as_rgb(f) for f in frames[start:start + batch_size]]), size, chans, pipeline.device)
            with pipeline._autocast():
                kp = extractor.keypoint_info(x)
            for k in out:
                out[k].append(kp[k].float().cpu())
    cat = {k: torch.cat(v) for k, v in out.items()}
    R = rotation_matrix(cat["pitch"], cat["yaw"], cat["roll"]).numpy()
    return MotionSequence(R=R, exp=cat["exp"].numpy(), scale=cat["scale"].numpy(), t=cat["t"].numpy(),
                          fps=info.fps or 25.0, relative=True, name=Path(path).stem)
