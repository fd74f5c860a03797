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

from thermvision_db.errors import InputError

from .camera import matrix_to_degrees, rotation_matrix
from .networks.stitching_retargeting_network import StitchingRetargeting
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
    """Upstream's inference flags, with the upstream CLI defaults (`src/config/argument_config.py`)."""

    driving_option: str = "expression-friendly"  # or "pose-friendly"
    stitching: bool = True
    normalize_lip: bool = False  # upstream flag_normalize_lip: close an open source mouth (relative motion only)
    lip_normalize_threshold: float = 0.03
    driving_multiplier: float = 1.0
    # Upstream flag_eye_retargeting / flag_lip_retargeting. None ("auto") turns one on only for a motion that
    # carries that ratio and no expression (the project's procedural expression program, which moves nothing
    # otherwise); for upstream's inputs, which always carry an expression, None is upstream's False.
    eye_retargeting: bool | None = None
    lip_retargeting: bool | None = None
    # Upstream flag_relative_motion; None follows the motion's own `relative`.
    relative_motion: bool | None = None
    # Eye/lip opening of the source: upstream measures them with its 203-point model (pass those values, e.g.
    # `Landmarker203.eye_lip_ratios`); the defaults describe a neutral face with open eyes and a closed mouth.
    source_eye_ratio: tuple[float, float] = (0.35, 0.35)
    source_lip_ratio: float = 0.0
    # Upstream's neutral lip expression (K, 3) (`load_lip_array`), needed by a single driving image only.
    lip_array: np.ndarray | None = None


