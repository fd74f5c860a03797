"""Zips as real tools write them, read in place over HTTP and from disk: `zipfile` itself is the judge.

Archives come from hypothesis (zipfile: stored/deflated/bzip2, zip64, data descriptors, comments, member order,
tiny and large central directories), Info-ZIP `zip` and 7-Zip; each is served by the loopback range server.
"""

import io
import logging
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.loopback import LoopbackServer
from thermvision_db.sources.base import SourceError
from thermvision_db.sources.local import ZipArchive
from thermvision_db.sources.remote_zip import RemoteZipArchive
from thermvision_db.sources.zip_directory import directory_cache_path

ROOT = "Female Subjects"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zips")
    with LoopbackServer(folder, lifetime=300) as server:
        yield folder, server


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMVISION_DB_REMOTE_CACHE", str(tmp_path / "zipdirs"))
    monkeypatch.setenv("THERMVISION_DB_RETRY_WAIT", "0.01")


def _three_ways(path: Path, url: str) -> None:
    """Every member: read in place over HTTP == read from the local zip == what zipfile extracts."""
    with zipfile.ZipFile(path) as archive:
        expected = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    local, remote = ZipArchive(path, ROOT), RemoteZipArchive(url, ROOT)
    assert set(local.index) == set(remote.index) == {n[n.find(ROOT):] for n in expected}
    for name, data in expected.items():
        member = name[name.find(ROOT):]
        assert remote.read(member) == local.read(member) == data, name


class _Unseekable(io.RawIOBase):
    """A pipe-like target: zipfile then writes data descriptors after each member."""

    def __init__(self):
        self.buffer = io.BytesIO()

    def writable(self):
        return True

    def write(self, data):
        return self.buffer.write(data)


MEMBERS = st.lists(st.tuples(st.sampled_from(["png", "txt", "mp4"]), st.binary(max_size=3000),
                             st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])),
                   min_size=1, max_size=40)

# a comment holding an end-record signature makes zipfile itself (the judge) refuse the archive
COMMENTS = st.binary(max_size=300).filter(lambda c: b"PK\x05\x06" not in c and b"PK\x06\x06" not in c)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=MEMBERS, comment=COMMENTS, zip64=st.booleans(), descriptors=st.booleans(),
       prefix=st.sampled_from(["", "ThermVision-DB/"]), reverse=st.booleans())
def test_random_zipfile_archives_read_the_same_three_ways(served, members, comment, zip64, descriptors, prefix, reverse):
    folder, server = served
    target = _Unseekable() if descriptors else io.BytesIO()
    entries = [(f"{prefix}{ROOT}/Set {i % 3}/f_{i:04d}.{kind}", data, method) for i, (kind, data, method) in enumerate(members)]
    with zipfile.ZipFile(target, "w") as archive:
        for name, data, method in (reversed(entries) if reverse else entries):
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            with archive.open(info, "w", force_zip64=zip64) as handle:
                handle.write(data)
        archive.comment = comment
    blob = (target.buffer if descriptors else target).getvalue()
    path = folder / f"h{abs(hash((blob, len(blob)))) % 10**12}.zip"
    path.write_bytes(blob)
    _three_ways(path, f"{server.url}/{path.name}")


def _tree(folder: Path, count: int = 30) -> Path:
    for i in range(count):
        sub = folder / ROOT / f"Set {i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"frame_{i:04d}.txt").write_text(f"0 0.5 0.5 0.{i % 9 + 1} 0.3\n" * (i + 1))
        (sub / f"frame_{i:04d}.png").write_bytes(bytes(range(256)) * (i % 5 + 1))
    return folder


@pytest.mark.parametrize("tool", [
    ["zip", "-q", "-r", "{out}", ROOT],
    ["zip", "-q", "-r", "-fz", "-0", "{out}", ROOT],  # zip64 records, stored
    ["7z", "a", "-bd", "-tzip", "-mx=5", "{out}", ROOT],
    ["7z", "a", "-bd", "-tzip", "-mx=0", "{out}", ROOT],
], ids=["infozip", "infozip-zip64-stored", "7z-deflate", "7z-stored"])
def test_archives_written_by_infozip_and_7zip(served, tmp_path, tool):
    folder, server = served
    tree = _tree(tmp_path / "tree")
    out = folder / f"{tool[0]}-{abs(hash(tuple(tool))) % 10**8}.zip"
    out.unlink(missing_ok=True)
    subprocess.run([a.replace("{out}", str(out)) for a in tool], cwd=tree, check=True, capture_output=True, timeout=60)
    _three_ways(out, f"{server.url}/{out.name}")


