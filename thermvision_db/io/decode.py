"""Decode videos with one API over PyAV (default), decord and OpenCV (encoding: `io.encode`, `io.video_writer`).

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
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np

from thermvision_db.errors import InputError, ThermVisionError

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


def torchcodec_problem() -> str | None:
    """Why `datasets.Video` cannot decode here (torchcodec missing, or a wheel whose libraries do not load: the CPU
    wheels on PyPI need CUDA's libnvrtc), in one line; None when torchcodec imports with its decoder."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as err:  # a broken binary wheel raises OSError or RuntimeError, not only ImportError
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0] if text else 'no message'}"
    return None


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if backend not in available_backends():
        from thermvision_db.errors import MissingExtraError

        extra = {"pyav": "av", "decord": "'thermvision-db[decord]'", "opencv": "opencv-python-headless"}[backend]
        raise MissingExtraError(f"video backend {backend!r} is not installed: pip install {extra} "
                                "(or pip install -e '.[decord]' in a clone), or use video_backend='pyav'")
    return backend


_PROBED: OrderedDict[tuple, VideoInfo] = OrderedDict()  # (path, inode, size, mtime_ns) -> info; LRU
_PROBED_MAX = 4096
_PROBED_LOCK = threading.Lock()


def probe(source: VideoSource, name: str | None = None) -> VideoInfo:
    """Decodable frame count, fps, displayed size and rotation of the first video stream.

    The count comes from the demuxed packets, less those an edit list discards (the header's `nb_frames`
    counts those too); only the first frame is decoded, for its rotation. A file on disk is probed once per
    process while its inode, size and modification time stay the same: every epoch of a streamed corpus
    would otherwise open each video and decode its first frame again (a sizeable share of a short video's rows).
    """
    if not isinstance(source, (str, os.PathLike)):
        return _probe(source, name)
    try:
        stat = os.stat(source)
    except OSError:
        return _probe(source, name)  # names the file and the cause
    key = (os.fspath(source), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _PROBED_LOCK:
        info = _PROBED.get(key)
        if info is not None:
            _PROBED.move_to_end(key)
            return info
    info = _probe(source, name)
    with _PROBED_LOCK:
        _PROBED[key] = info
        while len(_PROBED) > _PROBED_MAX:
            _PROBED.popitem(last=False)
    return info


def _probe(source: VideoSource, name: str | None) -> VideoInfo:
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
                if rotation is None:  # the decoder may hold frames back: the final empty packet flushes it
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

    With PyAV, selected frames are reached by seeking to the keyframe before each of them and decoding forward
    (`seek_frames`): a clip costs about its own frames times the GOP, not the video up to its last frame. The
    other backends take them during one sequential pass. Either way the frames equal a full decode's.
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
    if not wanted:
        return np.zeros((0, 0, 0, 3), np.uint8)
    if _check_backend(backend) == "pyav":
        got, count = _seek_frames(source, wanted, label)
    else:
        got, count = _sequential(iter_frames(source, backend, label), set(wanted))
    missing = sorted(set(wanted) - got.keys())
    if missing:
        raise IndexError(f"{label} has no frame(s) {missing[:5]} (it has {count} frames)")
    return np.stack([got[i] for i in wanted])


def _sequential(frames: Iterator[np.ndarray], targets: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """The frames at `targets` from one pass that stops after the last of them, and the frames seen."""
    got: dict[int, np.ndarray] = {}
    last = max(targets, default=-1)
    count = 0
    for i, frame in enumerate(frames):
        count = i + 1
        if i in targets:
            got[i] = frame
        if i >= last:
            break
    return got, count


@dataclass(frozen=True)
class _PacketIndex:
    """Where each displayed frame sits: its pts (in display order) and the keyframes to seek to."""

    frame_pts: tuple[int, ...]  # pts of displayed frame i (packets an edit list discards are left out)
    keyframe_pts: tuple[int, ...]  # sorted pts of every keyframe, discarded ones too (they are decodable)
    keyframe_dts: tuple[int, ...]  # the same keyframes' dts (MP4 seeks by decode time)


_INDEX_CACHE: dict = {}
_INDEX_CACHE_SIZE = 64


def _packet_index(source: VideoSource, label: str) -> _PacketIndex | None:
    """Demux (no decoding) once per file version; None when timestamps cannot place frames (then: a pass)."""
    key = None
    if isinstance(source, (str, os.PathLike)):
        st = os.stat(source)
        key = (os.fspath(source), st.st_ino, st.st_size, st.st_mtime_ns)
        if key in _INDEX_CACHE:
            return _INDEX_CACHE[key]
    import av

    shown, keys = [], []
    with av.open(_as_file(source)) as container:
        if not container.streams.video:
            raise VideoError(f"{label} has no video stream")
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None or packet.dts is None:
                return None
            if not packet.is_discard:
                shown.append(packet.pts)
            if packet.is_keyframe:
                keys.append((packet.pts, packet.dts))
    if not keys or len(set(shown)) != len(shown):
        index = None
    else:
        keys.sort()
        index = _PacketIndex(tuple(sorted(shown)), tuple(k[0] for k in keys), tuple(k[1] for k in keys))
    if key is not None:
        if len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        _INDEX_CACHE[key] = index
    return index


def seek_frames(source: VideoSource, wanted: Sequence[int], name: str | None = None) -> dict[int, np.ndarray]:
    """{index: frame} for the displayed frames `wanted` (those the video has), decoding from the keyframe before
    each run of them.

    A frame is taken only from a decode that started at a keyframe whose pts is at or before it, so open GOPs and
    B-frames give the same pixels as a full pass; when the container's timestamps cannot place a frame (no pts,
    duplicates, a seek that lands elsewhere), the rest is read in one sequential pass instead.
    """
    return _seek_frames(source, wanted, name or _describe(source))[0]


def _seek_frames(source: VideoSource, wanted: Sequence[int], label: str) -> tuple[dict[int, np.ndarray], int]:
    import bisect

    import av

    def one_pass(targets) -> tuple[dict[int, np.ndarray], int]:
        return _sequential(iter_frames(_reusable(source), "pyav", label), set(targets))

    try:
        index = _packet_index(_reusable(source), label)
        if index is None:
            return one_pass(wanted)
        count = len(index.frame_pts)
        targets = sorted({i for i in wanted if i < count})
        got: dict[int, np.ndarray] = {}
        by_pts = {index.frame_pts[i]: i for i in targets}
        with av.open(_as_file(_reusable(source))) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"  # frame threads would decode frames past the last one wanted
            pos = 0
            while pos < len(targets):
                k = bisect.bisect_right(index.keyframe_pts, index.frame_pts[targets[pos]]) - 1
                run_end = pos  # the targets one decode from keyframe k reaches before a later keyframe
                while run_end + 1 < len(targets) and bisect.bisect_right(
                        index.keyframe_pts, index.frame_pts[targets[run_end + 1]]) - 1 == k:
                    run_end += 1
                if k < 0:
                    return {**got, **one_pass(t for t in targets if t not in got)[0]}, count
                container.seek(index.keyframe_dts[k], backward=True, any_frame=False, stream=stream)
                if not _decode_run(container, stream, index.keyframe_pts[k], index.frame_pts[targets[run_end]],
                                   by_pts, got):  # the seek landed past the keyframe: one pass for the rest
                    return {**got, **one_pass(t for t in targets if t not in got)[0]}, count
                pos = run_end + 1
        return got, count
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{label} cannot be decoded ({type(err).__name__}: {err}); truncated or damaged?") from err


def _decode_run(container, stream, start: int, last: int, by_pts: dict, got: dict) -> bool:
    """Decode from the current seek position until the frame at pts `last`; False if the decode did not begin
    at or before `start` (so frames before `last` may have been skipped)."""
    first = None
    for packet in container.demux(stream):
        for frame in packet.decode():
            if frame.pts is None:
                return False
            if first is None:
                first = frame.pts
                if first > start:
                    return False
            if frame.pts >= start and frame.pts in by_pts:
                got[by_pts[frame.pts]] = _rotate(frame.to_ndarray(format="rgb24"), _quarter_turns(frame.rotation))
            if frame.pts >= last:
                return True
    return False  # the stream ended before `last`


def _describe(source: VideoSource) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<in-memory video>"
