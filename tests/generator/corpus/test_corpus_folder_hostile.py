"""The corpus folder is input: links, folders and junk in .locks/, .workers/ and identities/ (docs/generator-hostile-inputs.md)."""

from __future__ import annotations

import json
import os

import pytest

from generator.corpus.barrier import announce, read_heartbeat, stray_heartbeats
from generator.corpus.claims import Claims
from thermvision_db.schema.generated_corpus import IDENTITY_SCHEMA, CorpusError, GeneratedCorpus


def test_a_link_in_locks_is_never_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    claims = Claims(tmp_path / "corpus")
    claims.dir.mkdir(parents=True)
    os.symlink(outside, claims.dir / "S000001.lock")
    with claims.claim("S000001", wait=False) as mine:
        assert mine
    assert outside.read_text() == "precious\n"  # the target is untouched
    lock = claims.dir / "S000001.lock"
    assert not lock.is_symlink() and lock.read_text().split()[1] == str(os.getpid())


def test_a_directory_or_fifo_at_a_claim_path_is_named(tmp_path):
    claims = Claims(tmp_path)
    (claims.dir / "S000002.lock").mkdir(parents=True)
    with pytest.raises(CorpusError, match=r"S000002\.lock is a directory"):
        with claims.claim("S000002", wait=False):
            pass
    os.mkfifo(claims.dir / "S000003.lock")
    with pytest.raises(CorpusError, match=r"S000003\.lock is not a regular file"):
        with claims.claim("S000003", wait=False):  # O_NONBLOCK: a FIFO does not hang the run
            pass


def test_a_locks_folder_that_is_a_link_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "corpus").mkdir()
    os.symlink(elsewhere, tmp_path / "corpus" / ".locks")
    with pytest.raises(CorpusError, match=r"\.locks is a link or a file"):
        with Claims(tmp_path / "corpus").claim("x", wait=False):
            pass
    assert list(elsewhere.iterdir()) == []


def test_holder_reads_only_a_short_host_pid_line(tmp_path):
    claims = Claims(tmp_path)
    claims.dir.mkdir()
    (claims.dir / "a.lock").write_bytes(b"\x00\xff" * 10**6)
    (claims.dir / "b.lock").write_text("node7 1234\n")
    os.symlink(tmp_path / "nowhere", claims.dir / "c.lock")
    assert claims.holder("a") == "another process"
    assert claims.holder("b") == "node7 1234"
    assert claims.holder("c") == "another process"
    (claims.dir / "junk").mkdir()
    assert [p.name for p in claims.stray_entries()] == ["c.lock", "junk"]


@pytest.mark.parametrize("content", [b"[1, 2]", b"{}", b"not json", b'{"worker": 0, "count": 2, "host": 5, "pid": 1}',
                                     b'{"worker": 1, "count": 2, "host": "h", "pid": 1}'])
def test_a_heartbeat_that_is_not_this_workers_object_is_stale(tmp_path, content):
    (tmp_path / ".workers").mkdir()
    path = tmp_path / ".workers" / "0-of-2.json"
    path.write_bytes(content)
    assert read_heartbeat(path, 0, 2) is None


def test_heartbeat_link_and_directory(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    root = tmp_path / "corpus"
    (root / ".workers").mkdir(parents=True)
    os.symlink(outside, root / ".workers" / "0-of-1.json")
    assert read_heartbeat(root / ".workers" / "0-of-1.json", 0, 1) is None  # never read through the link
    announce(root, 0, 1)  # the rename replaces the link itself
    assert outside.read_text() == "{}"
    assert read_heartbeat(root / ".workers" / "0-of-1.json", 0, 1)["pid"] == os.getpid()
    (root / ".workers" / "1-of-2.json").mkdir()
    with pytest.raises(CorpusError, match=r"1-of-2\.json is a directory"):
        announce(root, 1, 2)
    (root / ".workers" / "notes.txt").write_text("x")
    assert [p.name for p in stray_heartbeats(root)] == ["1-of-2.json", "notes.txt"]


def _record(name: str, index: int) -> dict:
    """The fields every reader needs (`check_identity_record`); no videos."""
    return {"schema": IDENTITY_SCHEMA, "identity": name, "index": index, "gender": "female", "seed": index,
            "prompt": "a thermal face", "videos": []}


@pytest.mark.parametrize("damage", ["empty", "not json", "list", "other schema", "other identity", "link"])
def test_an_identity_folder_without_a_valid_record_is_damaged_not_finished(tmp_path, damage):
    corpus = GeneratedCorpus(tmp_path)
    good = corpus.identity_dir("S000000")
    good.mkdir(parents=True)
    (good / "identity.json").write_text(json.dumps(_record("S000000", 0)))
    bad = corpus.identity_dir("S000001")
    if damage == "link":
        os.symlink(good, bad)
    else:
        bad.mkdir()
        text = {"empty": None, "not json": "{", "list": "[1, 2]",
                "other schema": json.dumps({**_record("S000001", 1), "schema": "x"}),
                "other identity": json.dumps(_record("S000000", 0))}[damage]
        if text is not None:
            (bad / "identity.json").write_text(text)
    assert corpus.finished() == {0}
    assert [r["identity"] for r in corpus.records()] == ["S000000"]
    assert corpus.damaged() == [bad]
