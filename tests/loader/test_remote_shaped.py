"""Remote reads with read-ahead against a shaped loopback server (delay per request, bandwidth cap, faults):
one test per item of docs/loader-hostile-inputs.md, "Remote reads with read-ahead"."""

import threading
import time
import zipfile

import numpy as np
import pytest

from tests.support.shaped_server import ShapedServer
from thermvision_db import load_dataset
from thermvision_db.demo.miniature import write_miniature
from thermvision_db.schema.members import ARCHIVES
from thermvision_db.sources.base import SourceError
from thermvision_db.sources.local import ReleaseSource
from thermvision_db.sources.readahead import ReadAhead
from thermvision_db.sources.released import frame_rows
from thermvision_db.sources.remote import RemoteReleaseSource

IDENTITY = "F_01"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_miniature(tmp_path_factory.mktemp("shaped"), identities=(IDENTITY, "F_02", "M_10"),
                           frames_per_video=12, folders=False)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMVISION_DB_REMOTE_CACHE", str(tmp_path / "zipdirs"))
    monkeypatch.setenv("THERMVISION_DB_RETRY_WAIT", "0.01")
    monkeypatch.setenv("THERMVISION_DB_READAHEAD_CHUNK", "8192")  # many chunks even in the miniature


def _serve(corpus, **kw):
    kw.setdefault("delay", 0.01)
    kw.setdefault("rate", None)
    return ShapedServer(corpus.root, lifetime=120, **kw)


def _member(corpus, identity=IDENTITY):
    return next(m for m in corpus.members if m.identity == identity)


def _warm(server, corpus):
    """Fetch both central directories into the disk cache, so a fault meets a member read, not the directory."""
    for gender in ("F", "M"):
        member = next(m for m in corpus.members if m.gender == gender)
        RemoteReleaseSource(server.url).read(gender, member.label_txt(0))
    server.counters.reset()
    server.faults.clear()


def _rows(stream):
    return [{**row, "image": np.asarray(row["image"])} for row in stream]


def _frames(data_dir, identity=IDENTITY):
    return _rows(load_dataset("thermvision_db", "frames", data_dir=data_dir, split="train", split_by="none",
                              identities=[identity], streaming=True))


def _assert_same(remote, local):
    assert len(remote) == len(local) > 0
    for a, b in zip(remote, local):
        assert np.array_equal(a.pop("image"), b.pop("image"))
        assert a == b


def test_rows_over_a_shaped_link_equal_the_local_zips(corpus):
    with _serve(corpus, delay=0.05, rate=20e6) as server:
        remote = _frames(server.url)
        gets = server.gets()
        in_flight = server.counters.max_in_flight
    _assert_same(remote, _frames(str(corpus.root)))
    assert in_flight > 1  # range requests ran concurrently
    assert not any(path.startswith("/Male") for _, path, *_ in gets)
    with zipfile.ZipFile(corpus.root / ARCHIVES["F"]) as archive:
        infos = sorted(archive.infolist(), key=lambda i: i.header_offset)
        ends = [i.header_offset for i in infos[1:]] + [archive.start_dir]
    spans = [(i.header_offset, end) for i, end in zip(infos, ends) if f"Subject-1/" in i.filename]
    for _, _, start, end, _ in gets:  # every byte asked lies in the identity's members or the directory tail
        assert start >= infos[0].header_offset and (end >= ends[-1] or any(a <= start and end <= b for a, b in
                                                                           _merged(spans)))


def _merged(spans):
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def test_a_changed_etag_mid_read_is_an_error_naming_the_url(corpus):
    with _serve(corpus) as server:
        _warm(server, corpus)
        source = RemoteReleaseSource(server.url)
        server.fault("etag_change")
        with pytest.raises(SourceError, match="changed under us") as err:
            source.read("F", _member(corpus).frame_png(1))
        assert f"{server.url}/Female Subjects.zip" in str(err.value)


