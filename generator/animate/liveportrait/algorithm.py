"""The retargeting algorithm: source keypoint info + driving motion -> driving keypoints x_d per frame.

Follows the upstream pipeline: implicit keypoints `x = s (x_c R + delta) + t` with tz = 0; relative motion
against the first driving frame; the expression-friendly multiplier; eye/lip retargeting; lip normalisation;
stitching; the global driving multiplier. Everything here is small (K x 3 per frame) and runs in fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .camera import matrix_to_degrees, rotation_matrix
from .stitching_retargeting_network import StitchingRetargeting
from .template import MotionSequence

log = logging.getLogger(__name__)


@dataclass
class SourceInfo:
    """What M says about the source, once per identity. Shapes (1, ...)."""

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    scale: torch.Tensor  # (1, 1)
    t: torch.Tensor  # (1, 3)
    exp: torch.Tensor  # (1, K, 3)
    kp: torch.Tensor  # (1, K, 3) canonical keypoints x_c
    R: torch.Tensor  # (1, 3, 3)
    x_s: torch.Tensor  # (1, K, 3)

    @classmethod
    def from_keypoint_info(cls, info: dict[str, torch.Tensor]) -> "SourceInfo":
        R = rotation_matrix(info["pitch"], info["yaw"], info["roll"]).to(info["kp"].device)
        x_s = transform_keypoint(info["kp"], R, info["exp"], info["scale"], info["t"])
        return cls(info["pitch"], info["yaw"], info["roll"], info["scale"], info["t"], info["exp"], info["kp"], R, x_s)


@dataclass
class AnimationOptions:
    """Upstream flags, upstream CLI defaults."""

    driving_option: str = "expression-friendly"  # or "pose-friendly"
    stitching: bool = True
    normalize_lip: bool = False
    lip_normalize_threshold: float = 0.03
    driving_multiplier: float = 1.0
    # Eye/lip opening of the source, needed by retargeting and lip normalisation. Pass values measured with a
    # landmark model when available; the defaults describe a neutral face with open eyes and a closed mouth.
    source_eye_ratio: tuple[float, float] = (0.35, 0.35)
    source_lip_ratio: float = 0.0


def transform_keypoint(kp: torch.Tensor, R: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor,
                       t: torch.Tensor) -> torch.Tensor:
    """x = s (x_c R + delta) + t, with only tx, ty applied (tz = 0)."""
    x = scale.reshape(-1, 1, 1) * (kp @ R + exp)
    return x + torch.cat([t[:, :2], torch.zeros_like(t[:, 2:])], dim=1)[:, None, :]


def motion_multiplier(x_s: torch.Tensor, x_d0: torch.Tensor) -> float:
    """sqrt(hull volume of x_s) / sqrt(hull volume of x_d,0): rescales driving motion to the source face."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(np.sqrt(ConvexHull(x_s[0].double().cpu().numpy()).volume)
                     / np.sqrt(ConvexHull(x_d0[0].double().cpu().numpy()).volume))
    except QhullError:
        log.warning("keypoints are degenerate (flat hull); expression-friendly multiplier set to 1")
        return 1.0


def _rows(value: np.ndarray | None, device) -> torch.Tensor | None:
    return None if value is None else torch.as_tensor(value, dtype=torch.float32, device=device)


def driving_keypoints(source: SourceInfo, motion: MotionSequence, stitcher: StitchingRetargeting,
                      opts: AnimationOptions | None = None) -> dict[str, torch.Tensor]:
    """All frames at once -> x_d (T, K, 3) and the per-frame motion applied (R, pose degrees, scale, t, exp)."""
    opts = opts or AnimationOptions()
    dev = source.x_s.device
    T, K = len(motion), source.kp.shape[1]
    R_d, exp_d, s_d, t_d = (_rows(getattr(motion, n), dev) for n in ("R", "exp", "scale", "t"))
    if exp_d is not None and exp_d.shape[1] != K:
        raise ValueError(f"motion {motion.name!r} has {exp_d.shape[1]} keypoints, the model uses {K}")
    ones = torch.ones(T, 1, device=dev)
    if motion.relative:
        R_new = (R_d @ R_d[:1].transpose(1, 2)) @ source.R if R_d is not None else source.R.expand(T, 3, 3)
        exp_new = source.exp + (exp_d - exp_d[:1]) if exp_d is not None else source.exp.expand(T, K, 3)
        s_new = source.scale * (s_d / s_d[:1]) if s_d is not None else source.scale * ones
        t_new = source.t + (t_d - t_d[:1]) if t_d is not None else source.t.expand(T, 3)
    else:
        R_new = R_d if R_d is not None else source.R.expand(T, 3, 3)
        exp_new = exp_d if exp_d is not None else source.exp.expand(T, K, 3)
        s_new = s_d if s_d is not None else source.scale * ones
        t_new = t_d if t_d is not None else source.t.expand(T, 3)
    t_new = torch.cat([t_new[:, :2], torch.zeros_like(t_new[:, 2:])], dim=1)
    x_c = source.kp.expand(T, K, 3)
    x_d = s_new.reshape(T, 1, 1) * (x_c @ R_new + exp_new) + t_new[:, None, :]
    x_s = source.x_s.expand(T, K, 3)

    if motion.relative and opts.driving_option == "expression-friendly" and (R_d is not None or exp_d is not None):
        m = motion_multiplier(source.x_s, x_d[:1])
        x_d = x_s + (x_d - x_d[:1]) * m

    retarget = motion.eye_ratio is not None or motion.lip_ratio is not None
    with torch.no_grad():
        if retarget:
            delta = torch.zeros_like(x_d)
            if motion.eye_ratio is not None:
                src = torch.tensor([opts.source_eye_ratio], dtype=torch.float32, device=dev).expand(T, 2)
                delta = delta + stitcher.retarget_eye(x_s, torch.cat([src, _rows(motion.eye_ratio, dev)], dim=1))
            if motion.lip_ratio is not None:
                src = torch.full((T, 1), opts.source_lip_ratio, device=dev)
                delta = delta + stitcher.retarget_lip(x_s, torch.cat([src, _rows(motion.lip_ratio, dev)], dim=1))
            x_d = (x_s if motion.relative else x_d) + delta
            if opts.stitching:
                x_d = stitcher.stitch(x_s, x_d)
        else:
            if opts.stitching:
                x_d = stitcher.stitch(x_s, x_d)
            if opts.normalize_lip and opts.source_lip_ratio >= opts.lip_normalize_threshold:
                # close the source's open mouth before animating (upstream flag_normalize_lip)
                ratio = torch.tensor([[opts.source_lip_ratio, 0.0]], device=dev)
                x_d = x_d + stitcher.retarget_lip(source.x_s, ratio)
    x_d = x_s + (x_d - x_s) * opts.driving_multiplier
    pitch, yaw, roll = matrix_to_degrees(R_new)
    return {"x_d": x_d, "R": R_new, "pitch": pitch, "yaw": yaw, "roll": roll, "scale": s_new, "t": t_new,
            "exp": exp_new}
