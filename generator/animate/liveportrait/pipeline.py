"""Animate one still: source features once, driving keypoints for all frames, then W+G in batched chunks.

    pipe = LivePortraitPipeline(LivePortraitNetworks.from_pretrained(dir), device="cuda")  # fp16 autocast
    source = pipe.prepare_source(still)                    # F and M run once per identity
    result = pipe.animate(source, head_pose_sweep())       # frames (T, H, W, 3) uint8 + per-frame motion

`iter_frames` streams the same frames chunk by chunk, so a long video never sits in memory at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from thermvision_db.errors import InputError

from .algorithm import AnimationOptions, SourceInfo, driving_keypoints
from .crop import CropTransform, paste_back, soft_mask, warp_crop
from .model import LivePortraitNetworks
from .template import MotionSequence

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' is fp16 autocast on CUDA (upstream's flag_use_half_precision) and fp32 elsewhere.

    A chunk whose fp16 output is not finite (upstream's "black boxes" on GPUs without proper fp16) is redone in
    fp32 with a warning; bf16 stays available but has 3 fewer mantissa bits than upstream's fp16.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose auto, fp32, bf16 or fp16")
    return DTYPES[dtype]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W, 3) uint8 (grayscale replicated)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"expected an (H, W[, 1|3|4]) image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def to_input(images: np.ndarray, size: int, channels: int, device: torch.device,
             interpolation: int = cv2.INTER_LINEAR) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, C, size, size) float in [0, 1].

    Upstream resizes driving frames and uncropped sources with cv2's default (bilinear) and only its own 512
    source crop with INTER_AREA; callers pass that choice.
    """
    if images.ndim == 3:
        images = images[None]
    resized = np.stack([cv2.resize(im, (size, size), interpolation=interpolation) if im.shape[:2] != (size, size)
                        else im for im in images])
    x = torch.from_numpy(resized).to(device).permute(0, 3, 1, 2).float() / 255
    if channels == 1:
        x = x.mean(1, keepdim=True)
    elif channels != 3:
        raise InputError(f"networks expect {channels} input channels; only 1 or 3 are supported")
    return x


@dataclass
class SourceState:
    """Everything computed once per identity."""

    info: SourceInfo
    feature: torch.Tensor  # F(source), (1, C, D, h, w)
    image: np.ndarray  # the original image (H, W, 3) uint8
    crop: CropTransform | None = None


@dataclass
class AnimationResult:
    frames: np.ndarray  # (T, H, W, 3) uint8
    motion: dict[str, np.ndarray]  # per-frame pitch/yaw/roll (deg), scale, t, exp, R, x_d
    fps: float
    extra: dict = field(default_factory=dict)