def test_a_server_that_ignores_range_is_refused_without_reading_the_body(corpus):
    with _serve(corpus, rate=2e6) as server:
        _warm(server, corpus)
        source = RemoteReleaseSource(server.url)
        reader = source.archives["F"][0].reader
        before = reader.bytes_read
        server.fault("ignore_range", times=10)
        with pytest.raises(SourceError, match="ignores HTTP Range.*download the archives") as err:
            source.read("F", _member(corpus).frame_png(1))
        assert "Female Subjects.zip" in str(err.value)
        assert reader.bytes_read == before  # no byte of the 200 body was taken in


@pytest.mark.parametrize("kind, header", [("wrong_range", "Content-Range"), ("wrong_length", "Content-Length")])
def test_a_wrong_content_range_is_refused(corpus, kind, header):
    with _serve(corpus) as server:
        _warm(server, corpus)
        server.fault(kind, times=10)
        with pytest.raises(SourceError, match=f"{header}.*refused") as err:
            RemoteReleaseSource(server.url).read("F", _member(corpus).frame_png(2))
        assert "frame_0002.png" in str(err.value) and "Female Subjects.zip" in str(err.value)


def test_416_names_url_and_member(corpus):
    with _serve(corpus) as server:
        _warm(server, corpus)
        server.fault("status_416", times=10)
        with pytest.raises(SourceError, match="416") as err:
            RemoteReleaseSource(server.url).read("F", _member(corpus).label_txt(3))
        assert "frame_0003.txt" in str(err.value) and "Female Subjects.zip" in str(err.value)


@pytest.mark.parametrize("kind", ["short", "reset"])
def test_short_bodies_and_resets_are_retried_then_named(corpus, kind):
    member = _member(corpus)
    expected = ReleaseSource(corpus.root).read("F", member.frame_png(4))
    with _serve(corpus) as server:
        _warm(server, corpus)
        fault = server.fault(kind, times=2)
        assert RemoteReleaseSource(server.url).read("F", member.frame_png(4)) == expected
        assert fault.hits == 2
        server.fault(kind, times=100)
        with pytest.raises(SourceError, match="4 attempts") as err:
            RemoteReleaseSource(server.url).read("F", member.frame_png(5))
        assert "frame_0005.png" in str(err.value) and f"{server.url}/Female Subjects.zip" in str(err.value)


def test_more_bytes_than_asked_are_not_read(corpus):
    member = _member(corpus)
    local = ReleaseSource(corpus.root)
    with _serve(corpus) as server:
        _warm(server, corpus)
        source = RemoteReleaseSource(server.url)
        server.fault("extra", times=3, arg=1 << 20)
        for i in range(6):  # later answers on the same keep-alive connection are not mixed up with the extra bytes
            assert source.read("F", member.frame_png(i)) == local.read("F", member.frame_png(i))
        reader = source.archives["F"][0].reader
        assert reader.bytes_read < (corpus.root / ARCHIVES["F"]).stat().st_size  # the extra MiB not taken in


def test_a_dripping_server_is_bounded_by_the_timeouts(corpus, monkeypatch):
    with _serve(corpus) as server:
        _warm(server, corpus)
        monkeypatch.setenv("THERMVISION_DB_TOTAL_TIMEOUT", "1.5")  # the HEADs of a loaded machine fit; a drip never
        monkeypatch.setenv("THERMVISION_DB_MIN_RATE", "1e12")
        monkeypatch.setenv("THERMVISION_DB_RETRIES", "1")
        source = RemoteReleaseSource(server.url)
        server.fault("drip", times=10, arg=(0.05, 400))  # at most 20 s per answer
        with pytest.raises(SourceError, match=r"frame_0006.png.*2 attempts.*timed out"):
            source.read("F", _member(corpus).frame_png(6))
        assert server.counters.bytes_sent < 200  # each attempt stopped long before its drip ran out


def test_a_one_connection_server_still_reads_every_row(corpus, monkeypatch):
    monkeypatch.setenv("THERMVISION_DB_REMOTE_WORKERS", "6")
    with _serve(corpus, max_in_flight=1) as server:
        remote = _frames(server.url, "M_10")
        refused = server.counters.refused
    _assert_same(remote, _frames(str(corpus.root), "M_10"))
    assert refused > 0  # the concurrent requests met the limit, and were retried one at a time


