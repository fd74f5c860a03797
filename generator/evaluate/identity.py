"""Identity consistency and distinctness with a pluggable ONNX face-embedding model and the masked-face control."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from generator.annotate.onnx_models import ModelIOError
from generator.evaluate.frames import EvaluationError, VideoFrames

CROP_FACTOR = 1.2  # face crop around the box, as the audit used
FRAMES_PER_TEMPLATE = 16

# ---------------------------------------------------------------------------------------------- identity
class EmbeddingModelError(ModelIOError, EvaluationError):
    """The embedding model's output is not one finite vector per image (a feature map, a batch of the wrong size)."""


class OnnxEmbedder:
    """A face-embedding ONNX model: NCHW float input (1 or 3 channels), one vector out per image."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not Path(path).is_file():
            raise EvaluationError(f"embedding model {path} does not exist")
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise EvaluationError(f"cannot load the ONNX embedding model {path}: {err}") from err
        spec = self.session.get_inputs()[0]
        if len(spec.shape) != 4:
            raise EvaluationError(f"{path}: input {spec.name} has shape {spec.shape}; expected N x C x H x W")
        self.input_name = spec.name
        _, channels, height, width = spec.shape
        self.channels = channels if isinstance(channels, int) else 3
        self.size = (width if isinstance(width, int) else 112, height if isinstance(height, int) else 112)

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings of gray uint8 crops, pixels scaled to [-1, 1] as ArcFace models expect."""
        batch = np.stack([np.asarray(Image.fromarray(c).resize(self.size, Image.BILINEAR), dtype=np.float32) for c in crops])
        batch = (batch / 127.5 - 1.0)[:, None].repeat(self.channels, axis=1)
        vectors = np.concatenate([self._one_vector(batch[i:i + 1]) for i in range(len(batch))])
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


    def _one_vector(self, image: np.ndarray) -> np.ndarray:
        """Run one image; the output must be (1, D) or (1, D, 1, 1) (a pooled vector), finite and not all zeros."""
        out = np.asarray(self.session.run(None, {self.input_name: image})[0])
        name = self.session.get_outputs()[0].name
        squeezed = out.reshape(out.shape[:2]) if out.ndim == 4 and out.shape[2:] == (1, 1) else out
        if squeezed.ndim != 2 or squeezed.shape[0] != 1 or squeezed.shape[1] < 2:
            raise EmbeddingModelError(f"{self.path}: embedding model output {name!r}: expected one vector per image, "
                                      f"shape (1, D) for a batch of 1, got shape {out.shape}")
        if not np.isfinite(squeezed).all():
            raise EmbeddingModelError(f"{self.path}: embedding model output {name!r} holds NaN or inf")
        if not squeezed.any():
            raise EmbeddingModelError(f"{self.path}: embedding model output {name!r} is all zeros (no direction to "
                                      "compare)")
        return squeezed.astype(np.float64)


def face_crop(frame: np.ndarray, box: list[float], mask_face: bool = False) -> np.ndarray:
    """The box enlarged by CROP_FACTOR; with `mask_face`, the box itself is first set to the frame median."""
    image = frame.copy()
    x, y, w, h = box
    if mask_face:
        image[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = np.median(frame)
    cx, cy, half = x + w / 2, y + h / 2, CROP_FACTOR * max(w, h) / 2
    height, width = frame.shape
    left, top = max(0, int(cx - half)), max(0, int(cy - half))
    right, bottom = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
    return image[top:bottom, left:right]


def video_template(video: VideoFrames, embed: OnnxEmbedder, mask_face: bool = False) -> np.ndarray | None:
    """Mean embedding of up to FRAMES_PER_TEMPLATE evenly spaced frames with a box; None without any box."""
    boxed = [i for i, b in enumerate(video.boxes) if b]
    if not boxed:
        return None
    picks = [boxed[int(j)] for j in np.linspace(0, len(boxed) - 1, min(FRAMES_PER_TEMPLATE, len(boxed)))]
    vectors = embed([face_crop(video.frames[i], video.boxes[i][0], mask_face) for i in picks])
    mean = vectors.mean(axis=0)
    return mean / max(np.linalg.norm(mean), 1e-12)


def identity_scores(videos: list[VideoFrames], embed: OnnxEmbedder, mask_face: bool = False) -> dict:
    """Within-identity (across an identity's videos) and between-identity template cosines, Rank-1, distinctness.

    Rank-1: each video template's nearest other video template belongs to the same identity. An identity is
    distinct when its within-identity cosine exceeds its highest cosine to any other identity.
    """
    kept = [(v, t) for v in videos if (t := video_template(v, embed, mask_face)) is not None]
    if len(kept) < 2:
        raise EvaluationError("identity scores need at least two videos with boxes")
    ids = [v.identity for v, _ in kept]
    templates = np.stack([t for _, t in kept])
    cosine = templates @ templates.T
    same = np.equal.outer(ids, ids)
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    within = cosine[same & off_diagonal]
    between = cosine[~same]
    masked_self = np.where(off_diagonal, cosine, -np.inf)
    rank1 = float(np.mean([ids[int(np.argmax(masked_self[i]))] == ids[i] for i in range(len(ids))]))
    per_identity = []
    for identity in sorted(set(ids)):
        rows = np.array([i == identity for i in ids])
        own = cosine[np.outer(rows, rows) & off_diagonal]
        others = cosine[np.outer(rows, ~rows)]
        within_mean = float(own.mean()) if own.size else float("nan")
        max_other = float(others.max()) if others.size else float("nan")
        per_identity.append({"identity": identity, "within": within_mean, "max_between": max_other,
                             "margin": within_mean - max_other, "distinct": bool(within_mean - max_other > 1e-6)})
    table = pd.DataFrame(per_identity)
    return {
        "within_mean": float(within.mean()) if within.size else float("nan"),
        "between_mean": float(between.mean()) if between.size else float("nan"),
        "between_max": float(between.max()) if between.size else float("nan"),
        "rank1": rank1,
        "distinct": bool(table["distinct"].all()),
        "per_identity": table,
    }
