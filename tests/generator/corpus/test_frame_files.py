"""PNG frames from raw chunks and gray frames fed to H.264 by a table: the same files as before, and the hostile list.

The judges: OpenCV's PNG writer (bytes), PIL, OpenCV, PyAV and the ffmpeg command line (pixels), libswscale's
own gray -> yuv420p conversion (the MP4's bytes). See docs/generator-hostile-inputs.md, "Frame and video files".
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import thermvision_db.io.png as png
from generator.corpus.writers import VideoSpec, WriterError, WriterPool
from thermvision_db.demo.miniature import face_box, render_thermal_face
from thermvision_db.errors import InputError
from thermvision_db.io.decode import read_frames
from thermvision_db.io.encode import H264Writer, encode_png_opencv, gray_to_yuv420p_table
from thermvision_db.io.video_writer import VideoFileWriter

REPO = Path(__file__).resolve().parents[3]
BACKENDS = ["zlib", *(["zlib-ng"] if png._zlib_ng is not None else [])]
NEW_OPENCV = hasattr(cv2, "IMWRITE_PNG_FILTER")  # OpenCV >= 4.11 takes the filter: the judge of the bytes


def _face(size: int, i: int = 0, n: int = 8) -> np.ndarray:
    return render_thermal_face(size, face_box(i, n, size, 1, 3), 3)  # (size, size, 3) gray


def _frames(seed: int = 0) -> list[np.ndarray]:
    """Gray and colour frames of awkward sizes: one row, one column, small windows, odd sizes, a 512 px face."""
    rng = np.random.default_rng(seed)
    shapes = [(1, 1), (1, 9), (9, 1), (2, 3), (7, 10), (61, 64), (88, 91), (100, 103), (33, 33, 3), (1, 5, 3),
              (64, 70, 3)]
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    frames += [rng.integers(0, 4, (40, 50), dtype=np.uint8) * 60, _face(96)[..., 0].copy(), _face(512)[..., 0].copy()]
    return frames


@pytest.mark.parametrize("backend", BACKENDS)
def test_png_pixels_are_those_of_every_reader(tmp_path, backend):
    import av

    for k, frame in enumerate(_frames()):
        path = tmp_path / f"{k}.png"
        png.write_png(path, frame, backend)
        with Image.open(path) as image:
            assert image.mode == ("L" if frame.ndim == 2 else "RGB")
            assert np.array_equal(np.asarray(image), frame)
        read = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(read if frame.ndim == 2 else read[..., ::-1], frame)
        with av.open(str(path)) as container:
            decoded = next(container.decode(video=0)).to_ndarray(format="gray" if frame.ndim == 2 else "rgb24")
        assert np.array_equal(decoded, frame)
        if shutil.which("ffmpeg"):
            raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                                  "gray" if frame.ndim == 2 else "rgb24", "-"], capture_output=True, check=True)
            assert raw.stdout == frame.tobytes()


def _libpng_version() -> tuple:
    found = re.search(r"PNG:.*\(ver ([\d.]+)\)", cv2.getBuildInformation())
    return tuple(int(v) for v in found.group(1).split(".")) if found else ()


@pytest.mark.skipif(not NEW_OPENCV, reason="OpenCV < 4.11 writes another filter: pixels only")
@pytest.mark.parametrize("backend", BACKENDS)
def test_png_bytes_are_opencvs(backend):
    """Byte for byte; a small image's window size (2 header bytes) follows libpng 1.6.59's rule, checked there."""
    for frame in _frames(1):
        if frame.size + frame.shape[0] > 16384 or _libpng_version() >= (1, 6, 59):
            assert png.encode_png(frame, backend) == encode_png_opencv(frame), frame.shape


def test_without_zlib_ng_the_standard_library_writes_the_same_file(monkeypatch, tmp_path):
    frame = _face(128)[..., 0].copy()
    fast = png.encode_png(frame)
    monkeypatch.setattr(png, "_zlib_ng", None)
    assert png.default_backend() == "zlib"
    assert png.encode_png(frame) == fast == png.encode_png(frame, "zlib")
    with pytest.raises(InputError, match="zlib-ng package is not installed"):
        png.encode_png(frame, "zlib-ng")
    with pytest.raises(InputError, match="unknown deflate backend 'gzip'"):
        png.encode_png(frame, "gzip")
    writer = VideoFileWriter(VideoSpec(mp4=str(tmp_path / "v.mp4"), fps=30.0, png_dir=str(tmp_path / "f")))
    writer.write(np.repeat(frame[..., None], 3, axis=2))
    writer.close()
    assert (tmp_path / "f" / "00000.png").read_bytes() == fast


@pytest.mark.parametrize("size", [(64, 64), (96, 128), (70, 66), (30, 50)])  # 70: height not a multiple of 4
def test_the_table_gives_the_mp4_of_libswscale_byte_for_byte(tmp_path, size):
    height, width = size
    frames = [_face(max(size), i)[:height, :width, 0].copy() for i in range(12)]
    frames.append(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8))  # every level, anywhere
    paths = []
    for lookup in (True, False):
        writer = H264Writer(tmp_path / f"{lookup}.mp4", preset=VideoSpec.preset, x264_params=VideoSpec.x264_params,
                            table_lookup=lookup)
        for frame in frames:
            writer.write(frame)
        assert (writer.gray_table is not False) == (lookup and height % 4 == 0)
        paths.append(writer.close())
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert np.array_equal(read_frames(paths[0]), read_frames(paths[1]))


def test_the_table_is_libswscales_conversion():
    import av

    table, chroma = gray_to_yuv420p_table(64, 48)
    frame = np.random.default_rng(2).integers(0, 256, (48, 64), dtype=np.uint8)
    reference = av.VideoFrame.from_ndarray(frame, format="gray").reformat(64, 48, "yuv420p").to_ndarray()
    assert np.array_equal(reference[:48], table[frame]) and (reference[48:] == chroma).all()
    assert gray_to_yuv420p_table(64, 50) is None and gray_to_yuv420p_table(63, 48) is None


def test_a_frame_buffer_still_referred_to_is_never_overwritten(tmp_path):
    writer = H264Writer(tmp_path / "v.mp4", preset="ultrafast")
    frames = [_face(64, i)[..., 0].copy() for i in range(4)]
    writer.write(frames[0])
    kept = writer._buffer  # someone (an encoder, here the test) still holds the last frame's buffer
    before = kept.copy()
    writer.write(frames[1])
    assert writer._buffer is not kept and np.array_equal(kept, before)
    del kept
    address = writer._buffer.ctypes.data  # no reference kept this time
    writer.write(frames[2])
    assert writer._buffer.ctypes.data == address  # nothing else refers to it: reused
    writer.close()


# ---------------------------------------------------------------------------------------------- hostile list


def _full_disk_after(monkeypatch, limit: int, name_end: str = ".png.partial"):
    """os.write that lets a file whose name ends in `name_end` (a frame's temporary file) grow to `limit` bytes,
    then fails like a full disk."""
    real = os.write

    def write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(name_end):
            return real(fd, data)
        data = memoryview(data).cast("B")
        room = limit - os.fstat(fd).st_size
        if len(data) <= room:
            return real(fd, data)
        if room > 0:
            real(fd, data[:room])  # half a frame reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", write)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to tell the frame's descriptor")
def test_a_full_disk_mid_frame_leaves_no_half_frame(tmp_path, monkeypatch):
    frames = [_face(64, i) for i in range(3)]
    folder = tmp_path / "v_frames"
    with WriterPool(0) as pool:
        job = pool.open(VideoSpec(mp4=str(tmp_path / "v.mp4"), fps=30.0, png_dir=str(folder)))
        job.write(frames[0])
        _full_disk_after(monkeypatch, 100)  # the second frame stops after 100 bytes
        with pytest.raises(WriterError, match=r"cannot write PNG frame 00001\.png in folder .*v_frames: No space") \
                as caught:
            job.write(frames[1])
    assert caught.value.errno == errno.ENOSPC  # still recognisable as a full disk
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png"]  # no half frame, no temporary file
    assert not (tmp_path / "v.mp4").exists() and not (tmp_path / ".v.mp4.partial").exists()


KILLED_MID_FRAME = """
import os, signal, sys
import numpy as np
from thermvision_db.io.video_writer import VideoFileWriter, VideoSpec
real = os.write
def write(fd, data):
    if os.readlink(f"/proc/self/fd/{fd}").endswith("00002.png.partial"):
        real(fd, bytes(memoryview(data)[:50]))
        os.kill(os.getpid(), signal.SIGKILL)  # killed half-way through the third frame
    return real(fd, data)
os.write = write
writer = VideoFileWriter(VideoSpec(mp4=sys.argv[1] + "/v.mp4", fps=30.0, png_dir=sys.argv[1] + "/f"))
for i in range(5):
    writer.write(np.full((32, 32, 3), 10 * i, np.uint8))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to tell the frame's descriptor")
def test_a_kill_mid_frame_leaves_only_temporary_names(tmp_path):
    result = subprocess.run([sys.executable, "-c", KILLED_MID_FRAME, str(tmp_path)], timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [".00002.png.partial", "00000.png", "00001.png"]
    for i in (0, 1):  # every file under a frame's name is whole
        assert np.array_equal(np.asarray(Image.open(tmp_path / "f" / f"0000{i}.png")), np.full((32, 32), 10 * i))
    assert not (tmp_path / "v.mp4").exists()  # the video only ever under its temporary name
    # the corpus redoes such an identity from scratch: test_pipeline.py::test_killed_run_restarts_to_the_same_corpus


def test_a_read_only_folder_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    frame = _face(32)
    if os.geteuid() != 0:  # root writes anywhere: there the refusal is the file system's, simulated below
        folder.chmod(0o555)
        try:
            with pytest.raises(PermissionError, match=f"in folder {folder}"):
                png.write_png(folder / "00000.png", frame[..., 0])
        finally:
            folder.chmod(0o755)
    _read_only(monkeypatch, folder)
    writer = VideoFileWriter(VideoSpec(mp4=str(tmp_path / "v.mp4"), fps=30.0, png_dir=str(folder)))
    with pytest.raises(OSError, match=f"cannot write PNG frame 00000.png in folder {folder}: Read-only") as caught:
        writer.write(frame)
    writer.abort()
    assert caught.value.errno == errno.EROFS and list(folder.iterdir()) == []


def _read_only(monkeypatch, folder: Path) -> None:
    """os.open refuses every path under `folder` as a read-only file system does."""
    real = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", read_only)


def _planted(tmp_path: Path, leftover: str, link: str) -> tuple[Path, Path, list]:
    """A frame folder holding a killed run's half file at `leftover` and a link to a file outside at `link`;
    the folder, the outside file and two gray frames to write."""
    folder = tmp_path / "frames"
    folder.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("keep me")
    (folder / leftover).write_bytes(b"half a frame from a killed run")
    (folder / link).symlink_to(outside)
    return folder, outside, [_face(32, i)[..., 0].copy() for i in range(2)]


def test_a_leftover_or_a_link_at_a_temporary_name_is_replaced_never_followed(tmp_path):
    folder, outside, frames = _planted(tmp_path, ".00000.png.partial", ".00001.png.partial")
    for i, frame in enumerate(frames):
        png.write_png(folder / f"{i:05d}.png", frame)
        assert np.array_equal(np.asarray(Image.open(folder / f"{i:05d}.png")), frame)
    assert outside.read_text() == "keep me" and sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png"]
    (tmp_path / ".v.mp4.partial").symlink_to(outside)  # the same for the video's temporary name
    writer = VideoFileWriter(VideoSpec(mp4=str(tmp_path / "v.mp4"), fps=30.0))
    writer.write(frames[0])
    writer.close()
    assert outside.read_text() == "keep me" and read_frames(tmp_path / "v.mp4").shape == (1, 32, 32, 3)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((32, 32, 3), np.float32), r"frame 1: frames must be \(H, W, 3\) or \(H, W\) uint8, got \(32, 32, 3\) "
                                        r"float32 \(.*v\.mp4\)"),
    (np.zeros((32, 32, 4), np.uint8), r"frame 1: .*got \(32, 32, 4\) uint8"),
    (np.zeros(32, np.uint8), r"frame 1: .*got \(32,\) uint8"),
    (np.zeros((0, 32), np.uint8), r"frame 1: .*got \(0, 32\) uint8"),
    (np.zeros((16, 32, 3), np.uint8), r"frame 1 is 32x16, the video 32x32 \(.*v\.mp4\)"),
])
def test_a_bad_frame_is_one_clear_error_and_writes_nothing(tmp_path, bad, message):
    writer = VideoFileWriter(VideoSpec(mp4=str(tmp_path / "v.mp4"), fps=30.0, png_dir=str(tmp_path / "f")))
    writer.write(_face(32))
    with pytest.raises(InputError, match=message) as caught:
        writer.write(bad)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["00000.png"] and writer.count == 1
    writer.abort()
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*partial"))


