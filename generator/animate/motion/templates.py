"""Motion templates on disk: upstream LivePortrait `.pkl` (every upstream layout, see `liveportrait_pkl`) and the
project's `.npz` / `.safetensors`."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from generator.animate.liveportrait.template import MotionSequence
from generator.animate.motion.liveportrait_pkl import load_lip_array, load_liveportrait_pkl
from thermvision_db.errors import InputError

__all__ = ["load_lip_array", "load_liveportrait_pkl", "load_motion", "load_template", "save_template"]


# ---------------------------------------------------------------- our template format
def save_template(motion: MotionSequence, path: str | os.PathLike) -> Path:
    """`.npz` (loaded without pickle) or `.safetensors`; metadata (fps, relative, name, single_image) as JSON."""
    path = Path(path)
    arrays = {n: np.ascontiguousarray(getattr(motion, n), np.float32) for n in MotionSequence.FIELDS
              if getattr(motion, n) is not None}
    meta = {"fps": motion.fps, "relative": motion.relative, "name": motion.name, "format": "thermvision-motion/1",
            "single_image": motion.single_image}
    tmp = path.with_name(path.name + ".partial")
    if path.suffix == ".npz":
        with open(tmp, "wb") as fh:
            np.savez(fh, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(tmp), metadata={"thermvision_motion": json.dumps(meta)})
    else:
        raise InputError(f"{path}: motion templates are saved as .npz or .safetensors")
    os.replace(tmp, path)
    return path


def load_template(path: str | os.PathLike) -> MotionSequence:
    path = Path(path)
    if path.suffix == ".npz":
        try:  # allow_pickle stays False; NumPy's advice to turn it on is never passed on
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(arrays.pop("__meta__").tobytes().decode()) if "__meta__" in arrays else {}
            if not isinstance(meta, dict):
                raise ValueError("metadata is not an object")
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as err:
            reason = ("it holds Python objects, which are never loaded" if "allow_pickle" in str(err)
                      else type(err).__name__)
            raise InputError(f"{path}: not a readable motion template ({reason})") from None
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        from generator.weights import check_safetensors

        metadata = check_safetensors(path, what="motion template")  # header checked before safetensors reads it
        try:
            arrays = load_file(str(path))
            meta = json.loads(metadata.get("thermvision_motion", "{}"))
        except Exception as err:  # SafetensorError, a JSON error in the metadata: their texts quote the file
            raise InputError(f"{path}: not a readable motion template ({type(err).__name__})") from None
    else:
        raise InputError(f"{path}: not a motion template (.npz, .safetensors or LivePortrait .pkl)")
    unknown = set(arrays) - set(MotionSequence.FIELDS)
    if unknown:
        raise InputError(f"{path}: unknown motion fields {sorted(unknown)}; expected some of {MotionSequence.FIELDS}")
    if any(a.dtype.kind not in "biuf" for a in arrays.values()):
        raise InputError(f"{path}: motion fields must be numbers")
    try:
        fps = float(meta.get("fps", 25.0))
    except (TypeError, ValueError):
        raise InputError(f"{path}: its fps is not a number") from None
    try:
        return MotionSequence(**arrays, fps=fps, relative=bool(meta.get("relative", True)),
                              name=str(meta.get("name", path.stem)), single_image=bool(meta.get("single_image", False)))
    except InputError as err:  # NaN, 0 frames, shapes: the message names the file, not only the motion
        raise InputError(f"{path}: {err}") from None


def load_motion(path: str | os.PathLike) -> MotionSequence:
    """Any template file by suffix."""
    return load_liveportrait_pkl(path) if Path(path).suffix == ".pkl" else load_template(path)
