"""The writer pool and the frame/video writers: same bytes as inline, errors named, gray frames stored small."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generator.corpus.writers import VideoSpec, WriterError, WriterPool, default_writer_processes
from thermvision_db.demo.miniature import face_box, render_thermal_face
from thermvision_db.io.decode import read_frames
from thermvision_db.io.encode import choose_h264_encoder, encode_png, nvenc_usable, write_mp4

REPO = Path(__file__).resolve().parents[3]


def _faces(n: int, size: int = 64, subject: int = 3) -> list[np.ndarray]:
    """Thermal-face frames (3-channel gray) that sway like a head-pose video."""
    return [render_thermal_face(size, face_box(i, n, size, 1, subject), subject) for i in range(n)]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _write_interleaved(pool: WriterPool, root: Path, videos: list[list[np.ndarray]]) -> list[dict]:
    """Frames of several videos handed over alternately, as the pipeline does across identities."""
    jobs = [pool.open(VideoSpec(mp4=str(root / f"v{k}.mp4"), fps=30.0, png_dir=str(root / f"v{k}_frames")))
            for k in range(len(videos))]
    for i in range(max(len(v) for v in videos)):
        for job, frames in zip(jobs, videos):
            if i < len(frames):
                job.write(frames[i])
    for job in jobs:
        job.close()
    return [job.result(timeout=120) for job in jobs]


def test_pool_writes_the_same_bytes_as_inline(tmp_path):
    rng = np.random.default_rng(0)
    colour = [np.clip(f.astype(int) + rng.integers(-20, 20, f.shape), 0, 255).astype(np.uint8) for f in _faces(7)]
    videos = [_faces(12), colour, _faces(5, subject=8)]
    with WriterPool(0) as inline:
        expected = _write_interleaved(inline, tmp_path / "inline", videos)
    with WriterPool(2, queue_frames=2) as pool:
        got = _write_interleaved(pool, tmp_path / "pool", videos)
    assert _tree(tmp_path / "inline") == _tree(tmp_path / "pool")
    assert len(_tree(tmp_path / "pool")) == 3 + 12 + 7 + 5
    assert [(r["frames"], r["gray"]) for r in got] == [(12, True), (7, False), (5, True)]
    assert [(r["frames"], r["gray"]) for r in expected] == [(12, True), (7, False), (5, True)]
    assert pool.cpu_seconds > 0 and inline.cpu_seconds > 0
    decoded = read_frames(tmp_path / "pool" / "v0.mp4")  # the video holds the frames, up to H.264 loss
    assert decoded.shape == (12, 64, 64, 3) and np.abs(decoded.astype(int) - np.stack(videos[0])).mean() < 4


def test_gray_views_travel_as_one_plane_and_write_the_same_files(tmp_path, monkeypatch):
    """The animator's gray frames are (H, W, 3) views of one plane (channel stride 0): the job hands the writer
    process that plane, and every PNG and MP4 byte is what the same frames give as full 3-channel arrays."""
    from generator.corpus import writers
    from thermvision_db.io.encode import gray_plane, is_gray, shared_channels

    planes = [f[..., 0].copy() for f in _faces(9, size=48)]
    views = [np.broadcast_to(p[..., None], p.shape + (3,)) for p in planes]
    full = [np.repeat(p[..., None], 3, axis=2) for p in planes]
    assert all(shared_channels(v) and not v.flags.writeable for v in views) and not any(map(shared_channels, full))
    assert all(np.array_equal(gray_plane(v), p) and gray_plane(v).flags.c_contiguous for v, p in zip(views, planes))
    assert all(is_gray(v) for v in views) and not is_gray(np.dstack([planes[0], planes[0], planes[0] ^ 1]))
    sent = []
    original = writers.WriterPool._write
    monkeypatch.setattr(writers.WriterPool, "_write", lambda pool, job, frame: (sent.append(frame.shape),
                                                                               original(pool, job, frame)))
    with WriterPool(1, queue_frames=3) as pool:
        _write_interleaved(pool, tmp_path / "views", [views])
    assert sent == [(48, 48)] * 9  # one plane per frame crossed to the writer process
    with WriterPool(1, queue_frames=3) as pool:
        _write_interleaved(pool, tmp_path / "full", [full])
    assert sent[9:] == [(48, 48, 3)] * 9
    assert _tree(tmp_path / "views") == _tree(tmp_path / "full") and len(_tree(tmp_path / "full")) == 10


def test_gray_frames_are_one_channel_png_and_read_back_as_the_same_rgb(tmp_path):
    gray = _faces(1, size=96)[0]
    data = encode_png(gray)
    (tmp_path / "g.png").write_bytes(data)
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode == "L" and image.size == (96, 96)
        assert np.array_equal(np.asarray(image.convert("RGB")), gray)
    colour = gray.copy()
    colour[10:20, 30:40] = [250, 10, 90]  # one coloured patch: three channels, in RGB order
    (tmp_path / "c.png").write_bytes(encode_png(colour))
    with Image.open(tmp_path / "c.png") as image:
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), colour)
    legacy = tmp_path / "pil.png"  # today's 3-channel PIL file of the same gray frame is larger
    Image.fromarray(gray).save(legacy, compress_level=6)
    assert len(data) < legacy.stat().st_size
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(H, W\) uint8"):
        encode_png(gray.astype(np.float32))


def test_gray_rows_load_as_rgb(tmp_path):
    """The `frames` schema decodes a 1-channel generated PNG to the RGB image a 3-channel file would give."""
    import datasets

    from thermvision_db.schema.features import frame_features

    gray = _faces(1, size=48)[0]
    (tmp_path / "f.png").write_bytes(encode_png(gray))
    image = frame_features(["S000000"])["image"].decode_example({"path": str(tmp_path / "f.png"), "bytes": None})
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), gray)
    assert isinstance(frame_features(["S000000"])["image"], datasets.Image)


def test_a_failing_writer_names_the_file_in_the_main_process(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    frame = _faces(1)[0]
    with WriterPool(1) as pool:
        job = pool.open(VideoSpec(mp4=str(tmp_path / "a.mp4"), fps=30.0, png_dir=str(blocker / "frames")))
        job.write(frame)
        job.close()
        with pytest.raises(WriterError, match="not_a_folder/frames") as caught:
            job.result(timeout=60)
        assert caught.value.errno == errno.ENOTDIR  # the cause's errno survives the process boundary
        bad = pool.open(VideoSpec(mp4=str(tmp_path / "b.mp4"), fps=30.0))
        bad.write(frame)
        bad.write(frame[:32])  # a frame of another size, mid-video
        bad.close()
        with pytest.raises(WriterError, match=r"b\.mp4.*frame 1 is 64x32"):
            bad.result(timeout=60)
        good = pool.open(VideoSpec(mp4=str(tmp_path / "c.mp4"), fps=30.0))  # the pool goes on after a failure
        good.write(frame)
        good.close()
        assert good.result(timeout=60)["frames"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4", "not_a_folder"]  # no partial files left


def test_a_dead_writer_process_is_reported(tmp_path):
    frame = _faces(1)[0]
    with WriterPool(1) as pool:
        job = pool.open(VideoSpec(mp4=str(tmp_path / "a.mp4"), fps=30.0))
        job.write(frame)
        os.kill(pool._procs[0].pid, signal.SIGKILL)
        pool._procs[0].join(10)
        job.close()
        with pytest.raises(WriterError, match=r"writer process for .*a\.mp4 died"):
            job.result(timeout=60)


KILLED_PARENT = """
import sys, time
from generator.corpus.writers import WriterPool
pool = WriterPool(1)
print(pool._procs[0].pid, flush=True)
time.sleep(120)
"""


def test_writers_exit_when_the_main_process_is_killed():
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PARENT], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    writer = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")

    deadline = time.monotonic() + 20
    while running(writer) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(writer)


def test_encoder_choice():
    assert choose_h264_encoder("auto", nvenc_available=False) == "libx264"
    assert choose_h264_encoder("auto", nvenc_available=True) == "h264_nvenc"
    assert choose_h264_encoder("x264", nvenc_available=True) == "libx264"
    assert choose_h264_encoder("nvenc", nvenc_available=True) == "h264_nvenc"
    with pytest.raises(RuntimeError, match="h264_nvenc cannot open here"):
        choose_h264_encoder("nvenc", nvenc_available=False)
    with pytest.raises(ValueError, match="unknown video encoder 'hevc'"):
        choose_h264_encoder("hevc")


def test_the_automatic_encoder_writes_a_video_on_this_machine(tmp_path):
    """'auto' probes the real encoder: NVENC where a driver opens it, x264 elsewhere (this CPU machine)."""
    codec = choose_h264_encoder("auto")
    assert codec == ("h264_nvenc" if nvenc_usable() else "libx264")
    frames = _faces(6, size=128)
    path = write_mp4(tmp_path / "auto.mp4", frames, codec=codec, preset="veryfast")
    decoded = read_frames(path)
    assert decoded.shape == (6, 128, 128, 3) and np.abs(decoded.astype(int) - np.stack(frames)).mean() < 4


def test_writer_processes_follow_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert default_writer_processes({}) == max(1, min(4, cores - 1))
    assert default_writer_processes({"LOCAL_WORLD_SIZE": str(4 * cores)}) == 1  # many ranks per node: at least one
    with pytest.raises(ValueError, match="processes >= 0"):
        WriterPool(-1)


def test_abort_returns_only_when_the_writer_has_stopped_writing(tmp_path):
    """The pipeline removes an aborted identity's folder right after abort(): nothing may appear in it later."""
    frames = _faces(20, size=128)
    with WriterPool(1, queue_frames=32) as pool:
        job = pool.open(VideoSpec(mp4=str(tmp_path / "id" / "v.mp4"), fps=30.0, png_dir=str(tmp_path / "id" / "f")))
        for frame in frames:
            job.write(frame)  # still queued when the abort is sent
        job.abort()
        assert not (tmp_path / "id" / ".v.mp4.partial").exists() and not (tmp_path / "id" / "v.mp4").exists()
        import shutil

        shutil.rmtree(tmp_path / "id")
        time.sleep(1.0)
        assert not (tmp_path / "id").exists()
        after = pool.open(VideoSpec(mp4=str(tmp_path / "next.mp4"), fps=30.0))  # the process goes on
        after.write(frames[0])
        after.close()
        assert after.result(timeout=60)["frames"] == 1


def test_a_video_whose_nvenc_session_cannot_open_is_written_with_x264(tmp_path):
    """Where no driver opens h264_nvenc (this machine: the PyAV wheel lists it, there is no GPU) the video falls
    back to x264, byte for byte what x264 writes, and its result names the encoder actually used."""
    frames = _faces(6)
    with WriterPool(1) as pool:
        results = []
        for codec in ("h264_nvenc", "libx264"):
            job = pool.open(VideoSpec(mp4=str(tmp_path / f"{codec}.mp4"), fps=30.0, codec=codec))
            for frame in frames:
                job.write(frame)
            job.close()
            results.append(job.result(timeout=60))
    if nvenc_usable():  # a machine with NVENC writes the first video with it
        assert [r["codec"] for r in results] == ["h264_nvenc", "libx264"]
        assert read_frames(tmp_path / "h264_nvenc.mp4").shape == (6, 64, 64, 3)
    else:
        assert [r["codec"] for r in results] == ["libx264", "libx264"]
        assert (tmp_path / "h264_nvenc.mp4").read_bytes() == (tmp_path / "libx264.mp4").read_bytes()
