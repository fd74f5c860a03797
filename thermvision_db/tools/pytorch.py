"""PyTorch helpers: sample clips from video rows, and collate rows whose number of faces varies.

The default collate cannot batch a list of faces per frame (most frames have one box, some none, some two),
and cannot batch an undecoded video. `collate_faces` stacks the images and keeps boxes as a list of (n_i, 4) COCO
`xywh` tensors; `collate_faces(batch, target_format="torchvision")` gives what torchvision's detection models
take instead (`xyxy` boxes, a `labels` tensor per image, float images): see its docstring.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from thermvision_db.errors import InputError
from thermvision_db.io import decode as video_io

__all__ = ["ClipSampler", "clip_dataset", "collate_faces", "collate_clips", "image_to_tensor"]


def image_to_tensor(image) -> torch.Tensor:
    """PIL image, HWC array or CHW tensor -> (3, H, W) uint8 tensor."""
    if isinstance(image, torch.Tensor):
        tensor = image
        if tensor.ndim == 3 and tensor.shape[0] not in (1, 3):
            tensor = tensor.permute(2, 0, 1)
    else:
        array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if array.ndim == 2:
            array = array[..., None]
        tensor = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    return tensor.contiguous()


def _faces_to_tensors(faces) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.zeros((len(faces), 4), dtype=torch.float32)
    landmarks = torch.full((len(faces), 54, 2), float("nan"), dtype=torch.float32)
    for i, face in enumerate(faces):
        boxes[i] = torch.as_tensor(face["bbox"], dtype=torch.float32)
        if face.get("landmarks") is not None:
            landmarks[i] = torch.as_tensor(face["landmarks"], dtype=torch.float32)
    return boxes, landmarks


FACE_LABEL = 1  # torchvision detection models reserve class 0 for the background: faces are class 1 (num_classes=2)


def _torchvision_targets(batch: Sequence[dict]) -> tuple[list[torch.Tensor], list[dict]]:
    images, targets = [], []
    for row in batch:
        images.append(image_to_tensor(row["image"]).float().div_(255))  # (3, H, W) float in [0, 1]
        boxes, landmarks = _faces_to_tensors(row.get("faces") or [])
        xyxy = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)
        keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)  # torchvision refuses boxes of zero width or height
        labelled = ~torch.isnan(landmarks).any(dim=-1, keepdim=True)
        keypoints = torch.cat([torch.nan_to_num(landmarks), labelled.float()], dim=-1)  # (n, 54, 3): x, y, visible
        targets.append({"boxes": xyxy[keep], "labels": torch.full((int(keep.sum()),), FACE_LABEL, dtype=torch.int64),
                        "keypoints": keypoints[keep]})
    return images, targets


def collate_faces(batch: Sequence[dict], target_format: str = "coco"):
    """Batch frame rows. `target_format="coco"` (default) gives a dict: `image` (B, 3, H, W) uint8,
    `boxes`/`landmarks` lists of (n_i, 4) COCO `[x, y, w, h]` / (n_i, 54, 2) pixel tensors (landmarks NaN where
    the corpus has none), every other column through `default_collate`.

    `target_format="torchvision"` gives `(images, targets)` as torchvision's detection models take them
    (`loss_dict = model(images, targets)`): `images` a list of (3, H, W) float tensors in [0, 1]; per image a
    dict with `boxes` (n_i, 4) float `[x1, y1, x2, y2]` pixels, `labels` (n_i,) int64, all 1 (face; 0 is
    torchvision's background, so `num_classes=2`) and `keypoints` (n_i, 54, 3) `x, y, visibility` (0 where a
    point is unlabelled) for Keypoint R-CNN. A frame without a face has empty (0, 4) boxes, which torchvision
    trains on as a negative; boxes of zero width or height are left out (torchvision refuses them). With a
    DataLoader: `collate_fn=functools.partial(collate_faces, target_format="torchvision")`.
    """
    if not batch:
        raise InputError("collate_faces got an empty batch")
    if target_format not in ("coco", "torchvision"):
        raise InputError(f"collate_faces: target_format must be 'coco' or 'torchvision', got {target_format!r}")
    if target_format == "torchvision":
        return _torchvision_targets(batch)
    out = {"image": torch.stack([image_to_tensor(row["image"]) for row in batch])}
    pairs = [_faces_to_tensors(row.get("faces") or []) for row in batch]
    out["boxes"] = [b for b, _ in pairs]
    out["landmarks"] = [lm for _, lm in pairs]
    rest = [{k: v for k, v in row.items() if k not in {"image", "faces"} and v is not None} for row in batch]
    common = set.intersection(*(set(r) for r in rest))
    out.update(default_collate([{k: r[k] for k in common} for r in rest]))
    return out


CLIP_SOURCES = ("auto", "png", "mp4")


class ClipSampler:
    """Decode `num_frames` frames of a video row with their first-face boxes, reading only those frames.

    `mode="uniform"` spreads the frames over the video (deterministic); `mode="random"` draws a sorted random
    subset seeded by (seed, video_id), so a run is reproducible and videos differ. `source="auto"` reads the
    picked frames from the row's PNG frames (`frame_files`) where it has them, decoded exactly as the `frames`
    rows decode their images, and otherwise from the MP4 by seeking to the keyframe before each picked frame
    (`io.decode.read_frames`); `"png"` insists on the PNGs, `"mp4"` on the video. Either way a clip costs about
    its own frames, not the video up to its last frame (benchmarks/clips.py).
    """

    def __init__(self, num_frames: int = 8, mode: str = "uniform", seed: int = 0, backend: str = "pyav",
                 source: str = "auto"):
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise InputError(f"num_frames must be a whole number >= 1, got {num_frames!r}")
        if mode not in {"uniform", "random"}:
            raise InputError(f"mode must be 'uniform' or 'random', got {mode!r}")
        if source not in CLIP_SOURCES:
            raise InputError(f"source must be one of {CLIP_SOURCES}, got {source!r}")
        self.num_frames, self.mode, self.seed, self.backend, self.source = num_frames, mode, seed, backend, source

    def indices(self, total: int, video_id: str = "") -> np.ndarray:
        if total < 1:
            raise InputError(f"video {video_id!r} has no frames")
        if self.mode == "uniform" or total <= self.num_frames:
            return np.linspace(0, total - 1, self.num_frames).round().astype(np.int64)
        rng = np.random.default_rng([self.seed, zlib.crc32(video_id.encode())])
        return np.sort(rng.choice(total, size=self.num_frames, replace=False)).astype(np.int64)

    def _frames(self, row: dict, picks: np.ndarray) -> np.ndarray:
        files = row.get("frame_files") if self.source != "mp4" else None
        files = [files[i] for i in picks] if files else [None] * len(picks)
        if self.source == "png" and not all(files):
            raise InputError(f"video {row.get('video_id', '')!r} has no local PNG for frame(s) "
                             f"{[int(i) for i, f in zip(picks, files) if not f][:5]} (see frame_files): use "
                             "source='auto' (the MP4 for those) or 'mp4'")
        from_video = [int(i) for i, f in zip(picks, files) if not f]
        decoded = {}
        if from_video:
            video = row["video"]
            name = video.get("path") or row.get("video_id")
            frames = video_io.read_frames(video.get("bytes") or video.get("path"), from_video, backend=self.backend,
                                          name=name)
            decoded = dict(zip(from_video, frames))
        if len(decoded) == len(picks):
            return np.stack([decoded[int(i)] for i in picks])
        from thermvision_db.schema.features import frame_image_feature

        image = frame_image_feature()  # the frame rows' decoding: the same pixels
        return np.stack([np.asarray(image.decode_example({"path": f, "bytes": None})) if f else decoded[int(i)]
                         for i, f in zip(picks, files)])

    def __call__(self, row: dict) -> dict:
        picks = self.indices(int(row["num_frames"]), row.get("video_id", ""))
        frames = self._frames(row, picks)
        boxes = np.full((len(picks), 4), np.nan, dtype=np.float32)
        for j, i in enumerate(picks):
            if row["boxes"][i]:
                boxes[j] = row["boxes"][i][0]
        return {"frames": frames.transpose(0, 3, 1, 2), "frame_indices": picks, "clip_boxes": boxes}


def clip_dataset(videos, num_frames: int = 8, mode: str = "uniform", seed: int = 0, backend: str = "pyav",
                 source: str = "auto"):
    """A clip per video row: lazily decoded (`with_transform` for a Dataset, `map` for an IterableDataset).
    `source`: where the frames come from (see `ClipSampler`)."""
    import datasets

    sampler = ClipSampler(num_frames, mode, seed, backend, source)
    drop = ["video", "boxes", "landmarks", "qc", "frame_files", "head_pose", "expression", "eye_open", "mouth_open"]
    if isinstance(videos, datasets.IterableDataset):
        return videos.map(sampler, remove_columns=[c for c in drop if c in (videos.column_names or drop)])

    def transform(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        clips = [sampler(r) for r in rows]
        keep = {k: v for k, v in batch.items() if k not in drop}
        keep.update({k: [torch.from_numpy(np.ascontiguousarray(c[k])) for c in clips] for k in clips[0]})
        return keep

    return videos.with_transform(transform)


def collate_clips(batch: Sequence[dict]) -> dict:
    """Stack clips of equal length: `frames` (B, T, 3, H, W) uint8, `clip_boxes` (B, T, 4) with NaN gaps."""
    return default_collate([{k: (torch.as_tensor(np.asarray(v)) if k in {"frames", "clip_boxes", "frame_indices"} else v)
                             for k, v in row.items() if v is not None} for row in batch])