def test_infozip_to_a_pipe_writes_data_descriptors_that_read_the_same(served, tmp_path):
    folder, server = served
    tree = _tree(tmp_path / "tree", count=12)
    out = folder / "piped.zip"
    piped = subprocess.run(["zip", "-q", "-r", "-", ROOT], cwd=tree, stdout=subprocess.PIPE, check=True, timeout=60)
    out.write_bytes(piped.stdout)  # a pipe is not seekable: zip writes a data descriptor after each member
    with zipfile.ZipFile(out) as archive:
        assert all(info.flag_bits & 0x8 for info in archive.infolist() if not info.is_dir())
    _three_ways(out, f"{server.url}/{out.name}")


def test_deflate64_is_named_with_the_method_and_the_fix(served, tmp_path):
    folder, server = served
    tree = _tree(tmp_path / "tree", count=4)
    out = folder / "deflate64.zip"
    out.unlink(missing_ok=True)
    subprocess.run(["7z", "a", "-bd", "-tzip", "-mm=Deflate64", str(out), ROOT], cwd=tree, check=True,
                   capture_output=True, timeout=60)
    with zipfile.ZipFile(out) as archive:
        wide = [i for i in archive.infolist() if i.compress_type == 9]  # 7-Zip stores the tiniest members
        assert wide
        with pytest.raises(NotImplementedError):  # what zipfile itself says: no name, no fix
            archive.read(wide[0])
    member = wide[0].filename
    for archive, name in ((ZipArchive(out, ROOT), str(out)), (RemoteZipArchive(f"{server.url}/{out.name}", ROOT), server.url)):
        with pytest.raises(SourceError) as err:
            archive.read(member)
        text = str(err.value)
        assert name in text and member in text and "Deflate64" in text and "7z x" in text


def test_a_member_larger_than_its_kind_is_refused_before_inflating(served):
    folder, server = served
    path = folder / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{ROOT}/Set 0/frame_0000.txt", b"0" * (3 << 20))  # 3 MiB of label text, a few KB deflated
        archive.writestr(f"{ROOT}/Set 0/frame_0001.txt", b"0 0.5 0.5 0.2 0.2\n")
    assert path.stat().st_size < 20_000
    server.traffic.reset()
    remote = RemoteZipArchive(f"{server.url}/{path.name}", ROOT)
    with pytest.raises(SourceError, match=r"frame_0000.txt' declares 3,145,728 bytes"):
        remote.read(f"{ROOT}/Set 0/frame_0000.txt")
    with pytest.raises(SourceError, match=r"frame_0000.txt' declares 3,145,728 bytes"):
        ZipArchive(path, ROOT).read(f"{ROOT}/Set 0/frame_0000.txt")
    assert remote.read(f"{ROOT}/Set 0/frame_0001.txt") == b"0 0.5 0.5 0.2 0.2\n"


def test_a_damaged_directory_cache_is_named_deleted_and_rebuilt(served, tmp_path, caplog):
    folder, server = served
    path = folder / "cached.zip"
    shutil.make_archive(str(path.with_suffix("")), "zip", _tree(tmp_path / "tree", count=6))
    url = f"{server.url}/{path.name}"
    member = f"{ROOT}/Set 1/frame_0003.txt"
    expected = ZipArchive(path, ROOT).read(member)
    assert RemoteZipArchive(url, ROOT).read(member) == expected
    fresh = RemoteZipArchive(url, ROOT)
    cache = directory_cache_path(fresh.reader)
    good = cache.read_bytes()
    damaged = bytearray(good)
    damaged[-30] ^= 0xFF  # one flipped bit inside the directory: zipfile might still parse it
    cache.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING):
        assert fresh.read(member) == expected
    assert str(cache) in caplog.text and "damaged" in caplog.text
    assert cache.read_bytes() == good  # rebuilt from the server
