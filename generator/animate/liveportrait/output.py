"""Write an animation: H.264 MP4 and PNG frames through the corpus's video writer, and the per-frame motion.

Frames stream chunk by chunk; `generate --stage animate` and the corpus write the same files for the same frames.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


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
    from thermvision_db.io.video_writer import VideoFileWriter, VideoSpec

    from .pipeline import motion_record

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kp = pipeline.driving_keypoints(source, motion, options)
    png_dir = out / f"{name}_frames" if png else None
    writer = VideoFileWriter(VideoSpec(mp4=str(out / f"{name}.mp4"), fps=float(motion.fps),
                                       png_dir=None if png_dir is None else str(png_dir)))
    try:
        for frame in pipeline.iter_frames(source, motion, options, chunk_size, keypoints=kp):
            writer.write(frame)
        mp4 = writer.close()["mp4"]
    except BaseException:
        writer.abort()
        raise
    npz, js = write_motion(motion_record(kp), out / f"{name}.motion", motion.fps, name)
    paths = {"mp4": Path(mp4), "motion_npz": npz, "motion_json": js}
    if png_dir is not None:
        paths["frames"] = png_dir
    return paths
