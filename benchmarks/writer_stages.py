"""The video writer's CPU time by stage, today's writer against the one before it, in the same run (postprocess.py).

The writer before raw-chunk PNGs is kept callable here as `LegacyVideoFileWriter`: it checks grayness with NumPy,
copies the channel out, encodes the PNG through OpenCV (`encode_png_opencv`, written straight to its name) and lets
libswscale turn each gray frame into yuv420p (`H264Writer(table_lookup=False)`). `same_files` is the proof that
both write the same files: PNG and MP4 bytes, and the decoded pixels of both.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from thermvision_db.io.encode import H264Writer, encode_png_opencv, gray_plane, is_gray
from thermvision_db.io.png import default_backend, encode_png, write_file
from thermvision_db.io.video_writer import VideoFileWriter, VideoSpec


class LegacyVideoFileWriter:
    """The video writer as it was before issue 25 (same settings, same files, the old path's CPU time)."""

    def __init__(self, spec: VideoSpec):
        start = time.process_time()
        self.spec, self.count = spec, 0
        if spec.png_dir is not None:
            Path(spec.png_dir).mkdir(parents=True, exist_ok=True)
        self.video = H264Writer(spec.mp4, fps=spec.fps, crf=spec.crf, codec=spec.codec, preset=spec.preset,
                                x264_params=spec.x264_params, gop=spec.gop, table_lookup=False)
        self.cpu_seconds = time.process_time() - start

    def write(self, frame: np.ndarray) -> None:
        start = time.process_time()
        if frame.ndim == 3 and is_gray(frame):
            frame = np.ascontiguousarray(frame[..., 0])
        if self.spec.png_dir is not None:
            Path(self.spec.png_dir, f"{self.count:05d}.png").write_bytes(encode_png_opencv(frame))
        self.video.write(frame)
        self.count += 1
        self.cpu_seconds += time.process_time() - start

    def close(self) -> dict:
        start = time.process_time()
        self.video.close()
        self.cpu_seconds += time.process_time() - start
        return {"mp4": self.spec.mp4, "frames": self.count, "cpu_seconds": self.cpu_seconds}


def write_sets(writer_class, sets: dict, folder: Path, png: bool = True, gop: int | None = None) -> float:
    """CPU-seconds of `writer_class` writing every set (full 3-channel gray frames, the same input for both
    writers: the writer before had no one-plane path)."""
    cpu = 0.0
    for name, frames in sets.items():
        writer = writer_class(VideoSpec(mp4=str(folder / f"{name}.mp4"), fps=30.0,
                                        png_dir=str(folder / f"{name}_frames") if png else None, gop=gop,
                                        frames_in_place=True))  # as the corpus writes them (the writer before
        # wrote each frame straight to its name too)
        for frame in frames:
            writer.write(np.repeat(frame[..., None], 3, axis=2))
        cpu += writer.close()["cpu_seconds"]
    return cpu


def same_files(new: Path, legacy: Path) -> dict:
    """Byte equality of every file, and pixel equality of every PNG (PIL) and of every MP4's decoded frames."""
    from PIL import Image

    from thermvision_db.io.decode import read_frames

    names = sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file())
    legacy_names = sorted(str(p.relative_to(legacy)) for p in legacy.rglob("*") if p.is_file())
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    pngs = [n for n in names if n.endswith(".png")]
    pixels = all(np.array_equal(np.asarray(Image.open(new / n)), np.asarray(Image.open(legacy / n))) for n in pngs)
    videos = [n for n in names if n.endswith(".mp4")]
    decoded = all(np.array_equal(read_frames(new / n), read_frames(legacy / n)) for n in videos)
    return {"same_names": names == legacy_names, "png_bytes": all(digest(new / n) == digest(legacy / n) for n in pngs),
            "mp4_bytes": all(digest(new / n) == digest(legacy / n) for n in videos), "png_pixels": pixels,
            "mp4_decoded_frames": decoded, "pngs": len(pngs), "videos": len(videos)}


def _timed(fn, items) -> tuple[float, list]:
    start = time.process_time()
    out = [fn(item) for item in items]
    return time.process_time() - start, out


def stage_costs(sets: dict, folder: Path, new_first: bool = False, gop: int | None = None) -> dict:
    """CPU-seconds of each stage over all frames, each stage alone (its inputs made beforehand), both writers
    (`new_first`: which of the two writes its files and video first)."""
    frames = [np.repeat(f[..., None], 3, axis=2) for fs in sets.values() for f in fs]
    stages = {}
    reused = [np.empty(frames[0].shape[:2], np.uint8) for _ in range(3)]  # the writer's own split buffers
    stages["new_gray_check"], _ = _timed(lambda f: gray_plane(f, reused), frames)
    planes = [np.ascontiguousarray(f[..., 0]) for f in frames]
    stages["legacy_gray_check"], _ = _timed(lambda f: np.ascontiguousarray(f[..., 0]) if is_gray(f) else f, frames)
    stages["new_png_encode"], data = _timed(lambda p: encode_png(p), planes)
    stages["new_png_encode_stdlib_zlib"], _ = _timed(lambda p: encode_png(p, "zlib"), planes)
    stages["legacy_png_encode"], legacy_data = _timed(encode_png_opencv, planes)
    (folder / "new").mkdir()
    (folder / "old").mkdir()
    files = {"legacy_png_files": lambda i: (folder / "old" / f"{i:05d}.png").write_bytes(legacy_data[i]),
             "new_png_files": lambda i: write_file(folder / "new" / f"{i:05d}.png", data[i], in_place=True)}
    for label in sorted(files, reverse=new_first):  # the second to write files pays more on this VM: take turns
        stages[label], _ = _timed(files[label], range(len(planes)))
    for label, lookup in sorted((("new_h264", True), ("legacy_h264", False)), reverse=not new_first):
        start = time.process_time()
        video = H264Writer(folder / f"{label}.mp4", fps=30.0, crf=VideoSpec.crf, preset=VideoSpec.preset,
                           x264_params=VideoSpec.x264_params, gop=gop, table_lookup=lookup)
        for plane in planes:
            video.write(plane)
        video.close()
        stages[label] = time.process_time() - start
    assert data == legacy_data, "the raw-chunk PNG bytes differ from OpenCV's"
    return {"deflate": default_backend(), **stages}


def stage_table(stages: dict, scale: float) -> list[str]:
    rows = [("gray check + plane", "gray_check"), ("PNG encode", "png_encode"), ("PNG files", "png_files"),
            ("H.264 (table / libswscale + x264)", "h264")]
    lines = ["  | stage | before | after | after/before |", "  |---|---|---|---|"]
    for label, key in rows:
        old, new = stages[f"legacy_{key}"] * scale, stages[f"new_{key}"] * scale
        lines.append(f"  | {label} | {old:.3f} | {new:.3f} | {new / max(old, 1e-9):.2f} |")
    old = sum(stages[f"legacy_{k}"] for _, k in rows) * scale
    new = sum(stages[f"new_{k}"] for _, k in rows) * scale
    lines.append(f"  | sum | {old:.3f} | {new:.3f} | {new / old:.2f} |")
    lines.append(f"  PNG encode with the standard library's zlib (no zlib-ng): "
                 f"{stages['new_png_encode_stdlib_zlib'] * scale:.3f}; deflate used: {stages['deflate']}")
    return lines


__all__ = ["LegacyVideoFileWriter", "VideoFileWriter", "same_files", "stage_costs", "stage_table", "write_sets"]
