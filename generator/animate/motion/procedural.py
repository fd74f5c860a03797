"""Procedural motion programs: an exact head-pose sweep, blinks and mouth openings."""

from __future__ import annotations

import numpy as np

from generator.animate.liveportrait.camera import rotation_matrix
from generator.animate.liveportrait.template import MotionSequence
from thermvision_db.errors import InputError


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
        raise InputError("a head-pose sweep needs at least 3 frames")
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
        raise InputError("an expression set needs at least 10 frames")
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
