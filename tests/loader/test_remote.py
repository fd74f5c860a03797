"""The release read where it lives: the miniature zips served over HTTP with Range support on 127.0.0.1 by a
server the test starts (it stops by itself), with every byte it sends counted."""

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from thermvision_db import load_dataset
from tests.support.loopback import LoopbackServer
from thermvision_db.demo.miniature import DEFAULT_IDENTITIES, write_miniature
from thermvision_db.schema.members import ARCHIVES
from thermvision_db.sources.base import SourceError
from thermvision_db.sources.local import ReleaseSource
from thermvision_db.sources.download import download_release
from thermvision_db.sources.remote import RemoteReleaseSource, verify_url

REPO = Path(__file__).resolve().parents[2]
IDENTITIES = (*DEFAULT_IDENTITIES, "F_02", "M_01", "F_03", "M_02", "M_03")  # 10 of 50, both zips


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_miniature(tmp_path_factory.mktemp("remote"), identities=IDENTITIES, folders=False)


@pytest.fixture
def server(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("THERMVISION_DB_REMOTE_CACHE", str(tmp_path / "zipdirs"))
    monkeypatch.setenv("THERMVISION_DB_RETRY_WAIT", "0.01")
    with LoopbackServer(corpus.root, lifetime=120) as srv:
        yield srv


def _extents(zip_path: Path, wanted) -> tuple[int, int]:
    """Bytes the members in `wanted` span in the archive (each up to the next header), and the directory tail."""
    with zipfile.ZipFile(zip_path) as archive:
        infos = sorted(archive.infolist(), key=lambda i: i.header_offset)
        directory = archive.start_dir
    ends = [i.header_offset for i in infos[1:]] + [directory]
    spanned = sum(end - i.header_offset for i, end in zip(infos, ends) if wanted(i.filename))
    return spanned, zip_path.stat().st_size - directory


def _rows(stream):
    return [{**row, "image": np.asarray(row["image"])} for row in stream]


def _assert_same_rows(remote, local):
    assert len(remote) == len(local) > 0
    for a, b in zip(remote, local):
        assert np.array_equal(a.pop("image"), b.pop("image"))
        assert a == b


def test_one_identity_reads_only_its_members_and_equals_the_local_zips(corpus, server):
    identity = "F_23"  # its expression video lacks a PNG: that frame is decoded from the MP4
    remote = _rows(load_dataset("thermvision_db", "frames", data_dir=server.url + "/", split="train", split_by="none",
                                identities=[identity], streaming=True))
    sent = server.traffic.bytes_sent
    local = _rows(load_dataset("thermvision_db", "frames", data_dir=str(corpus.root), split="train", split_by="none",
                               identities=[identity], streaming=True))
    _assert_same_rows(remote, local)
    folders = [m.video_member.rsplit("/", 2)[0] + "/" for m in corpus.members if m.identity == identity]
    needed, directory = _extents(corpus.root / ARCHIVES["F"], lambda name: any(name.startswith(f) for f in folders)
                                 and not name.endswith("preview_driving.mp4"))
    assert sent == needed + directory  # its MP4s, PNGs and labels, and the central directory: nothing else
    total = sum((corpus.root / name).stat().st_size for name in ARCHIVES.values())
    assert sent < 0.2 * total, (sent, total)
    assert not any(path.startswith("/Male") for method, path, *_ in server.traffic.requests if method == "GET")


def test_videos_from_a_url_equal_the_local_zips_and_the_directory_is_cached(corpus, server, tmp_path):
    local = load_dataset("thermvision_db", "videos", data_dir=str(corpus.root), cache_dir=str(tmp_path / "a"),
                         split="train", split_by="none")
    remote = load_dataset("thermvision_db", "videos", data_dir=server.url, cache_dir=str(tmp_path / "b"),
                          split="train", split_by="none")
    assert remote.num_rows == local.num_rows == len(corpus.members)
    columns = [c for c in local.column_names if c != "video"]
    assert remote.select_columns(columns).to_list() == local.select_columns(columns).to_list()
    local_bytes = [v["bytes"] for v in local.cast_column("video", _undecoded(local)).to_dict()["video"]]
    remote_bytes = [v["bytes"] for v in remote.cast_column("video", _undecoded(remote)).to_dict()["video"]]
    assert remote_bytes == local_bytes
    # a fresh source (a new process would do the same) takes the central directory from the disk cache
    assert len(list((tmp_path / "zipdirs").glob("*.zipdir"))) == 2
    server.traffic.reset()
    source = RemoteReleaseSource(server.url)
    member = corpus.members[0]
    data = source.read(member.gender, member.label_txt(1))
    assert data == ReleaseSource(corpus.root).read(member.gender, member.label_txt(1))
    sizes = {name: (corpus.root / name).stat().st_size for name in ARCHIVES.values()}
    assert all(end < sizes[path.lstrip("/")] for method, path, start, end in server.traffic.requests if method == "GET")


def test_a_damaged_directory_cache_is_fetched_again(corpus, server, tmp_path):
    member = next(m for m in corpus.members if m.gender == "M")
    expected = ReleaseSource(corpus.root).read("M", member.frame_png(3))
    assert RemoteReleaseSource(server.url).read("M", member.frame_png(3)) == expected
    (cached,) = (tmp_path / "zipdirs").glob("*.zipdir")
    blob = bytearray(cached.read_bytes())
    blob[40:200] = bytes(160)  # same length, zeroed central directory records
    cached.write_bytes(bytes(blob))
    assert RemoteReleaseSource(server.url).read("M", member.frame_png(3)) == expected
    assert cached.read_bytes() != bytes(blob)  # rewritten from the server


def _undecoded(ds):
    feature = ds.features["video"]
    feature.decode = False
    return feature


def test_a_dropped_connection_mid_member_is_retried(corpus, server):
    member = next(m for m in corpus.members if m.identity == "M_10")
    with zipfile.ZipFile(corpus.root / ARCHIVES["M"]) as archive:
        offset = archive.getinfo(member.frame_png(0)).header_offset
    fault = server.add_fault(lambda path, start, end: path == "/Male Subjects.zip" and start == offset, times=2, after=100)
    source = RemoteReleaseSource(server.url)
    assert source.read("M", member.frame_png(0)) == ReleaseSource(corpus.root).read("M", member.frame_png(0))
    assert fault.hits == 2
    asked = [r for r in server.traffic.requests if r[0] == "GET" and r[2] == offset]
    assert len(asked) == 3  # two dropped, the third complete


def test_a_connection_that_keeps_dropping_names_member_and_url_and_caches_nothing(corpus, server, tmp_path):
    member = next(m for m in corpus.members if m.identity == "F_16")
    with zipfile.ZipFile(corpus.root / ARCHIVES["F"]) as archive:
        offset = archive.getinfo(member.label_txt(0)).header_offset
    server.add_fault(lambda path, start, end: start == offset, times=100, after=10)
    source = RemoteReleaseSource(server.url)
    with pytest.raises(SourceError) as err:
        source.read("F", member.label_txt(0))
    message = str(err.value)
    assert member.label_txt(0) in message and f"{server.url}/Female Subjects.zip" in message and "4 attempts" in message
    # a directory fetch that keeps failing leaves no file in the cache, not even a temporary one
    server.add_fault(lambda path, start, end: path == "/Male Subjects.zip", times=100, after=5)
    cache = tmp_path / "zipdirs"
    before = sorted(p.name for p in cache.iterdir())
    with pytest.raises(SourceError, match="Male Subjects.zip"):
        source.read("M", next(m for m in corpus.members if m.gender == "M").label_txt(0))
    assert sorted(p.name for p in cache.iterdir()) == before and all(p.suffix == ".zipdir" for p in cache.iterdir())


def test_source_pickles_for_workers_and_a_url_without_zips_is_refused(corpus, server, tmp_path):
    member = corpus.members[-1]
    copy = pickle.loads(pickle.dumps(RemoteReleaseSource(server.url)))
    assert copy.read(member.gender, member.frame_png(2)) == ReleaseSource(corpus.root).read(member.gender, member.frame_png(2))
    (corpus.root / "empty").mkdir(exist_ok=True)
    with pytest.raises(SourceError, match="neither 'Female Subjects.zip' nor 'Male Subjects.zip'"):
        RemoteReleaseSource(server.url + "/empty")


def test_dataloader_workers_read_a_url_in_forked_processes(corpus, server):
    import torch

    stream = load_dataset("thermvision_db", "frames", data_dir=server.url, split="train", split_by="none",
                          identities=["F_01", "M_10"], streaming=True)
    next(iter(stream))  # the parent opened its HTTP session before the workers fork
    loader = torch.utils.data.DataLoader(stream.select_columns(["video_id", "frame_index", "qc"]), batch_size=None,
                                         num_workers=2)
    keys = sorted((row["video_id"], int(row["frame_index"]), row["qc"]) for row in loader)
    local = load_dataset("thermvision_db", "frames", data_dir=str(corpus.root), split="train", split_by="none",
                         identities=["F_01", "M_10"], streaming=True).select_columns(["video_id", "frame_index", "qc"])
    assert keys == sorted((row["video_id"], row["frame_index"], row["qc"]) for row in local)
    assert len(keys) == 4 * corpus.frames_per_video


def test_verify_on_a_url_reads_only_the_directories(corpus, server):
    lines = []
    assert verify_url(server.url, lines.append) == 0
    text = "\n".join(lines)
    assert f"{len(corpus.members)} of 100 videos present" in text and "publishes no sha256" in text and f"--from {server.url}" in text
    pngs = sum(corpus.frames_per_video - len(corpus.missing_png.get(m.video_id, ())) for m in corpus.members)
    assert f"{pngs:,} PNG frames" in text
    directories = sum(_extents(corpus.root / name, lambda _: False)[1] for name in ARCHIVES.values())
    assert server.traffic.bytes_sent == directories


def test_download_resumes_after_a_dropped_connection(corpus, server, tmp_path, monkeypatch):
    monkeypatch.setenv("THERMVISION_DB_RETRIES", "0")
    chunk = 16_384
    server.add_fault(lambda path, start, end: path == "/Male Subjects.zip" and start == 0, times=1, after=3 * chunk)
    out = tmp_path / "copy"
    with pytest.raises(SourceError, match="Male Subjects.zip"):
        download_release(server.url, out, progress=False, chunk=chunk)
    assert (out / "Female Subjects.zip").read_bytes() == (corpus.root / "Female Subjects.zip").read_bytes()
    assert not (out / "Male Subjects.zip").exists()
    assert (out / "Male Subjects.zip.incomplete").stat().st_size == 3 * chunk
    server.traffic.reset()
    download_release(server.url, out, progress=False, chunk=chunk)
    assert (out / "Male Subjects.zip").read_bytes() == (corpus.root / "Male Subjects.zip").read_bytes()
    assert not (out / "Male Subjects.zip.incomplete").exists()
    starts = [start for method, path, start, end in server.traffic.requests if method == "GET"]
    assert starts == [3 * chunk]  # resumed, not restarted; the finished zip was not fetched again


HUB_SCRIPT = """
import json, sys
import numpy as np
from thermvision_db import load_dataset
rows = load_dataset("thermvision_db", "frames", split="train", split_by="none", identities=["M_24"], streaming=True)
out = [{"key": r["video_id"] + "/" + str(r["frame_index"]), "qc": r["qc"], "mean": float(np.asarray(r["image"]).mean())}
       for r in rows]
print(json.dumps(out))
from thermvision_db.cli.main import main
print("verify exit", main(["verify", "--remote"]))
"""


def test_the_hub_path_through_a_fake_hub_endpoint(corpus, tmp_path):
    """HfFileSystem (no data_dir: the default source) against a loopback server that answers the Hub's API."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "THERMVISION_DB_REMOTE_CACHE": str(tmp_path / "zipdirs"),
           "PYTHONPATH": str(REPO)}
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "THERMVISION_DB_DIR", "HF_TOKEN"):
        env.pop(name, None)
    with LoopbackServer(corpus.root, lifetime=120, hub_repo="MAli-Farooq/ThermVision-DB") as hub:
        env["HF_ENDPOINT"] = hub.url
        done = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        gets = [(path, start) for method, path, start, _ in hub.traffic.requests if method == "GET"]  # via /resolve/
    female = corpus.root / ARCHIVES["F"]
    directory_start = female.stat().st_size - _extents(female, lambda _: False)[1]
    assert any(path == "/Male Subjects.zip" for path, _ in gets)
    # M_24 lives in the male zip: of the female one only `verify` read the central directory
    assert all(start >= directory_start for path, start in gets if path == "/Female Subjects.zip")
    lines = done.stdout.strip().splitlines()
    rows = json.loads(next(line for line in lines if line.startswith("[")))
    local = _rows(load_dataset("thermvision_db", "frames", data_dir=str(corpus.root), split="train", split_by="none",
                               identities=["M_24"], streaming=True))
    assert [r["key"] for r in rows] == [f"{r['video_id']}/{r['frame_index']}" for r in local]
    assert [r["qc"] for r in rows] == [r["qc"] for r in local]
    assert np.allclose([r["mean"] for r in rows], [r["image"].mean() for r in local])
    # the fake Hub publishes the miniature's sha256 as LFS metadata: verify --remote reports the mismatch
    import hashlib

    assert lines[-1] == "verify exit 1"
    for name in ARCHIVES.values():
        digest = hashlib.sha256((corpus.root / name).read_bytes()).hexdigest()
        assert f"{name}: {(corpus.root / name).stat().st_size:,} bytes, published sha256 {digest} MISMATCH" in done.stdout
