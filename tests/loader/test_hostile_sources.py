"""Archives, videos and folders as real tools and accidents leave them: Windows zips, rotated and edit-listed
MP4s (written with PyAV the way phones and `ffmpeg -ss ... -c copy` write them), broken frames, zero-byte
videos, symbolic link loops, an unwritable cache. Each input is built here."""

import io
import os
import zipfile

import av
import datasets
import numpy as np
import pytest
from PIL import Image

from thermvision_db.hf.api import CacheDirError, load_dataset
from thermvision_db.cli.main import main
from thermvision_db.demo.miniature import write_miniature
from thermvision_db.schema.members import ARCHIVES
from thermvision_db.sources.base import SourceError
from thermvision_db.sources.local import ReleaseSource
from thermvision_db.io.decode import VideoError, available_backends, probe, read_frames

VIDEO = "F_01_S1"


def _corpus(tmp_path, frames=6, **kw):
    kw.setdefault("zips", False)
    return write_miniature(tmp_path / "corpus", identities=["F_01"], frames_per_video=frames, missing={},
                           multiple={}, **{"missing_png": {}, **kw})


def _member(corpus):
    return next(m for m in corpus.members if m.video_id == VIDEO)


def _originals(corpus):
    """The frames the miniature rendered, read back from its PNGs before any test damages them."""
    member = _member(corpus)
    return [np.asarray(Image.open(corpus.root / member.frame_png(i)).convert("RGB")) for i in range(corpus.frames_per_video)]


def _encode(path, frames, rotation=0, lead_in=0):
    """x264 at crf 0 in yuv444p (near-lossless). `rotation` writes a display matrix (phones, `ffmpeg
    -display_rotation`); `lead_in` frames get negative timestamps, which the mp4 muxer hides behind an edit
    list exactly as `ffmpeg -ss T -i in.mp4 -c copy` does when cutting between keyframes."""
    tmp = str(path) + ".src.mp4"
    with av.open(tmp, "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"crf": "0", "g": "4", "bf": "2"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv444p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts = i
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(tmp) as source, av.open(str(path), "w", format="mp4") as target:
        src = source.streams.video[0]
        out = target.add_stream_from_template(src)
        shift = round(lead_in / 30 / src.time_base)
        for packet in source.demux(src):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = out
            target.mux(packet)
    os.unlink(tmp)


def _load(corpus, hf_cache, name="frames", **kw):
    """The rows of VIDEO (the miniature also writes the identity's second video)."""
    ds = load_dataset("thermvision_db", name, data_dir=corpus.root, cache_dir=hf_cache, split_by="none",
                      split="train", **kw)
    return ds.filter(lambda v: v == VIDEO, input_columns="video_id")


def test_zip_with_backslash_separators_is_indexed(tmp_path, hf_cache):
    corpus = write_miniature(tmp_path / "c", identities=["F_01"], frames_per_video=3, folders=False, missing={},
                             multiple={}, missing_png={})
    path = corpus.root / ARCHIVES["F"]
    with zipfile.ZipFile(path) as original:
        members = [(info.filename, original.read(info)) for info in original.infolist()]
    path.unlink()
    with zipfile.ZipFile(path, "w") as windows:  # .NET ZipFile.CreateFromDirectory (PowerShell 5) stores `\`
        for name, data in members:
            info = zipfile.ZipInfo(name.replace("/", "\\"))
            info.create_system = 0
            windows.writestr(info, data)
    ds = _load(corpus, hf_cache)
    assert len(ds) == 3
    row = ds[0]
    assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(
        Image.open(io.BytesIO(dict(members)[_member(corpus).frame_png(0)])).convert("RGB")))
    stored = ds.cast_column("image", datasets.Image(decode=False))["image"]
    assert len({cell["path"] for cell in stored}) == 3  # in-archive frames keep their unique member path


def test_rotation_one_rule_for_every_backend(tmp_path, hf_cache):
    corpus = _corpus(tmp_path, frames=4, missing_png={VIDEO: (2,)})
    member = _member(corpus)
    shown = [np.asarray(Image.open(corpus.root / member.frame_png(i)).convert("RGB")) for i in (0, 1, 3)]
    shown.insert(2, shown[1])  # frame 2's PNG is absent: compare it with the source frame below
    width = 48
    frames = [np.tile(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], (64, 1, 3)) for _ in range(4)]
    frames = [f.copy() for f in frames]
    for f in frames:
        f[:10, :10] = 255  # an asymmetric mark, top-left as stored
    video = corpus.root / member.video_member
    _encode(video, [np.rot90(f, -1) for f in frames], rotation=90)  # stored turned clockwise, shown upright
    info = probe(video)
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    decoded = {backend: read_frames(video, backend=backend) for backend in available_backends()}
    assert set(decoded) >= {"pyav", "opencv"}
    for backend, got in decoded.items():
        assert got.shape == (4, 64, 48, 3), backend
        assert np.abs(got.astype(int) - np.stack(frames)).max() <= 3, backend
        assert np.array_equal(got, decoded["pyav"]), backend
    images = {b: np.asarray(_load(corpus, hf_cache, video_backend=b)[2]["image"].convert("RGB")) for b in ("pyav", "opencv")}
    assert np.array_equal(images["pyav"], images["opencv"])
    assert np.abs(images["pyav"].astype(int) - frames[2]).max() <= 3


