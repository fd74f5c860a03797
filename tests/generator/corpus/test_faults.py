"""Corpus folders under faults and concurrency: two `generate` processes into one folder, a disk full before the
first identity, a distributed peer that never starts."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import generator.corpus.pipeline as pipeline_module
from generator.corpus.barrier import WORKERS_DIR, announce, wait_for
from generator.corpus.claims import Claims
from generator.corpus.pipeline import DiskFullError, GenerationPipeline
from generator.corpus.settings import GenerationSettings
from thermvision_db.schema.generated_corpus import CorpusError, GeneratedCorpus

pytestmark = pytest.mark.usefixtures("private_hash_cache")
REPO = Path(__file__).resolve().parents[3]
MOTION = "head_pose=3,expression=10"
SETTINGS = GenerationSettings(motion=MOTION, still_batch=1, still_steps=4)  # the CLI options below


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return env


def _cli(out: Path, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "thermvision_db", "generate", "-n", str(n), "--motion", MOTION, "--batch-size", "1",
            "--stills-steps", "4", "--device", "cpu", "--out", str(out), *extra]


def _pixels(root: Path) -> dict:
    return {str(p.relative_to(root)): np.asarray(Image.open(p)).tobytes()
            for p in sorted((root / "identities").rglob("*.png"))}


def test_two_generate_processes_into_one_folder_share_the_work(tmp_path):
    """Started together without a launcher: both exit 0, each identity is made once, the corpus equals one
    process's run, and nothing half-written is left."""
    out = tmp_path / "shared"
    procs = [subprocess.Popen(_cli(out, 3), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (stdout, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr[-3000:]
    made = [int(stdout.split("worker 0/1: ")[1].split(" identities generated")[0]) for stdout, _ in results]
    assert sum(made) == 3  # nothing made twice
    corpus = GeneratedCorpus(out)
    assert corpus.finished() == {0, 1, 2} and corpus.partial_dirs() == []
    assert len(corpus.read_manifest()) == 3
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".partial"))]

    alone = tmp_path / "alone"
    GenerationPipeline(SETTINGS, alone, device="cpu", progress=False).run(3)
    assert _pixels(out) == _pixels(alone)


def test_an_identity_claimed_by_another_process_is_done_last_and_made_if_the_holder_did_not(tmp_path, caplog):
    """A second process holds S000001's claim (and never makes it): this run makes S000000 and S000002 first,
    then waits for the claim, and makes S000001 itself once the holder lets go."""
    out, release = tmp_path / "claimed", tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, time; from generator.corpus.claims import Claims\n"
                               f"with Claims({str(out)!r}).claim('S000001', wait=False) as got:\n"
                               "    print(got, flush=True)\n"
                               f"    while not os.path.exists({str(release)!r}): time.sleep(0.05)"],
        env=_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "True"
    order = []
    real = GenerationPipeline.start_identity

    def recording(self, index, slot, summary):
        order.append(index)
        result = real(self, index, slot, summary)
        if index == 2:
            release.touch()  # the holder lets go only now: S000001 was put off while it held the claim
        return result

    pipe = GenerationPipeline(SETTINGS, out, device="cpu", progress=False)
    pipe.start_identity = recording.__get__(pipe)
    with caplog.at_level(logging.WARNING, logger="generator.corpus.claims"):
        summary = pipe.run(3)
    assert holder.wait(timeout=60) == 0
    assert order == [0, 2, 1]
    assert summary.generated == ["S000000", "S000002", "S000001"] and GeneratedCorpus(out).finished() == {0, 1, 2}
    assert f"S000001 by {os.uname().nodename} {holder.pid}" in caplog.text


# ---------------------------------------------------------------------------------------------- a full disk


def _enospc_writer(real_atomic_write, hit):
    """atomic_write that fails like a full disk (ENOSPC on write) for paths `hit` selects."""
    def write(path, writer, *args, **kwargs):
        if not hit(Path(path)):
            return real_atomic_write(path, writer, *args, **kwargs)

        def failing(handle):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_atomic_write(path, failing, *args, **kwargs)
    return write


