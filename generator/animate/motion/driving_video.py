"""Motion from a driving video: the driving motion extractor over its frames, cropped by an optional ONNX face detector."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from generator.animate.liveportrait.camera import rotation_matrix
from generator.animate.liveportrait.template import MotionSequence
from thermvision_db.errors import InputError, MissingFileError


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
            raise MissingFileError(f"face detector {self.path} does not exist")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own exception types: name the file and keep the cause
            raise InputError(f"{self.path}: cannot be loaded as an ONNX face detector: {err}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4:
            raise InputError(f"{self.path}: detector input must be (1, 3, H, W), got {shape}")
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
            raise InputError(f"{self.path}: detector output must be (N, 4|5) boxes, got {boxes.shape}")
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
    from generator.animate.liveportrait.crop import crop_from_box, warp_crop
    from thermvision_db.io.decode import iter_frames, probe

    info = probe(path)
    if detector is None and info.width != info.height:
        raise InputError(f"{path} is {info.width}x{info.height}: not square, so not an aligned face video; "
                         "pass a face detector (--detector model.onnx) to crop it")
    frames = []
    for i, frame in enumerate(iter_frames(path)):
        if max_frames is not None and i >= max_frames:
            break
        frames.append(frame)
    if not frames:
        raise InputError(f"no frames decoded from {path}")
    if detector is not None:
        boxes = [b for b in (detector(f) for f in frames[:: max(1, len(frames) // 16)]) if b is not None]
        if not boxes:
            raise InputError(f"{path}: the face detector found no face")
        crop = crop_from_box(np.mean(boxes, axis=0), frames[0].shape[:2], crop_size=pipeline.cfg.input_size,
                             scale=crop_scale, vy_ratio=-0.1)
        frames = [warp_crop(f, crop) for f in frames]
    arrays = _extract_motion(frames, pipeline, batch_size)
    return MotionSequence(**arrays, fps=info.fps or 25.0, relative=True, name=Path(path).stem)


def motion_from_image(image, pipeline, name: str = "image") -> MotionSequence:
    """One driving image (an aligned face, (H, W[, C]) uint8 or a path) -> a 1-frame `single_image` motion.

    Animated as upstream's image-driven mode: source expression + driving expression - the neutral lip array
    (`AnimationOptions.lip_array`), driving pose relative to itself (so the source keeps its pose).
    """
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image

        name = Path(image).stem
        image = np.asarray(Image.open(image))
    arrays = _extract_motion([np.asarray(image)], pipeline, 1)
    return MotionSequence(**arrays, fps=25.0, relative=True, name=name, single_image=True)


def _extract_motion(frames: list[np.ndarray], pipeline, batch_size: int) -> dict[str, np.ndarray]:
    """The driving motion extractor over frames (cv2's default resize, as upstream) -> R, exp, scale, t."""
    import torch
    from tqdm.auto import tqdm

    from generator.animate.liveportrait.pipeline import as_rgb, to_input

    extractor = pipeline.nets.driving_extractor
    size, chans = pipeline.cfg.input_size, extractor.cfg.image_channel
    out: dict[str, list] = {k: [] for k in ("pitch", "yaw", "roll", "exp", "scale", "t")}
    with torch.no_grad():
        for start in tqdm(range(0, len(frames), batch_size), desc="driving motion",
                          disable=not pipeline.progress or len(frames) == 1):
            x = to_input(np.stack([as_rgb(f) for f in frames[start:start + batch_size]]), size, chans, pipeline.device)
            with pipeline._autocast():
                raw = extractor(x)
            kp = extractor.refine(raw)
            for k, values in out.items():
                values.append(kp[k].float().cpu())
    cat = {k: torch.cat(v) for k, v in out.items()}
    R = rotation_matrix(cat["pitch"], cat["yaw"], cat["roll"]).numpy()
    return {"R": R, "exp": cat["exp"].numpy(), "scale": cat["scale"].numpy(), "t": cat["t"].numpy()}