# ------------------------------------------------------------- frames written in place (a folder renamed whole)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to tell the frame's descriptor")
def test_in_place_frames_are_the_same_bytes_and_a_full_disk_leaves_no_half_frame(tmp_path, monkeypatch):
    frames = [_face(64, i) for i in range(3)]
    for label, in_place in (("renamed", False), ("in_place", True)):
        writer = VideoFileWriter(VideoSpec(mp4=str(tmp_path / f"{label}.mp4"), fps=30.0,
                                           png_dir=str(tmp_path / label), frames_in_place=in_place))
        for frame in frames:
            writer.write(frame)
        writer.close()
    assert sorted(p.name for p in (tmp_path / "in_place").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert all((tmp_path / "in_place" / n).read_bytes() == (tmp_path / "renamed" / n).read_bytes()
               for n in ("00000.png", "00001.png", "00002.png"))
    folder = tmp_path / "full"
    with WriterPool(0) as pool:
        job = pool.open(VideoSpec(mp4=str(tmp_path / "v.mp4"), fps=30.0, png_dir=str(folder), frames_in_place=True))
        job.write(frames[0])
        _full_disk_after(monkeypatch, 100, name_end="00001.png")  # the second frame stops after 100 bytes
        with pytest.raises(WriterError, match=r"cannot write PNG frame 00001\.png in folder .*full: No space") as caught:
            job.write(frames[1])
    assert caught.value.errno == errno.ENOSPC
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png"]  # what was written of frame 1 is removed


def test_in_place_a_leftover_or_a_link_at_a_frame_name_is_replaced_never_followed(tmp_path):
    folder, outside, frames = _planted(tmp_path, "00000.png", "00001.png")
    for i, frame in enumerate(frames):
        png.write_png(folder / f"{i:05d}.png", frame, in_place=True)
        assert np.array_equal(np.asarray(Image.open(folder / f"{i:05d}.png")), frame)
    assert outside.read_text() == "keep me" and not (folder / "00001.png").is_symlink()
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png"]


def test_in_place_a_read_only_folder_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    _read_only(monkeypatch, folder)
    with pytest.raises(OSError, match=f"cannot write PNG frame 00000.png in folder {folder}: Read-only") as caught:
        png.write_png(folder / "00000.png", _face(32)[..., 0], in_place=True)
    assert caught.value.errno == errno.EROFS and list(folder.iterdir()) == []