# Absolute motion replaces only these expression entries of the source (upstream's choice of keypoints).
ABSOLUTE_EXP_ROWS = (1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
ABSOLUTE_EXP_ENTRIES = ((3, 1), (4, 1), (5, 2), (8, 2), (9, 1), (9, 2))


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


def _absolute_expression(exp_s: torch.Tensor, exp_d: torch.Tensor) -> torch.Tensor:
    """Source expression with upstream's subset of driving entries copied in (absolute motion)."""
    out = exp_s.expand_as(exp_d).clone()
    if exp_d.shape[1] <= max(ABSOLUTE_EXP_ROWS):
        return exp_d.clone()  # a reduced keypoint set (tiny test networks): no published subset applies
    rows = list(ABSOLUTE_EXP_ROWS)
    out[:, rows] = exp_d[:, rows]
    for k, c in ABSOLUTE_EXP_ENTRIES:
        out[:, k, c] = exp_d[:, k, c]
    return out


def _retargeting_flags(motion: MotionSequence, opts: AnimationOptions) -> tuple[bool, bool]:
    eye, lip = opts.eye_retargeting, opts.lip_retargeting
    eye = motion.eye_ratio is not None and motion.exp is None if eye is None else eye
    lip = motion.lip_ratio is not None and motion.exp is None if lip is None else lip
    for on, ratio, what in ((eye, motion.eye_ratio, "eye"), (lip, motion.lip_ratio, "lip")):
        if on and ratio is None:
            raise InputError(f"{what} retargeting is on but motion {motion.name!r} carries no {what} ratios "
                             f"(upstream templates without c_{what}{'s' if what == 'eye' else ''}_lst cannot drive it)")
    return eye, lip


def _motion_terms(source: SourceInfo, motion: MotionSequence, relative: bool, opts: AnimationOptions, dev):
    """R_new, exp_new, s_new, t_new (tz = 0) per frame, as upstream's animation loop forms them."""
    T, K = len(motion), source.kp.shape[1]
    R_d, exp_d, s_d, t_d = (_rows(getattr(motion, n), dev) for n in ("R", "exp", "scale", "t"))
    if exp_d is not None and exp_d.shape[1] != K:
        raise InputError(f"motion {motion.name!r} has {exp_d.shape[1]} keypoints, the model uses {K}")
    ones = torch.ones(T, 1, device=dev)
    if relative:
        R_new = (R_d @ R_d[:1].transpose(1, 2)) @ source.R if R_d is not None else source.R.expand(T, 3, 3)
        if exp_d is None:
            exp_new = source.exp.expand(T, K, 3)
        elif motion.single_image:  # upstream: x_s exp + (driving exp - the neutral lip array)
            if opts.lip_array is None:
                raise InputError(f"motion {motion.name!r} is a single driving image: upstream animates it as source "
                                 "expression + driving expression - its neutral lip array; pass "
                                 "AnimationOptions(lip_array=load_lip_array('src/utils/resources/lip_array.pkl'))")
            lip = torch.as_tensor(np.asarray(opts.lip_array, np.float32).reshape(1, -1, 3), device=dev)
            if lip.shape[1] != K:
                raise InputError(f"the lip array has {lip.shape[1]} keypoints, the model uses {K}")
            exp_new = source.exp + (exp_d - lip)
        else:
            exp_new = source.exp + (exp_d - exp_d[:1])
        s_new = source.scale * (s_d / s_d[:1]) if s_d is not None else source.scale * ones
        t_new = source.t + (t_d - t_d[:1]) if t_d is not None else source.t.expand(T, 3)
    else:  # upstream: driving R and t, source scale, a subset of the driving expression
        R_new = R_d if R_d is not None else source.R.expand(T, 3, 3)
        exp_new = _absolute_expression(source.exp, exp_d) if exp_d is not None else source.exp.expand(T, K, 3)
        s_new = source.scale * ones
        t_new = t_d if t_d is not None else source.t.expand(T, 3)
    t_new = torch.cat([t_new[:, :2], torch.zeros_like(t_new[:, 2:])], dim=1)
    return R_new, exp_new, s_new, t_new


def driving_keypoints(source: SourceInfo, motion: MotionSequence, stitcher: StitchingRetargeting,
                      opts: AnimationOptions | None = None) -> dict[str, torch.Tensor]:
    """All frames at once -> x_d (T, K, 3) and the per-frame motion applied (R, pose degrees, scale, t, exp).

    Upstream's Algorithm 1, frame for frame: relative or absolute terms; the expression-friendly multiplier
    (relative driving videos/templates, not a single image); then exactly one of: retargeting (when a flag is
    on: x_s + deltas in relative mode, x_d + deltas in absolute mode, then stitching if on), or stitching and/or
    the lip normalisation offset; finally the global driving multiplier.
    """
    opts = opts or AnimationOptions()
    dev = source.x_s.device
    T, K = len(motion), source.kp.shape[1]
    relative = motion.relative if opts.relative_motion is None else bool(opts.relative_motion)
    eye_on, lip_on = _retargeting_flags(motion, opts)
    R_new, exp_new, s_new, t_new = _motion_terms(source, motion, relative, opts, dev)
    x_c = source.kp.expand(T, K, 3)
    x_d = s_new.reshape(T, 1, 1) * (x_c @ R_new + exp_new) + t_new[:, None, :]
    x_s = source.x_s.expand(T, K, 3)

    if relative and opts.driving_option == "expression-friendly" and not motion.single_image:
        m = motion_multiplier(source.x_s, x_d[:1])
        x_d = x_s + (x_d - x_d[:1]) * m

    with torch.no_grad():
        if eye_on or lip_on:
            x_d = x_s if relative else x_d
            if eye_on:  # [source left, source right, driving LEFT eye]: upstream reads c_d_eyes_i[0][0]
                src = torch.tensor([opts.source_eye_ratio], dtype=torch.float32, device=dev).expand(T, 2)
                x_d = x_d + stitcher.retarget_eye(x_s, torch.cat([src, _rows(motion.eye_ratio, dev)[:, :1]], 1))
            if lip_on:
                src = torch.full((T, 1), float(opts.source_lip_ratio), device=dev)
                x_d = x_d + stitcher.retarget_lip(x_s, torch.cat([src, _rows(motion.lip_ratio, dev)], dim=1))
            if opts.stitching:
                x_d = stitcher.stitch(x_s, x_d)
        else:
            if opts.stitching:
                x_d = stitcher.stitch(x_s, x_d)
            if opts.normalize_lip and relative and opts.source_lip_ratio >= opts.lip_normalize_threshold:
                # close the source's open mouth before animating (upstream flag_normalize_lip)
                ratio = torch.tensor([[opts.source_lip_ratio, 0.0]], device=dev)
                x_d = x_d + stitcher.retarget_lip(source.x_s, ratio)
    x_d = x_s + (x_d - x_s) * opts.driving_multiplier
    pitch, yaw, roll = matrix_to_degrees(R_new)
    return {"x_d": x_d, "R": R_new, "pitch": pitch, "yaw": yaw, "roll": roll, "scale": s_new, "t": t_new,
            "exp": exp_new}
