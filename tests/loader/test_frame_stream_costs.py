"""The streamed `frames` path's shortcuts keep today's answers: stored PNGs decode to the same pixels in every
reader, a video probed once is probed again only when its file changes, and folder paths are the same strings."""

import io
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from thermvision_db.io import decode
from thermvision_db.io.encode import write_mp4
from thermvision_db.io.png import stored_png
from thermvision_db.sources.local import FolderArchive

shapes = st.one_of(st.tuples(st.integers(1, 70), st.integers(1, 70)),
                   st.tuples(st.integers(1, 70), st.integers(1, 70), st.just(3)))


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, shapes))
def test_stored_png_decodes_to_the_same_pixels_in_pil_and_opencv(pixels):
    data = stored_png(pixels)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == ("L" if pixels.ndim == 2 else "RGB")
        assert np.array_equal(np.asarray(image), pixels)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded if pixels.ndim == 2 else decoded[..., ::-1], pixels)


def test_stored_png_decodes_in_ffmpeg(tmp_path):  # the ffmpeg command line: .ci/run installs it
    pixels = np.random.default_rng(1).integers(0, 256, (300, 257, 3), dtype=np.uint8)  # > one 64 KiB stored block
    (tmp_path / "f.png").write_bytes(stored_png(pixels))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "f.png"), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], check=True, capture_output=True, timeout=60).stdout
    assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(pixels.shape), pixels)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4), np.uint8),
                                 np.zeros(4, np.uint8)])
def test_stored_png_refuses_what_it_cannot_write(bad):
    with pytest.raises(ValueError, match="stored_png"):
        stored_png(bad)


def _video(path, n, level):
    frames = [np.full((32, 32, 3), level + i, np.uint8) for i in range(n)]
    return write_mp4(path, frames, fps=25)


def test_probe_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    calls = []
    real = decode._probe
    monkeypatch.setattr(decode, "_probe", lambda source, name: calls.append(source) or real(source, name))
    path = _video(tmp_path / "v.mp4", 5, 40)
    assert decode.probe(path).num_frames == 5
    assert decode.probe(str(path)).num_frames == 5 and len(calls) == 1  # str and Path name one file
    stat = path.stat()
    _video(tmp_path / "w.mp4", 9, 80).replace(path)  # replaced in place by another video (a new inode)
    assert decode.probe(path).num_frames == 9 and len(calls) == 2
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: probed again, same answer
    assert decode.probe(path).num_frames == 9 and len(calls) == 3
    assert decode.probe(path.read_bytes()).num_frames == 9 and len(calls) == 4  # bytes are never remembered


def test_probe_of_a_missing_file_still_names_it(tmp_path):
    with pytest.raises(decode.VideoError, match="gone.mp4"):
        decode.probe(tmp_path / "gone.mp4")


def test_probe_memory_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "_PROBED_MAX", 2)
    monkeypatch.setattr(decode, "_PROBED", type(decode._PROBED)())
    paths = [_video(tmp_path / f"{i}.mp4", 2, 10 * i) for i in range(4)]
    for path in paths:
        decode.probe(path)
    assert len(decode._PROBED) == 2 and {key[0] for key in decode._PROBED} == {str(p) for p in paths[2:]}


@pytest.mark.parametrize("root", ["data", "data/", "/"])
def test_folder_paths_are_the_strings_pathlib_gives(root):
    archive = FolderArchive(Path(root))
    member = "Female Subjects/Set 1/frame_0001.png"
    assert os.path.normpath(archive.local_path(member)) == str(Path(root) / member)


_names = st.one_of(st.sampled_from(["F_01", "M_31", "female", "male", "head_pose", "expression", "ok", "missing",
                                    "detector", "propagated", "interpolated"]), st.text(max_size=6))


@settings(max_examples=150, deadline=None)
@given(identity=_names, gender=_names, set_name=_names, qc=_names, sources=st.lists(_names, max_size=3))
def test_class_names_given_as_integers_encode_as_datasets_encodes_the_names(identity, gender, set_name, qc, sources):
    """`datasets` is the judge: the builder's integers give the row `encode_example` gives the names, and a name
    that is no class is refused by `datasets` with the same error either way."""
    from thermvision_db.schema.features import frame_features
    from thermvision_db.schema.label_codes import FrameLabelCodes
    from thermvision_db.schema.members import IDENTITIES

    features = frame_features(IDENTITIES)

    def row():
        faces = [{"bbox": [1.0, 2.0, 3.0, 4.0], "landmarks": None, "source": s, "score": None} for s in sources]
        return {"image": {"path": None, "bytes": b"x"}, "video_id": "F_01_S1", "identity": identity, "gender": gender,
                "set": set_name, "driving_template": "d3", "frame_index": 3, "faces": faces, "qc": qc,
                "head_pose": None, "seed": None, "prompt": None, "expression": None, "eye_open": None,
                "mouth_open": None}

    def encoded(example):
        try:
            return features.encode_example(example)
        except ValueError as err:
            return ("refused", str(err))

    coded = FrameLabelCodes(features).encode(row())
    assert encoded(coded) == encoded(row())
    for path in (__file__, "/no/such/frame.png"):  # an image given by path: the same encoded value as the dict
        by_path = dict(row(), image={"path": path, "bytes": None})
        coded_path = FrameLabelCodes(features).encode(dict(by_path))
        assert coded_path["image"] == path and encoded(coded_path) == encoded(by_path)
    known = {"identity": identity in IDENTITIES, "qc": qc in ("ok", "missing")}
    for name, is_class in known.items():
        assert isinstance(coded[name], int) == is_class


def test_present_answers_as_exists_does_and_names_a_broken_link(tmp_path):
    from thermvision_db.sources.base import SourceError
    from thermvision_db.sources.local import ReleaseSource

    frames = tmp_path / "Female Subjects" / "Set 1"
    frames.mkdir(parents=True)
    for i in (0, 2, 3):
        (frames / f"frame_{i:04d}.png").write_bytes(b"png")
    (tmp_path / "Female Subjects" / "Set 2").mkdir()
    members = [f"Female Subjects/Set {s}/frame_{i:04d}.png" for s in (1, 2, 3) for i in range(5)]
    source = ReleaseSource(tmp_path)
    assert source.present("F", members) == [source.exists("F", m) for m in members]
    assert source.present("F", members) == [s == 1 and i in (0, 2, 3) for s in (1, 2, 3) for i in range(5)]
    assert source.present("M", members) == [False] * len(members)  # no male archive at all
    (frames / "frame_0004.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(SourceError, match="frame_0004.png.*dangling"):
        ReleaseSource(tmp_path).present("F", members)