@pytest.mark.parametrize("where", ["stills", "run.json"])
def test_a_disk_full_before_the_first_identity_is_a_disk_full_error(tmp_path, monkeypatch, where):
    import generator.stills.files as files
    import thermvision_db.io.atomic as atomic

    if where == "stills":
        monkeypatch.setattr(files, "atomic_write", _enospc_writer(atomic.atomic_write, lambda p: True))
    else:
        wrapped = _enospc_writer(atomic.atomic_write, lambda p: p.name == "run.json")
        monkeypatch.setattr(pipeline_module, "atomic_write_json",
                            lambda path, value: wrapped(path, lambda h: h.write(json.dumps(value).encode())))
    out = tmp_path / "full"
    with pytest.raises(DiskFullError, match=r"the disk holding .*full \(.*(still_000000\.png|run\.json)\): 0 "
                                            r"finished identities are kept; free space and run again"):
        GenerationPipeline(SETTINGS, out, device="cpu", progress=False).run(2)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written file left


# ---------------------------------------------------------------------------------------------- barrier


def test_a_peer_that_never_starts_is_named_and_the_run_fails_after_the_timeout(tmp_path):
    """`RANK=0 WORLD_SIZE=2` alone with --distinct: worker 1 never makes its stills."""
    out = tmp_path / "lonely"
    env = dict(_env(), RANK="0", WORLD_SIZE="2")
    start = time.monotonic()
    done = subprocess.run(_cli(out, 3, "--distinct", "0.99", "--barrier-timeout", "0.05"), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert ("waited 3 s for 1 stills (first: still_000001.png); worker(s) 1 of 2 never started (no "
            f".workers/<i>-of-2.json in {out})") in done.stderr
    assert "--barrier-timeout MINUTES" in done.stderr
    assert json.loads((out / WORKERS_DIR / "0-of-2.json").read_text())["pid"] > 0
    assert time.monotonic() - start < 300


def test_the_barrier_logs_missing_workers_periodically(tmp_path, caplog):
    announce(tmp_path, 1, 3)  # worker 1 started, worker 2 never did
    missing = [4, 5, 8]
    with caplog.at_level(logging.WARNING, logger="generator.corpus.barrier"), \
            pytest.raises(CorpusError, match=r"waited 1 s for 3 stills \(first: s4\); worker\(s\) 2 of 3 never "
                                             r"started .*; worker\(s\) 1 \(.* PID \d+\) started but have not finished"):
        wait_for(lambda: missing, root=tmp_path, what="stills", timeout=1.0, name=lambda s: f"s{s}",
                 owner=lambda s: 1 if s < 6 else 2, count=3, poll=0.05, log_every=0.25)
    logged = [r.getMessage() for r in caplog.records if "so far for 3 stills" in r.getMessage()]
    assert 2 <= len(logged) <= 5 and "worker(s) 2 of 3 never started" in logged[0]


def test_the_default_barrier_timeout_is_minutes_not_a_day(tmp_path):
    from generator.cli.generate import add_generate_parser
    import argparse

    pipe = GenerationPipeline(GenerationSettings(motion=MOTION), tmp_path / "x", progress=False)
    assert pipe.barrier_timeout == 30 * 60
    parser = add_generate_parser(argparse.ArgumentParser().add_subparsers())
    assert parser.parse_args([]).barrier_timeout == 30.0


def test_claims_name_their_holder_and_release_on_exit(tmp_path):
    claims = Claims(tmp_path)
    with claims.claim("S000007", wait=False) as mine:
        assert mine
        assert claims.holder("S000007") == f"{os.uname().nodename} {os.getpid()}"
    script = (f"from generator.corpus.claims import Claims\n"
              f"with Claims({str(tmp_path)!r}).claim('S000007', wait=False) as got: print(got)")
    assert subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True,
                          timeout=120).stdout.strip() == "True"
