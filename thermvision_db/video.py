"""Decode and encode videos with one API over PyAV (default), decord and OpenCV.

`datasets.Video` in datasets 4/5 decodes only through torchcodec, which has no CPU build that works with
current CPU torch wheels. The project therefore decodes videos itself. All three backends return the same
RGB uint8 frames (bit-identical on H.264 in our tests), so users choose by what installs on their machine.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

VideoSource = Union[str, os.PathLike, bytes, BinaryIO]
BACKENDS = ("pyav", "decord", "opencv")


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts read from the container."""

    num_frames: int
    fps: float
    width: int
    height: int
    codec: str


def _as_file(source: VideoSource):
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source)
    if isinstance(source, os.PathLike):
        return os.fspath(source)
    return source


def available_backends() -> list[str]:
    """Backends that import on this machine, in order of preference."""
    found = []
    for name, module in (("pyav", "av"), ("decord", "decord"), ("opencv", "cv2")):
        try:
            __import__(module)
        except Exception:  # a broken binary wheel raises more than ImportError
            continue
        found.append(name)
    return found


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if backend not in available_backends():
        from thermvision_db.errors import MissingExtraError

        extra = {"pyav": "av", "decord": "'thermvision-db[decord]'", "opencv": "opencv-python-headless"}[backend]
        raise MissingExtraError(f"video backend {backend!r} is not installed: pip install {extra} "
                                "(or pip install -e '.[decord]' in a clone), or use video_backend='pyav'")
    return backend


def probe(source: VideoSource) -> VideoInfo:
    """Frame count, fps and size of the first video stream (counts frames if the header does not)."""
    import av

    with av.open(_as_file(source)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        n = stream.frames
        if not n:
            n = sum(1 for _ in container.demux(stream) if _.size)
        return VideoInfo(int(n), fps, stream.codec_context.width, stream.codec_context.height, stream.codec_context.name)


def iter_frames(source: VideoSource, backend: str = "pyav") -> Iterator[np.ndarray]:
    """Yield every frame as an (H, W, 3) RGB uint8 array, decoding sequentially (no seeking)."""
    _check_backend(backend)
    if backend == "pyav":
        import av

        with av.open(_as_file(source)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    elif backend == "decord":
        import decord

        reader = decord.VideoReader(_as_file(source) if not isinstance(source, (str, os.PathLike)) else os.fspath(source))
        for i in range(len(reader)):
            yield reader[i].asnumpy()
    else:
        yield from _iter_opencv(source)


def _iter_opencv(source: VideoSource) -> Iterator[np.ndarray]:
    import tempfile

    import cv2

    tmp = None
    if not isinstance(source, (str, os.PathLike)):  # OpenCV reads only from paths
        data = source if isinstance(source, (bytes, bytearray)) else source.read()
        tmp = tempfile.NamedTemporaryFile(suffix=".mp4", delete=False)
        tmp.write(data)
        tmp.close()
        source = tmp.name
    capture = cv2.VideoCapture(os.fspath(source))
    try:
        if not capture.isOpened():
            raise ValueError(f"OpenCV cannot open video {source}")
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
        if tmp is not None:
            os.unlink(tmp.name)


def read_frames(source: VideoSource, indices: Sequence[int] | None = None, backend: str = "pyav") -> np.ndarray:
    """Decode the whole video, or only `indices`, into a (T, H, W, 3) uint8 array.

    Selected frames are taken during one sequential pass: seeking on long-GOP H.264 is slower than decoding
    (OpenCV's per-index seek is about 4x slower), and a pass keeps every backend bit-identical.
    """
    if indices is None:
        frames = list(iter_frames(source, backend))
        if not frames:
            raise ValueError(f"no frames could be decoded from {_describe(source)}")
        return np.stack(frames)
    wanted = [int(i) for i in indices]
    if any(i < 0 for i in wanted):
        raise IndexError(f"negative frame index in {wanted}")
    targets = set(wanted)
    last = max(wanted, default=-1)
    got: dict[int, np.ndarray] = {}
    for i, frame in enumerate(iter_frames(source, backend)):
        if i in targets:
            got[i] = frame
        if i >= last:
            break
    missing = sorted(targets - got.keys())
    if missing:
        raise IndexError(f"{_describe(source)} has no frame(s) {missing[:5]} (it has {len(got) and max(got) + 1} frames)")
    return np.stack([got[i] for i in wanted]) if wanted else np.zeros((0, 0, 0, 3), np.uint8)


def _describe(source: VideoSource) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<in-memory video>"


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    crf: int = 18,
    codec: str = "libx264",
    threads: int = 1,
) -> Path:
    """Encode RGB uint8 frames as H.264 (yuv420p) through PyAV; written to a temp name, then renamed.

    OpenCV's pip wheels cannot encode H.264, so PyAV is the project's only encoder. One encoder thread by
    default: multi-threaded x264 output differs from run to run, and a corpus must be byte-reproducible.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = np.asarray(frame)
                if frame.ndim == 2:
                    frame = np.repeat(frame[..., None], 3, axis=2)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
                if stream is None:
                    options = {}
                    if codec == "libx264":
                        options = {"crf": str(crf), "preset": "medium", "x264-params": f"threads={threads}:lookahead-threads=1"}
                    stream = container.add_stream(codec, rate=rate, options=options)
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "yuv420p"
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = count  # explicit timestamps: encoder output is then byte-reproducible
                for packet in stream.encode(video_frame):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise ValueError("no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
