"""Frames picked by seeking equal the same frames of a full decode, whatever wrote the MP4.

The judge is PyAV's own sequential decode of the whole file (`iter_frames`). Inputs: the project's writer at
several GOPs, and files made by the ffmpeg command line (B-frames, open GOP, MPEG-4 Part 2), by PyAV with a
display matrix and an edit list (as phones and `ffmpeg -ss ... -c copy` write them).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.loader.test_hostile_sources import _encode
from thermvision_db.io import decode
from thermvision_db.io.encode import write_mp4
from thermvision_db.io.video_writer import VideoSpec

NUM_FRAMES = 40


def _frames(n=NUM_FRAMES, size=48, seed=0):
    """A moving gradient with noise: every frame differs, so a wrong frame cannot pass for the right one."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    return [np.clip((x * 3 + y + t * 5) % 256 + rng.integers(-8, 8, (size, size)), 0, 255).astype(np.uint8)
            for t in range(n)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """name -> (path, full decode) for every kind of file tried."""
    root = tmp_path_factory.mktemp("seek")
    frames = _frames()
    made = {}
    for gop in (None, 1, 2, 7):
        path = root / f"writer_gop{gop}.mp4"
        write_mp4(path, frames, preset=VideoSpec.preset, x264_params=VideoSpec.x264_params, gop=gop)
        made[f"writer_gop{gop}"] = path
    rgb = [np.repeat(f[..., None], 3, axis=2) for f in frames]
    _encode(root / "rotated_edit_list.mp4", rgb, rotation=90, lead_in=3)
    made["rotated_edit_list"] = root / "rotated_edit_list.mp4"
    if shutil.which("ffmpeg"):  # Debian's ffmpeg: .ci/run installs it
        raw = root / "raw.mp4"
        write_mp4(raw, frames, crf=0)
        for name, args in {
            "ffmpeg_bframes": ["-c:v", "libx264", "-g", "9", "-bf", "3", "-x264-params", "open-gop=0"],
            "ffmpeg_open_gop": ["-c:v", "libx264", "-g", "6", "-bf", "2", "-x264-params", "open-gop=1"],
            "ffmpeg_mpeg4": ["-c:v", "mpeg4", "-g", "5", "-bf", "1", "-q:v", "2"],
        }.items():
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), *args, str(root / f"{name}.mp4")],
                           check=True, timeout=120)
            made[name] = root / f"{name}.mp4"
    return {name: (path, np.stack(list(decode.iter_frames(path)))) for name, path in made.items()}


def test_every_kind_of_file_was_made(videos):
    assert shutil.which("ffmpeg"), "ffmpeg (Debian package) makes the third-party inputs: apt-get install ffmpeg"
    assert len(videos) == 8


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_picked_frames_equal_a_full_decode(videos, data):
    name = data.draw(st.sampled_from(sorted(videos)))
    path, full = videos[name]
    picks = data.draw(st.lists(st.integers(0, len(full) - 1), min_size=1, max_size=10))
    got = decode.read_frames(path, picks)
    assert np.array_equal(got, full[picks]), (name, picks)


def test_in_memory_bytes_and_file_objects_seek_too(videos):
    path, full = videos["ffmpeg_open_gop"]
    picks = [33, 2, 17, 17, 39]
    data = path.read_bytes()
    assert np.array_equal(decode.read_frames(data, picks), full[picks])
    with open(path, "rb") as handle:
        assert np.array_equal(decode.read_frames(handle, picks), full[picks])


def test_an_edit_list_hides_its_lead_in_frames(videos):
    """Three lead-in frames sit before the edit list's start: no reader returns them, none counts them."""
    path, full = videos["rotated_edit_list"]
    shown = NUM_FRAMES - 3
    assert len(full) == shown and decode.probe(path).num_frames == shown
    assert full.shape[1:3] == (48, 48)
    np.testing.assert_array_equal(decode.read_frames(path, [0, shown - 1]), full[[0, shown - 1]])
    with pytest.raises(IndexError, match=rf"it has {shown} frames"):
        decode.read_frames(path, [shown])


def test_a_frame_past_the_end_is_refused_by_number(videos):
    path, _ = videos["writer_gop2"]
    with pytest.raises(IndexError, match=rf"no frame\(s\) \[{NUM_FRAMES}\].*it has {NUM_FRAMES} frames"):
        decode.read_frames(path, [3, NUM_FRAMES])


def test_a_replaced_file_is_indexed_again(tmp_path):
    """The packet index is cached per file version (inode, size, mtime): a new file at the same path is re-read."""
    path = tmp_path / "v.mp4"
    write_mp4(path, _frames(20, seed=1), gop=4)
    first = decode.read_frames(path, [15])
    tmp = tmp_path / "w.mp4"
    write_mp4(tmp, _frames(30, seed=2), gop=5)
    os.replace(tmp, path)
    assert np.array_equal(decode.read_frames(path, [25]), np.stack(list(decode.iter_frames(path)))[[25]])
    assert not np.array_equal(decode.read_frames(path, [15]), first)


def test_the_writer_places_keyframes_at_most_gop_apart(tmp_path):
    for gop in (1, 3):
        path = tmp_path / f"g{gop}.mp4"
        write_mp4(path, _frames(25), preset=VideoSpec.preset, x264_params=VideoSpec.x264_params, gop=gop)
        with av.open(str(path)) as container:
            keys = [i for i, p in enumerate(container.demux(container.streams.video[0])) if p.size and p.is_keyframe]
        assert keys[0] == 0 and max(np.diff(keys + [25])) <= gop


def test_seeking_decodes_about_the_frames_it_returns(videos, monkeypatch):
    """With a GOP of 2, eight scattered frames need at most 16 decoded frames, not the video up to the last."""
    path, full = videos["writer_gop2"]
    decoded = []
    real = av.VideoFrame.to_ndarray

    def counting(frame, *args, **kwargs):
        decoded.append(frame.pts)
        return real(frame, *args, **kwargs)

    seen = []
    original = decode._decode_run

    def run(container, stream, start, last, by_pts, got):
        result = original(container, stream, start, last, by_pts, got)
        seen.append((start, last))
        return result

    monkeypatch.setattr(decode, "_decode_run", run)
    picks = [3, 9, 14, 20, 26, 31, 35, 39]
    assert np.array_equal(decode.read_frames(path, picks), full[picks])
    index = decode._packet_index(path, "v")
    spans = sum(index.frame_pts.index(last) - index.frame_pts.index(start) + 1 for start, last in seen)
    assert spans <= 2 * len(picks)
