"""The one writer of a video's files: lossless PNG frames (one channel when gray) and the H.264 MP4, in order.

The corpus writer's processes and `generate --stage animate` both write through `VideoFileWriter`, so the two
stages give the same files for the same frames.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSpec:
    """One video to write: its MP4, the folder of its lossless PNG frames (None: MP4 only), the encoder."""

    mp4: str
    fps: float
    png_dir: str | None = None
    codec: str = "libx264"
    crf: int = 18
    # x264 at crf 18: 'ultrafast' with CABAC, macroblock-tree rate control (10-frame lookahead), deblocking and
    # adaptive quantisation put back: measured 7-8x faster than 'medium' on 512 px thermal faces, PSNR 0.2-0.5 dB
    # lower, files about as small (see benchmarks/postprocess.py)
    preset: str = "ultrafast"
    x264_params: str = "cabac=1:mbtree=1:rc-lookahead=10:deblock=1:aq-mode=1"
    gop: int | None = None  # at most this many frames between keyframes (None: the encoder's default)
    deflate: str | None = None  # PNG deflate: 'zlib-ng', 'zlib' (standard library); None: zlib-ng when installed
    # True when `png_dir` lies in a folder renamed whole once complete (the corpus's temporary identity folder):
    # each frame is written under its own name, without a temporary name and a rename of its own
    frames_in_place: bool = False


class VideoFileWriter:
    """Writes one video's frames, in order, in the calling process: PNG (when asked) then the H.264 encoder."""

    def __init__(self, spec: VideoSpec):
        from thermvision_db.io.encode import H264Writer

        self.spec = spec
        self.count = 0
        self.gray = True
        self.size: tuple[int, int] | None = None
        self.planes: list | None = None
        self.cpu_seconds = 0.0
        self.current = spec.mp4
        start = time.process_time()
        if spec.png_dir is not None:
            Path(spec.png_dir).mkdir(parents=True, exist_ok=True)
        self.codec = spec.codec
        self.video = H264Writer(spec.mp4, fps=spec.fps, crf=spec.crf, codec=spec.codec, preset=spec.preset,
                                x264_params=spec.x264_params, gop=spec.gop)
        self.cpu_seconds += time.process_time() - start

    def _encode_first(self, frame: np.ndarray) -> None:
        """The encoder opens on the first frame. NVENC can refuse there (a GPU's concurrent-session limit, a busy
        or lost device): that video then falls back to x264, and its result names the encoder used."""
        from thermvision_db.io.encode import H264Writer

        try:
            self.video.write(frame)
        except Exception as err:
            if self.codec != "h264_nvenc":
                raise
            log.warning("h264_nvenc could not open for %s (%s); writing it with libx264", self.spec.mp4, err)
            self.video.abort()
            self.codec = "libx264"
            self.video = H264Writer(self.spec.mp4, fps=self.spec.fps, crf=self.spec.crf, codec=self.codec,
                                    preset=self.spec.preset, x264_params=self.spec.x264_params, gop=self.spec.gop)
            self.video.write(frame)

    def write(self, frame: np.ndarray) -> None:
        """One (H, W) or (H, W, 3) uint8 frame: checked first (nothing is written for a bad one), then its PNG (one
        channel when gray, through a temporary name unless `frames_in_place`) and the encoder, both fed the same
        C-contiguous plane."""
        from thermvision_db.errors import InputError
        from thermvision_db.io.encode import gray_plane
        from thermvision_db.io.png import check_frame, write_png

        start = time.process_time()
        try:
            frame = check_frame(frame)
        except InputError as err:
            raise InputError(f"frame {self.count}: {err} ({self.spec.mp4})") from None
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            raise InputError(f"frame {self.count} is {frame.shape[1]}x{frame.shape[0]}, the video "
                             f"{self.size[1]}x{self.size[0]} ({self.spec.mp4})")
        if self.planes is None and frame.ndim == 3:
            self.planes = [np.empty(frame.shape[:2], np.uint8) for _ in range(3)]
        gray = gray_plane(frame, self.planes)  # checked once: both writers then take the one channel (reused
        # buffers: the PNG and the encoder are done with this frame's plane when write() returns)
        image = gray if gray is not None else np.ascontiguousarray(frame)
        self.gray = self.gray and gray is not None
        if self.spec.png_dir is not None:
            self.current = os.path.join(self.spec.png_dir, f"{self.count:05d}.png")
            write_png(self.current, image, self.spec.deflate, in_place=self.spec.frames_in_place)
        self.current = self.spec.mp4
        if self.count == 0:
            self._encode_first(image)
        else:
            self.video.write(image)
        self.count += 1
        self.cpu_seconds += time.process_time() - start

    def close(self) -> dict:
        start = time.process_time()
        self.current = self.spec.mp4
        self.video.close()
        self.cpu_seconds += time.process_time() - start
        return {"mp4": self.spec.mp4, "frames": self.count, "gray": self.gray, "codec": self.codec,
                "cpu_seconds": self.cpu_seconds}

    def abort(self) -> None:
        self.video.abort()