class LivePortraitPipeline:
    def __init__(self, networks: LivePortraitNetworks, device: str | torch.device | None = None,
                 dtype: str | torch.dtype = "auto", compile: bool | str = False, chunk_size: int = 16,
                 progress: bool = True, grayscale_output: bool = False):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.nets = networks.to(self.device).eval()
        self.dtype = resolve_dtype(dtype, self.device)
        self.chunk_size = max(1, int(chunk_size))
        self.progress = progress
        self.grayscale_output = grayscale_output
        self.warp, self.decode = self.nets.warping_module, self.nets.spade_generator
        if compile:
            mode = compile if isinstance(compile, str) else None
            self.warp = torch.compile(self.warp, mode=mode, dynamic=False)
            self.decode = torch.compile(self.decode, mode=mode, dynamic=False)

    @property
    def cfg(self):
        return self.nets.cfg

    def _autocast(self, dtype: torch.dtype | None = None):
        dtype = dtype or self.dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def _finite_or_fp32(self, run, what: str):
        """run(dtype) under the pipeline's dtype; redone in fp32 (with a warning) if fp16 gave inf/NaN."""
        out = run(self.dtype)
        values = out.values() if isinstance(out, dict) else [out]
        if self.dtype == torch.float16 and not all(bool(torch.isfinite(v).all()) for v in values):
            log.warning("%s overflowed in fp16 (non-finite values); redone in fp32", what)
            out = run(torch.float32)
        return out

    @torch.no_grad()
    def prepare_source(self, image: np.ndarray, crop: CropTransform | None = None) -> SourceState:
        """F and M on the source, once. `crop` cuts a face out of a larger image (pasted back later)."""
        image = as_rgb(image)
        face = warp_crop(image, crop) if crop is not None else image
        # upstream cuts a 512 crop and area-resizes it; an uncropped source goes through cv2's default resize
        interpolation = cv2.INTER_AREA if crop is not None else cv2.INTER_LINEAR
        x = to_input(face, self.cfg.input_size, self.cfg.appearance.image_channel, self.device, interpolation)

        def features(dtype):
            with self._autocast(dtype):
                return self.nets.appearance_feature_extractor(x).float()

        feature = self._finite_or_fp32(features, "the appearance features")
        xm = x if self.cfg.motion.image_channel == x.shape[1] else x.mean(1, keepdim=True).expand(-1, 3, -1, -1)

        def keypoints(dtype):  # the network under autocast, the pose bins -> degrees in fp32 (as upstream)
            with self._autocast(dtype):
                raw = self.nets.motion_extractor(xm)
            return self.nets.motion_extractor.refine(raw)

        info = self._finite_or_fp32(keypoints, "the source keypoints")
        return SourceState(SourceInfo.from_keypoint_info(info), feature, image, crop)

    @torch.no_grad()
    def driving_keypoints(self, source: SourceState, motion: MotionSequence,
                          options: AnimationOptions | None = None) -> dict[str, torch.Tensor]:
        return driving_keypoints(source.info, motion, self.nets.stitching_retargeting_module, options)

    @torch.no_grad()
    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """W then G for a batch of driving keypoints (B, K, 3) -> (B, 3, S, S) float in [0, 1]."""
        b = x_d.shape[0]

        def run(dtype):
            with self._autocast(dtype):
                out = self.warp(feature.expand(b, *feature.shape[1:]), x_d, x_s.expand(b, *x_s.shape[1:]))["out"]
                return self.decode(out).float()

        return self._finite_or_fp32(run, "W+G")

    def _finish(self, images: torch.Tensor, source: SourceState, mask: torch.Tensor | None) -> np.ndarray:
        """Paste back (if cropped), grayscale if asked, uint8: all on the device, one transfer per chunk."""
        if source.crop is not None:
            original = torch.from_numpy(source.image).to(self.device).permute(2, 0, 1)[None].float() / 255
            images = paste_back(images, original, source.crop, mask)
        if self.grayscale_output:  # one channel off the device; the three channels are one memory (stride 0)
            gray = frames_to_uint8(images.mean(1, keepdim=True))
            return np.broadcast_to(gray, gray.shape[:3] + (3,))
        return frames_to_uint8(images)

    def iter_frames(self, source: SourceState, motion: MotionSequence, options: AnimationOptions | None = None,
                    chunk_size: int | None = None, keypoints: dict | None = None) -> Iterator[np.ndarray]:
        """Yield (H, W, 3) uint8 frames; W+G run on `chunk_size` frames at a time.

        With `grayscale_output` each frame is a read-only view whose three channels are one (H, W) plane (channel
        stride 0): a third of the device-to-host copy, and the writers hand one plane to their processes."""
        kp = keypoints if keypoints is not None else self.driving_keypoints(source, motion, options)
        x_d = kp["x_d"]
        chunk = max(1, int(chunk_size or self.chunk_size))
        mask = soft_mask(source.crop.crop_size, self.device) if source.crop is not None else None
        bar = tqdm(total=len(x_d), desc=f"animate {motion.name}", unit="frame", disable=not self.progress)
        try:
            for start in range(0, len(x_d), chunk):
                images = self.render(source.feature, source.info.x_s, x_d[start:start + chunk])
                yield from self._finish(images, source, mask)
                bar.update(min(chunk, len(x_d) - start))
        finally:
            bar.close()

    def animate(self, source: SourceState | np.ndarray, motion: MotionSequence,
                options: AnimationOptions | None = None, chunk_size: int | None = None) -> AnimationResult:
        """All frames in memory plus the per-frame motion. For long videos use `write_animation`."""
        if not isinstance(source, SourceState):
            source = self.prepare_source(source)
        kp = self.driving_keypoints(source, motion, options)
        frames = np.stack(list(self.iter_frames(source, motion, options, chunk_size, keypoints=kp)))
        return AnimationResult(frames, motion_record(kp), motion.fps)

    def map_source_points(self, source: SourceState, points: np.ndarray, keypoints: dict) -> np.ndarray:
        """Where 2-D source-image points (N, 2) land in every animated frame -> (T, N, 2), output pixels."""
        from .keypoint_map import map_points

        return map_points(source, points, keypoints, self.cfg.input_size, self.cfg.output_size)


def frames_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float -> (B, H, W, C) uint8 as upstream's parse_output: clip to [0, 1], x255, truncate."""
    return (images.float().clamp(0, 1) * 255).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def motion_record(kp: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-frame motion as float32 numpy: pitch/yaw/roll (deg), scale, t (tz = 0), exp, R, x_d."""
    return {k: v.detach().float().cpu().numpy() for k, v in kp.items()}