def test_read_ahead_stays_within_its_budget(corpus, monkeypatch):
    budget = 40_000
    monkeypatch.setenv("THERMVISION_DB_READAHEAD_BYTES", str(budget))
    monkeypatch.setenv("THERMVISION_DB_READAHEAD_CHUNK", "6000")
    member = _member(corpus)
    with _serve(corpus, delay=0.02) as server:
        source = RemoteReleaseSource(server.url)
        remote = [row for _, row in frame_rows(source, member)]
        archive = source.archives["F"][0]
        peak = archive.ahead.peak
    local = [row for _, row in frame_rows(ReleaseSource(corpus.root), member)]
    assert [r["image"]["bytes"] for r in remote] == [r["image"]["bytes"] for r in local]
    with zipfile.ZipFile(corpus.root / ARCHIVES["F"]) as zf:
        largest = max(i.compress_size + 200 for i in zf.infolist() if "Subject-1/" in i.filename
                      and not i.filename.endswith(".mp4"))
    assert 0 < peak <= max(budget, largest), (peak, budget)
    assert peak > archive.ahead.share // 2  # it did read ahead (a third of the budget per run)
    assert archive.ahead.held >= 0


def test_a_stalled_fetch_wait_times_out(monkeypatch):
    monkeypatch.setenv("THERMVISION_DB_TOTAL_TIMEOUT", "0.1")
    monkeypatch.setenv("THERMVISION_DB_RETRY_WAIT", "0.01")
    never = threading.Event()
    ahead = ReadAhead(lambda start, end, what: never.wait(30), "http://example.invalid/x.zip", attempts=1)
    with pytest.raises(SourceError, match=r"'a.png' from http://example.invalid/x.zip: no answer within"):
        ahead.get("run", 0, lambda base: [(0, 10, "a.png"), (10, 20, "b.png")][base:], 0)  # not the fetch's 30 s
    never.set()
    ahead.close()


def test_the_first_frame_comes_after_few_round_trips(corpus, monkeypatch):
    """HEADs of both zips (together), the end record, the central directory, then a video's runs together."""
    monkeypatch.delenv("THERMVISION_DB_READAHEAD_CHUNK")  # the default: a miniature run is one request
    member = _member(corpus)
    with _serve(corpus, delay=0.05) as server:
        source = RemoteReleaseSource(server.url)
        next(iter(frame_rows(source, member)))
        before_first = list(server.counters.requests)
    heads = [r for r in before_first if r[0] == "HEAD"]
    gets = [r for r in before_first if r[0] == "GET"]
    assert len(heads) <= 2 and len(gets) <= 2 + 3, before_first  # directory (2), PNGs + labels (+ MP4 probe)


def test_abandoned_sources_leave_no_threads_behind(corpus):
    import gc

    member = _member(corpus)
    with _serve(corpus, delay=0.0) as server:
        counts = []
        for _ in range(4):
            source = RemoteReleaseSource(server.url)
            source.read("F", member.frame_png(0))  # a run left mid-way: its read-ahead still in flight
            del source
            gc.collect()
            counts.append(threading.active_count())
        deadline = time.monotonic() + 30  # a bound, not a speed: a loaded machine ends threads late
        while threading.active_count() > counts[0] + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        counts.append(threading.active_count())
    assert counts[-1] <= counts[0] + 2, counts


def test_a_reset_head_is_retried_not_taken_for_a_missing_zip(corpus):
    """fsspec turns a HEAD and its fallback GET that both lose their connection into FileNotFoundError."""
    member = _member(corpus)
    with _serve(corpus) as server:
        server.head_resets = 2
        source = RemoteReleaseSource(server.url)
        assert source.genders() == ["F", "M"] and server.head_resets == 0
        assert source.read("F", member.label_txt(0)) == ReleaseSource(corpus.root).read("F", member.label_txt(0))
        server.head_resets = 1000
        with pytest.raises(SourceError, match=r"cannot reach .*Subjects.zip after 4 attempts"):
            RemoteReleaseSource(server.url)
