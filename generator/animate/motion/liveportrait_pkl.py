"""Upstream LivePortrait motion templates (`.pkl`), every layout upstream has written, read without running code.

Layouts (all pickles of numpy arrays, dicts and lists; read only through `generator.safe_pickle`):
- current: `{'n_frames', 'output_fps', 'motion': [{'scale', 'R', 'exp', 't', ('kp', 'x_s')}],
  'c_eyes_lst', 'c_lip_lst'}`;
- mid-2024: the same with the rotation under `R_d` and the ratios under `c_d_eyes_lst` / `c_d_lip_lst`
  (5 of the 12 templates upstream ships: d1, d2, d5, d7, d8); upstream reads `R`, else `R_d`, per frame;
- first release: a list `[frames, landmarks]`: per-frame dicts `{'n_frames', 'frames_index', 'scale', 'R_d',
  'exp', 't'}` and the driving 203-point landmarks, from which the eye/lip ratios are computed as upstream does.
  A bare list of per-frame dicts is read too (no ratios then).
Templates without eye/lip lists (upstream's expression clips) load with no ratios; retargeting then says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from generator.animate.liveportrait.template import MotionSequence
from generator.safe_pickle import safe_pickle_load
from thermvision_db.errors import InputError

UPSTREAM_FPS = 25.0  # upstream's InferenceConfig.output_fps, used when a template names none


def _array(value, path: Path, where: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):  # NumPy's message would quote the value ("could not convert string ...")
        raise InputError(f"{path}: {where} is not numeric ({type(value).__name__})") from None
    fits = (arr.size > 0 and arr.size % 3 == 0) if -1 in shape else arr.size == int(np.prod(shape))
    if not fits:
        raise InputError(f"{path}: {where} has shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: {where} holds NaN or infinite values")
    return arr.reshape(shape)


def _frame_value(frame: dict, i: int, keys: tuple[str, ...], path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """`frame[keys[0]]`, else the older `keys[1]` (upstream's fallback order), with the shape checked."""
    for key in keys:
        if key in frame:
            return _array(frame[key], path, f"motion[{i}][{key!r}]", shape)
    raise InputError(f"{path}: motion[{i}] has no {' or '.join(repr(k) for k in keys)}")


def _frames_to_arrays(frames: list, n: int, path: Path) -> dict[str, np.ndarray]:
    if not all(isinstance(f, dict) for f in frames[:n]):
        raise InputError(f"{path}: 'motion' must be a list of per-frame dicts")
    return {
        "R": np.stack([_frame_value(f, i, ("R", "R_d"), path, (3, 3)) for i, f in enumerate(frames[:n])]),
        "exp": np.stack([_frame_value(f, i, ("exp",), path, (-1, 3)) for i, f in enumerate(frames[:n])]),
        "scale": np.stack([_frame_value(f, i, ("scale",), path, (1,)) for i, f in enumerate(frames[:n])]),
        "t": np.stack([_frame_value(f, i, ("t",), path, (3,)) for i, f in enumerate(frames[:n])]),
    }


def _frame_count(declared, available: int, path: Path) -> int:
    """Upstream animates `n_frames` frames; a template declaring more than it holds is refused."""
    if declared is None:
        return available
    try:
        n = int(declared)
    except (TypeError, ValueError):
        raise InputError(f"{path}: n_frames is not a number ({type(declared).__name__})") from None
    if not 1 <= n <= available:
        raise InputError(f"{path}: n_frames is {n} but the template holds {available} frames")
    return n


def _ratio_list(data: dict, keys: tuple[str, str], n: int, width: int, path: Path) -> np.ndarray | None:
    """`c_eyes_lst` else `c_d_eyes_lst` (and the lip pair): (T, width) float32, or None when absent."""
    key = next((k for k in keys if k in data), None)
    if key is None:
        return None
    values = data[key]
    if not isinstance(values, (list, tuple)) or len(values) < n:
        raise InputError(f"{path}: {key!r} must list one entry per frame ({n}), got "
                         f"{len(values) if isinstance(values, (list, tuple)) else type(values).__name__}")
    return np.stack([_array(v, path, f"{key}[{i}]", (width,)) for i, v in enumerate(values[:n])])


def ratios_from_landmarks(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 203, 2) landmarks -> eye (T, 2) [left, right] and lip (T, 1) ratios, upstream's formulas (eps 1e-6)."""
    lmk = np.asarray(landmarks, dtype=np.float64)

    def ratio(a: int, b: int, c: int, d: int) -> np.ndarray:
        return (np.linalg.norm(lmk[:, a] - lmk[:, b], axis=1, keepdims=True)
                / (np.linalg.norm(lmk[:, c] - lmk[:, d], axis=1, keepdims=True) + 1e-6))

    eye = np.concatenate([ratio(6, 18, 0, 12), ratio(30, 42, 24, 36)], axis=1)
    return eye.astype(np.float32), ratio(90, 102, 48, 66).astype(np.float32)


def _first_release(data: list, path: Path) -> MotionSequence:
    if len(data) == 2 and isinstance(data[0], list) and not isinstance(data[1], dict):
        frames, landmarks = data
    else:
        frames, landmarks = data, None
    if not frames or not isinstance(frames[0], dict):
        raise InputError(f"{path}: a list template must hold per-frame dicts (upstream's first-release layout)")
    n = _frame_count(frames[0].get("n_frames"), len(frames), path)
    arrays = _frames_to_arrays(frames, n, path)
    eye = lip = None
    if landmarks is not None:
        if not isinstance(landmarks, (list, tuple, np.ndarray)):
            raise InputError(f"{path}: the second entry must list the driving landmarks, "
                             f"got {type(landmarks).__name__}")
        try:
            lmk = np.stack([np.asarray(v, dtype=np.float64).reshape(-1, 2) for v in landmarks[:n]])
        except (TypeError, ValueError):
            raise InputError(f"{path}: the landmark list is not (T, N, 2) numbers") from None
        if len(lmk) < n or lmk.shape[1] != 203 or not np.isfinite(lmk).all():
            raise InputError(f"{path}: expected {n} frames of 203 finite landmarks, got {lmk.shape[:2]}")
        eye, lip = ratios_from_landmarks(lmk)
    return MotionSequence(**arrays, eye_ratio=eye, lip_ratio=lip, fps=UPSTREAM_FPS, relative=True, name=path.stem,
                          single_image=n == 1, extra={"layout": "liveportrait-first-release"})


def load_liveportrait_pkl(path: str | os.PathLike) -> MotionSequence:
    """Any upstream template layout -> a relative `MotionSequence` (a 1-frame template is a driving image, as
    upstream treats it). Eye ratios keep both eyes (T, 2); lip ratios (T, 1)."""
    path = Path(path)
    try:
        return _load_pkl(path)
    except InputError as err:  # the sequence's own checks name the motion; the message names the file too
        raise err if str(err).startswith(str(path)) else InputError(f"{path}: {err}") from None


def _load_pkl(path: Path) -> MotionSequence:
    data = safe_pickle_load(path.read_bytes(), str(path))
    if isinstance(data, list):
        return _first_release(data, path)
    if not isinstance(data, dict) or "motion" not in data:
        raise InputError(f"{path} is not a LivePortrait motion template (no 'motion' list)")
    frames = data["motion"]
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{path}: 'motion' must be a non-empty list of per-frame dicts")
    n = _frame_count(data.get("n_frames"), len(frames), path)
    arrays = _frames_to_arrays(frames, n, path)
    eye = _ratio_list(data, ("c_eyes_lst", "c_d_eyes_lst"), n, 2, path)
    lip = _ratio_list(data, ("c_lip_lst", "c_d_lip_lst"), n, 1, path)
    fps = data.get("output_fps", UPSTREAM_FPS)
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"{path}: output_fps is not a number ({type(fps).__name__})") from None
    layout = "liveportrait" if "R" in frames[0] else "liveportrait-R_d"
    return MotionSequence(**arrays, eye_ratio=eye, lip_ratio=lip, fps=fps, relative=True, name=path.stem,
                          single_image=n == 1, extra={"layout": layout})


def load_lip_array(path: str | os.PathLike) -> np.ndarray:
    """Upstream's neutral lip expression (`src/utils/resources/lip_array.pkl`, (1, K, 3)) -> (K, 3) float32.

    A single driving image is animated as source expression + driving expression - this array; the project does
    not ship upstream's values, so pass the file from an upstream checkout.
    """
    path = Path(path)
    data = safe_pickle_load(path.read_bytes(), str(path))
    if not isinstance(data, np.ndarray) or data.ndim not in (2, 3) or data.shape[-1] != 3:
        shape = getattr(data, "shape", type(data).__name__)
        raise InputError(f"{path}: expected upstream's lip array of shape (1, K, 3), got {shape}")
    return data.reshape(-1, 3).astype(np.float32)
