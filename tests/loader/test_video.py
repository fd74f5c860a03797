import numpy as np
import pytest

from thermvision_db.io.decode import available_backends, probe, read_frames
from thermvision_db.io.encode import write_mp4


def _frames(n=10, size=48):
    yy, xx = np.mgrid[0:size, 0:size]
    noise = np.random.default_rng(3).normal(0, 2, (size, size))
    gray = [np.clip(120 + 80 * np.sin((xx + 3 * i) / 6) * np.cos(yy / 9) + noise, 0, 255).astype(np.uint8) for i in range(n)]
    return [np.repeat(g[..., None], 3, axis=2) for g in gray]


def test_write_is_byte_reproducible_and_probe_reads_it_back(tmp_path):
    frames = _frames()
    a = write_mp4(tmp_path / "a.mp4", frames, fps=25)
    b = write_mp4(tmp_path / "b.mp4", frames, fps=25)
    assert a.read_bytes() == b.read_bytes()
    info = probe(a)
    assert (info.num_frames, info.width, info.height, info.codec) == (10, 48, 48, "h264")
    assert info.fps == pytest.approx(25)
    decoded = read_frames(a)
    assert decoded.shape == (10, 48, 48, 3)
    assert np.abs(decoded.astype(int) - np.stack(frames)).mean() < 4  # lossy, but the same pictures
    assert not list(tmp_path.glob(".*partial"))


def test_backends_agree_and_bytes_equal_paths(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", _frames(), fps=30)
    reference = read_frames(path)
    assert np.array_equal(read_frames(path.read_bytes()), reference)
    for backend in available_backends():
        assert np.array_equal(read_frames(path, backend=backend), reference), backend
    assert np.array_equal(read_frames(path, [7, 2, 7]), reference[[7, 2, 7]])


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "y.mp4", [])
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob(".*partial"))
    path = write_mp4(tmp_path / "v.mp4", _frames(4))
    with pytest.raises(IndexError, match=r"\[9\]"):
        read_frames(path, [1, 9])
    with pytest.raises(ValueError, match="unknown video backend"):
        read_frames(path, backend="ffmpeg")
