"""Write an animation: H.264 MP4 (PyAV), PNG frames and the per-frame motion, streamed chunk by chunk."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image


def _tee_png(frames: Iterable[np.ndarray], folder: Path | None) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if folder is not None:
            Image.fromarray(frame).save(folder / f"{i:05d}.png")
        yield frame


def write_motion(motion: dict[str, np.ndarray], path: str | os.PathLike, fps: float, name: str) -> tuple[Path, Path]:
    """`<name>.motion.npz` (all arrays) and `<name>.motion.json` (pose degrees, scale, t per frame, readable)."""
    path = Path(path)
    npz = path.with_name(path.name + ".npz")
    tmp = npz.with_name(npz.name + ".partial")
    with open(tmp, "wb") as fh:
        np.savez(fh, fps=np.float32(fps), **motion)
    os.replace(tmp, npz)
    rows = [{"frame": i, "yaw": float(motion["yaw"][i]), "pitch": float(motion["pitch"][i]),
             "roll": float(motion["roll"][i]), "scale": float(np.ravel(motion["scale"][i])[0]),
             "t": [float(v) for v in motion["t"][i]]} for i in range(len(motion["yaw"]))]
    js = path.with_name(path.name + ".json")
    tmp = js.with_name(js.name + ".partial")
    tmp.write_text(json.dumps({"name": name, "fps": fps, "units": {"yaw/pitch/roll": "degrees",
                               "t": "normalised crop coordinates [-1, 1], tz = 0"}, "frames": rows}, indent=1))
    os.replace(tmp, js)
    return npz, js


def write_animation(pipeline, source, motion, out_dir: str | os.PathLike, name: str, options=None,
                    png: bool = True, chunk_size: int | None = None) -> dict[str, Path]:
    """Stream frames into `<name>.mp4` (+ `<name>_frames/`), then save the motion; memory stays one chunk."""
    from thermvision_db.io.encode import write_mp4

    from .pipeline import motion_record

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kp = pipeline.driving_keypoints(source, motion, options)
    png_dir = out / f"{name}_frames" if png else None
    if png_dir is not None:
        png_dir.mkdir(exist_ok=True)
    frames = pipeline.iter_frames(source, motion, options, chunk_size, keypoints=kp)
    mp4 = write_mp4(out / f"{name}.mp4", _tee_png(frames, png_dir), fps=motion.fps)
    npz, js = write_motion(motion_record(kp), out / f"{name}.motion", motion.fps, name)
    paths = {"mp4": Path(mp4), "motion_npz": npz, "motion_json": js}
    if png_dir is not None:
        paths["frames"] = png_dir
    return paths
