"""`download` and range reads against hostile loopback servers (127.0.0.1 only, each fault bounded), checked
against the bytes the server holds."""

import fcntl
import os
import zipfile

import pytest

from tests.support.loopback import LoopbackServer
from thermvision_db.schema.members import ARCHIVES
from thermvision_db.sources.base import SourceError
from thermvision_db.sources.download import LOCK, DownloadError, download_release
from thermvision_db.sources.remote import RemoteReleaseSource

MALE, FEMALE = ARCHIVES["M"], ARCHIVES["F"]


def _zip(path, seed: int, members: int = 40):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(members):
            archive.writestr(f"{ 'Male' if 'Male' in path.name else 'Female'} Subjects/Set 1/frame_{i:04d}.txt",
                             bytes((seed * 7 + i + k) % 256 for k in range(700)))
    return path.read_bytes()


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMVISION_DB_REMOTE_CACHE", str(tmp_path / "zipdirs"))
    monkeypatch.setenv("THERMVISION_DB_RETRY_WAIT", "0.01")
    root = tmp_path / "server"
    root.mkdir()
    old = {name: _zip(root / name, 1) for name in (MALE, FEMALE)}
    with LoopbackServer(root, lifetime=120) as server:
        yield server, root, old


def test_a_resume_of_a_file_that_changed_starts_again(served, tmp_path, monkeypatch):
    server, root, old = served
    monkeypatch.setenv("THERMVISION_DB_RETRIES", "0")
    server.add_fault(lambda path, start, end: path == f"/{MALE}", times=1, after=5000)
    out = tmp_path / "copy"
    with pytest.raises(DownloadError, match=f"{MALE}.*Run the same command again"):
        download_release(server.url, out, progress=False)
    assert (out / f"{MALE}.incomplete").read_bytes() == old[MALE][:5000]
    new = _zip(root / "new.zip", 2)
    os.replace(root / "new.zip", root / MALE)
    os.utime(root / MALE, ns=(1, 10**18))
    server.traffic.reset()
    download_release(server.url, out, progress=False)
    assert (out / MALE).read_bytes() == new != old[MALE]  # not the old part with the new bytes appended
    starts = [start for method, path, start, _ in server.traffic.requests if method == "GET" and path == f"/{MALE}"]
    assert starts == [0]


def test_a_stale_resume_gets_the_whole_new_file_through_if_range(served, tmp_path, monkeypatch):
    """The note and the HEAD say the old ETag, the file changes before the GET: `If-Range` gets a 200 with the
    whole new file: the part is dropped and the new file fetched (no mixed bytes)."""
    server, root, old = served
    monkeypatch.setenv("THERMVISION_DB_RETRIES", "0")
    server.add_fault(lambda path, start, end: path == f"/{MALE}", times=1, after=3000)
    out = tmp_path / "copy"
    with pytest.raises(DownloadError):
        download_release(server.url, out, progress=False)
    new = _zip(root / "new.zip", 3)
    server.swaps_after_head[f"/{MALE}"] = new
    server.traffic.reset()
    download_release(server.url, out, progress=False)
    assert (out / MALE).read_bytes() == new
    gets = [(start, end) for method, path, start, end in server.traffic.requests if method == "GET" and path == f"/{MALE}"]
    assert gets == [(0, len(new))] * 2  # the resume from byte 3000 was answered with the whole file (200)


def test_a_file_replaced_during_the_download_is_fetched_again(served, tmp_path):
    server, root, old = served
    new = _zip(root / "new.zip", 4)
    server.change_during(f"/{MALE}", new, after=len(new) // 2)  # half old, half new: a zip matching neither
    out = download_release(server.url, tmp_path / "copy", progress=False)
    assert (out / MALE).read_bytes() == new
    assert (out / FEMALE).read_bytes() == old[FEMALE]
    assert not list(out.glob("*.incomplete*"))


def test_a_published_sha256_is_checked_and_a_damaged_copy_is_repaired(served, tmp_path):
    server, root, old = served
    server.publish_sha256 = True
    out = download_release(server.url, tmp_path / "copy", progress=False)
    damaged = bytearray(old[MALE])
    damaged[100] ^= 0xFF  # same size: the size-only check kept this
    (out / MALE).write_bytes(bytes(damaged))
    server.traffic.reset()
    download_release(server.url, out, progress=False)
    assert (out / MALE).read_bytes() == old[MALE]
    gets = {path for method, path, *_ in server.traffic.requests if method == "GET"}
    assert gets == {f"/{MALE}"}  # the intact female zip was hashed, not fetched


def test_without_a_published_sha256_an_edited_copy_is_fetched_again(served, tmp_path):
    server, root, old = served
    out = download_release(server.url, tmp_path / "copy", progress=False)
    damaged = bytearray(old[FEMALE])
    damaged[7] ^= 0x01
    (out / FEMALE).write_bytes(bytes(damaged))  # a new mtime: not the copy the record describes
    download_release(server.url, out, progress=False)
    assert (out / FEMALE).read_bytes() == old[FEMALE]


def test_a_second_download_into_the_same_folder_stops_with_one_line(served, tmp_path):
    server, root, old = served
    out = tmp_path / "copy"
    out.mkdir()
    with open(out / LOCK, "a") as held:  # what a running download holds (another open file: another process)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadError, match="another download is writing into"):
            download_release(server.url, out, progress=False)
    assert not (out / MALE).exists() and not list(out.glob("*.incomplete"))
    download_release(server.url, out, progress=False)
    assert (out / MALE).read_bytes() == old[MALE]


def test_a_redirect_loop_and_an_empty_folder_are_errors(served, tmp_path):
    server, root, old = served
    server.redirect_loop(f"/{MALE}")
    with pytest.raises(DownloadError, match="redirect loop"):
        download_release(server.url, tmp_path / "a", progress=False)
    (root / "empty").mkdir()
    with pytest.raises(DownloadError, match="nothing was written to"):
        download_release(server.url + "/empty", tmp_path / "b", progress=False)


def test_a_server_that_drips_one_byte_at_a_time_ends_the_attempts(served, tmp_path, monkeypatch):
    server, root, old = served
    monkeypatch.setenv("THERMVISION_DB_TOTAL_TIMEOUT", "0.5")
    monkeypatch.setenv("THERMVISION_DB_MIN_RATE", "1e12")
    monkeypatch.setenv("THERMVISION_DB_RETRIES", "1")
    server.drip(f"/{FEMALE}", interval=0.1, limit=60)  # at most 6 s of dripping per answer
    with pytest.raises(DownloadError, match=r"after 2 attempts \(TimeoutError"):
        download_release(server.url, tmp_path / "copy", progress=False)
    assert server.traffic.bytes_sent < 2 * 60  # each attempt stopped before the drip ran out
    # range reads in place: the same bound, the member and the URL named
    monkeypatch.setenv("THERMVISION_DB_IDLE_TIMEOUT", "5")
    server.drips.clear()
    RemoteReleaseSource(server.url).read("F", "Female Subjects/Set 1/frame_0000.txt")  # directory cached on disk
    source = RemoteReleaseSource(server.url)
    server.drip(f"/{FEMALE}", interval=0.1, limit=60)
    with pytest.raises(SourceError, match=r"frame_0001.txt.*2 attempts.*timed out"):
        source.read("F", "Female Subjects/Set 1/frame_0001.txt")
