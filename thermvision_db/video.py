"""Decode and encode videos with one API over PyAV (default), decord and OpenCV.

`datasets.Video` in datasets 4/5 decodes only through torchcodec, which has no CPU build that works with
current CPU torch wheels. The project therefore decodes videos itself. All three backends return the same
RGB uint8 frames (bit-identical on H.264 in our tests), so users choose by what installs on their machine.

One rule for rotation metadata (a display matrix, as phones and `ffmpeg -display_rotation` write it): every
backend returns frames as players show them, rotated; `probe` reports the rotation and the displayed size.
OpenCV's own auto-rotation is switched off and the same rotation applied, so backends cannot disagree.
Frame counts are the frames a decoder returns: packets an MP4 edit list discards are not counted.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from thermvision_db.errors import ThermVisionError

VideoSource = Union[str, os.PathLike, bytes, BinaryIO]
BACKENDS = ("pyav", "decord", "opencv")


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts read from the container."""

    num_frames: int
    fps: float
    width: int  # as displayed (after rotation)
    height: int
    codec: str
    rotation: int = 0  # counter-clockwise degrees applied to every decoded frame: 0, 90, 180 or 270


class VideoError(ThermVisionError, ValueError):
    """A video that cannot be opened or decoded; the message names the video."""


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
        extra = {"pyav": "av", "decord": "thermvision-db[decord]", "opencv": "opencv-python-headless"}[backend]
        raise ImportError(f"video backend {backend!r} is not installed: pip install {extra}")
    return backend


def probe(source: VideoSource, name: str | None = None) -> VideoInfo:
    """Decodable frame count, fps, displayed size and rotation of the first video stream.

    The count comes from the demuxed packets, less those an edit list discards (the header's `nb_frames`
    counts those too); only the first frame is decoded, for its rotation.
    """
    import av

    label = name or _describe(source)
    try:
        with av.open(_as_file(source)) as container:
            if not container.streams.video:
                raise VideoError(f"{label} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            count, rotation = 0, None
            for packet in container.demux(stream):
                if packet.size and not packet.is_discard:
                    count += 1
                if rotation is None and packet.size:
                    for frame in packet.decode():
                        rotation = _quarter_turns(frame.rotation) * 90
                        break
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = stream.codec_context.name
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"{label} is not a readable video ({type(err).__name__}: {err}); truncated or damaged?") from err
    if count == 0 or rotation is None:
        raise VideoError(f"{label} holds no decodable frame; truncated or damaged?")
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(count, fps, width, height, codec, rotation)


def _quarter_turns(degrees: float | None) -> int:
    return round((degrees or 0) / 90) % 4


def _rotate(frame: np.ndarray, quarter_turns: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(frame, quarter_turns)) if quarter_turns else frame


def iter_frames(source: VideoSource, backend: str = "pyav", name: str | None = None) -> Iterator[np.ndarray]:
    """Yield every frame as an (H, W, 3) RGB uint8 array as displayed (rotation applied), sequentially."""
    _check_backend(backend)
    label = name or _describe(source)
    if backend == "pyav":
        import av

        try:
            with av.open(_as_file(source)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    yield _rotate(frame.to_ndarray(format="rgb24"), _quarter_turns(frame.rotation))
        except (av.error.FFmpegError, OSError, IndexError) as err:
            raise VideoError(f"{label} cannot be decoded ({type(err).__name__}: {err}); truncated or damaged?") from err
        return
    turns = probe(_reusable(source), name=label).rotation // 90
    if backend == "decord":
        import decord

        reader = decord.VideoReader(_as_file(source) if not isinstance(source, (str, os.PathLike)) else os.fspath(source))
        for i in range(len(reader)):
            yield _rotate(reader[i].asnumpy(), turns)
    else:
        for frame in _iter_opencv(source, label):
            yield _rotate(frame, turns)


def _reusable(source: VideoSource) -> VideoSource:
    """A file object is read twice (probe, then decode): rewind it."""
    if hasattr(source, "seek"):
        source.seek(0)
    return source


def _iter_opencv(source: VideoSource, label: str) -> Iterator[np.ndarray]:
    import tempfile

    import cv2

    tmp = None
    if not isinstance(source, (str, os.PathLike)):  # OpenCV reads only from paths
        data = source if isinstance(source, (bytes, bytearray)) else _reusable(source).read()
        tmp = tempfile.NamedTemporaryFile(suffix=".mp4", delete=False)
        tmp.write(data)
        tmp.close()
        source = tmp.name
    capture = cv2.VideoCapture(os.fspath(source))
    try:
        if not capture.isOpened():
            raise VideoError(f"OpenCV cannot open video {label}")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # rotation is applied by the caller, the same for all
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
        if tmp is not None:
            os.unlink(tmp.name)


def read_frames(source: VideoSource, indices: Sequence[int] | None = None, backend: str = "pyav",
                name: str | None = None) -> np.ndarray:
    """Decode the whole video, or only `indices`, into a (T, H, W, 3) uint8 array.

    Selected frames are taken during one sequential pass: seeking on long-GOP H.264 is slower than decoding
    (OpenCV's per-index seek is about 4x slower), and a pass keeps every backend bit-identical.
    """
    label = name or _describe(source)
    if indices is None:
        frames = list(iter_frames(source, backend, label))
        if not frames:
            raise VideoError(f"no frames could be decoded from {label}")
        return np.stack(frames)
    wanted = [int(i) for i in indices]
    if any(i < 0 for i in wanted):
        raise IndexError(f"negative frame index in {wanted}")
    targets = set(wanted)
    last = max(wanted, default=-1)
    got: dict[int, np.ndarray] = {}
    for i, frame in enumerate(iter_frames(source, backend, label)):
        if i in targets:
            got[i] = frame
        if i >= last:
            break
    missing = sorted(targets - got.keys())
    if missing:
        raise IndexError(f"{label} has no frame(s) {missing[:5]} (it has {len(got) and max(got) + 1} frames)")
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