def test_edit_listed_mp4_counts_decodable_frames(tmp_path, hf_cache):
    corpus = _corpus(tmp_path, frames=6, missing_png={VIDEO: (1,)})
    member = _member(corpus)
    original = read_frames(corpus.root / member.video_member)
    junk = [np.zeros_like(original[0]) for _ in range(2)]
    video = corpus.root / member.video_member
    _encode(video, [*junk, *original], lead_in=2)
    with av.open(str(video)) as container:
        assert container.streams.video[0].frames == 8  # the header counts the cut frames too
    assert probe(video).num_frames == 6
    ds = _load(corpus, hf_cache)
    assert len(ds) == 6 and ds["frame_index"] == list(range(6))
    assert np.abs(np.asarray(ds[1]["image"].convert("RGB")).astype(int) - original[1]).max() <= 3
    videos = _load(corpus, hf_cache, "videos")
    assert videos[0]["num_frames"] == 6 and len(videos[0]["qc"]) == 6


def test_frame_beyond_the_decodable_ones_names_the_video(tmp_path, hf_cache):
    corpus = _corpus(tmp_path, frames=6)
    member = _member(corpus)
    video = corpus.root / member.video_member
    _encode(video, list(read_frames(video)[:4]))
    (corpus.root / member.frame_png(4)).unlink()
    with pytest.raises(SourceError, match=f"frame 4 cannot be decoded from {video}.*decodes 4 frames"):
        _load(corpus, hf_cache)


def test_broken_pngs_come_from_the_mp4_and_deep_verify_names_them(tmp_path, hf_cache, capsys):
    corpus = _corpus(tmp_path, frames=4)
    member = _member(corpus)
    originals = _originals(corpus)
    assert main(["verify", str(corpus.root), "--no-checksums", "--deep", "-q"]) == 0  # clean before the damage
    assert "0 bad file(s)" in capsys.readouterr().out
    truncated = corpus.root / member.frame_png(1)
    truncated.write_bytes(truncated.read_bytes()[:60])  # an interrupted copy
    jpeg = corpus.root / member.frame_png(2)
    buffer = io.BytesIO()
    Image.fromarray(originals[2]).save(buffer, format="JPEG")
    jpeg.write_bytes(buffer.getvalue())  # a converter that kept the .png name
    ds = _load(corpus, hf_cache)
    for i in (1, 2):
        assert np.abs(np.asarray(ds[i]["image"].convert("RGB")).astype(int) - originals[i]).mean() < 4
    assert main(["verify", str(corpus.root), "--no-checksums", "--deep", "-q"]) == 1
    out = capsys.readouterr().out
    assert f"BAD {truncated}" in out and f"BAD {jpeg}" in out and "2 bad file(s)" in out
    (corpus.root / member.video_member).unlink()
    with pytest.raises(SourceError, match=f"{truncated}: truncated PNG.*video .* is missing"):
        _load(corpus, hf_cache)


@pytest.mark.parametrize("damage", ["zero_bytes", "truncated"])
def test_png_backed_frames_never_need_a_damaged_mp4(tmp_path, hf_cache, capsys, damage):
    corpus = _corpus(tmp_path, frames=4)
    member = _member(corpus)
    video = corpus.root / member.video_member
    data = video.read_bytes()
    video.write_bytes(b"" if damage == "zero_bytes" else data[: len(data) // 2])
    originals = _originals(corpus)
    ds = _load(corpus, hf_cache)
    assert [np.array_equal(np.asarray(r["image"].convert("RGB")), o) for r, o in zip(ds, originals)] == [True] * 4
    with pytest.raises(SourceError, match=f"{VIDEO}: {video}"):
        _load(corpus, hf_cache, "videos")
    assert main(["verify", str(corpus.root), "--no-checksums", "--deep", "-q"]) == 1
    assert f"BAD {video}" in capsys.readouterr().out


def test_symlink_loop_and_dangling_link_are_named(tmp_path, hf_cache):
    corpus = _corpus(tmp_path, frames=3)
    member = _member(corpus)
    dangling = corpus.root / member.frame_png(1)
    dangling.unlink()
    dangling.symlink_to(tmp_path / "elsewhere" / "frame_0001.png")
    with pytest.raises(SourceError, match=f"{dangling}: a dangling symbolic link"):
        _load(corpus, hf_cache)
    dangling.unlink()
    dangling.symlink_to(dangling.name)  # a link to itself
    with pytest.raises(SourceError, match=f"{dangling}: a symbolic link loop"):
        _load(corpus, hf_cache)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(SourceError, match="symbolic link loop"):
        ReleaseSource(loop)


def test_unwritable_cache_dir_is_named(tmp_path):
    corpus = _corpus(tmp_path, frames=2)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheDirError, match=f"{blocker / 'cache'} is not writable"):
        load_dataset("thermvision_db", "frames", data_dir=corpus.root, cache_dir=str(blocker / "cache"))


def test_images_config_refuses_the_video_tree(tmp_path, hf_cache):
    corpus = _corpus(tmp_path, frames=2)
    with pytest.raises(SourceError, match="holds the released videos"):
        load_dataset("thermvision_db", "images", data_dir=corpus.root, cache_dir=hf_cache)


def test_video_errors_name_the_video(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=str(empty)):
        probe(empty)
    with pytest.raises(VideoError, match="clip.mp4"):
        read_frames(b"\x00" * 100, name="clip.mp4")
