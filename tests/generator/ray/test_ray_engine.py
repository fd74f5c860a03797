"""`--engine ray` on a local Ray instance (CPU, tiny preset): the same corpus as one process, file for file, also
after an actor is killed mid-identity or the driver is killed and the run resumed; retries have a limit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ray  # noqa: E402  (the [ray] extra; .ci/run installs it)

from generator.corpus.pipeline import GenerationPipeline  # noqa: E402
from generator.corpus.settings import GenerationSettings  # noqa: E402
from generator.ray.engine import RayOptions, generate_on_ray  # noqa: E402
from generator.ray.errors import SharedStorageError  # noqa: E402
from generator.ray.storage import check_every_node, check_folder, write_token  # noqa: E402
from thermvision_db.schema.generated_corpus import GeneratedCorpus  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_hash_cache")
MOTION = "head_pose=5,expression=10"
REPO = Path(__file__).resolve().parents[3]
# run-specific files: timings (summary.json), the single-process run's claim files and heartbeats
RUN_SPECIFIC = ("summary.json", ".locks/", ".workers/", ".ray/")


def _settings() -> GenerationSettings:
    return GenerationSettings(motion=MOTION, still_batch=2)


def _files(root: Path) -> dict[str, bytes]:
    return {rel: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not (rel := str(p.relative_to(root))).startswith(RUN_SPECIFIC)}


def _assert_same_files(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == []


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    summary = GenerationPipeline(_settings(), out, device="cpu", progress=False, writers=0).run(3)
    assert summary.failures == []
    return out


def _ray(out: Path, **options) -> object:
    options.setdefault("cpus_per_worker", 0.5)
    options.setdefault("writers", 0)
    return generate_on_ray(_settings(), out, 3, RayOptions(**options), device="cpu", progress=False)


def test_ray_corpus_equals_the_single_process_corpus_file_for_file(local_ray, reference, tmp_path):
    summary = _ray(tmp_path / "ray", writers=1)  # PNG/H.264 in a writer process beside the identity actor
    assert summary.generated == ["S000000", "S000001", "S000002"] and summary.failures == summary.retries == []
    _assert_same_files(reference, tmp_path / "ray")
    assert len(GeneratedCorpus(tmp_path / "ray").read_manifest()) == 3


def test_an_actor_killed_mid_identity_is_retried_and_the_corpus_is_the_same(local_ray, reference, tmp_path):
    out = tmp_path / "killed"
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(summary=_ray(out)), daemon=True)
    run.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and run.is_alive() and time.monotonic() < deadline:
        partial = list((out / "identities").glob(".partial-*/*_frames/*.png")) if (out / "identities").is_dir() else []
        names = [n for n in ray.util.list_named_actors() if n.startswith("thermvision-identity-")]
        if partial and names:
            killed = partial[0].parts[-3].removeprefix(".partial-")
            ray.kill(ray.get_actor(names[0]), no_restart=False)  # the process dies; Ray restarts the actor
        time.sleep(0.002)
    run.join(240)
    assert killed is not None, "the run finished before an actor could be killed"
    summary = result["summary"]
    assert summary.failures == [] and [r["item"] for r in summary.retries] == [killed]
    assert not GeneratedCorpus(out).partial_dirs()
    _assert_same_files(reference, out)


def test_a_run_resumed_after_the_driver_is_killed_gives_the_same_corpus(local_ray, reference, tmp_path):
    out = tmp_path / "driver"
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS="")
    cmd = [sys.executable, "-m", "thermvision_db", "generate", "-n", "3", "--motion", MOTION, "--batch-size", "2",
           "--device", "cpu", "--writers", "0", "--engine", "ray", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the driver and its Ray processes
    caught = False
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            ids = out / "identities"
            if ids.is_dir() and list(ids.glob("S*/identity.json")) and list(ids.glob(".partial-*/*_frames/*.png")):
                caught = True
                break
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray instance it started
        proc.wait()
    assert caught, "the run finished before its driver could be killed"
    assert GeneratedCorpus(out).partial_dirs() and len(GeneratedCorpus(out).finished()) < 3
    summary = _ray(out)
    assert summary.failures == [] and summary.skipped >= 1 and not GeneratedCorpus(out).partial_dirs()
    _assert_same_files(reference, out)


def test_an_identity_failing_every_time_is_reported_after_the_retry_limit(local_ray, reference, tmp_path):
    out = tmp_path / "bad"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("identities", "manifest.parquet"))
    (out / "stills" / "still_000001.png").write_bytes(b"not a png")  # a still that can never be animated
    summary = _ray(out, max_retries=1)
    assert summary.generated == ["S000000", "S000002"]
    assert [(f["identity"], f["attempts"]) for f in summary.failures] == [("S000001", 2)]
    assert [r["item"] for r in summary.retries] == ["S000001"] and "still_000001" in summary.failures[0]["error"]
    assert sorted(p.name for p in (out / "identities").iterdir()) == ["S000000", "S000002"]  # nothing half-written


def test_a_node_that_cannot_see_the_folder_fails_with_one_line(local_ray, tmp_path):
    with pytest.raises(SharedStorageError) as err:
        check_folder(tmp_path / "elsewhere", "0123")
    assert "elsewhere" in str(err.value) and "\n" not in str(err.value)
    token = write_token(tmp_path)
    check_every_node(tmp_path, token)  # every node of the local instance sees it
    (tmp_path / ".ray" / f"storage-{token}").write_text("another")  # as if a node mounted another folder there
    with pytest.raises(SharedStorageError, match="sees another") as err:
        check_every_node(tmp_path, token)
    assert "\n" not in str(err.value)


def test_load_dataset_with_engine_ray_reads_the_same_corpus_and_keeps_the_fingerprint(local_ray, reference, tmp_path,
                                                                                     hf_cache):
    from thermvision_db import load_dataset
    from thermvision_db.errors import InputError
    from thermvision_db.hf import door

    with_engine = door.generation_settings("tiny", 0, MOTION, {"engine": "ray", "still_batch": 2})
    assert with_engine.to_dict() == _settings().to_dict() and with_engine.fingerprint() == _settings().fingerprint()
    out = tmp_path / "hub"
    shutil.copytree(reference, out)
    rows = load_dataset("thermvision_db", "synthetic", num_identities=3, motion=MOTION, output_dir=str(out),
                        generator_options={"engine": "ray", "still_batch": 2}, cache_dir=hf_cache)["train"]
    assert rows.num_rows == 3 * (5 + 10)
    assert '"engine": "ray"' in (out / "summary.json").read_text()  # the Ray driver ran (and found all finished)
    _assert_same_files(reference, out)
    with pytest.raises(InputError, match="engine"):
        load_dataset("thermvision_db", "synthetic", num_identities=3, motion=MOTION, output_dir=str(out),
                     generator_options={"engine": "spark", "still_batch": 2}, cache_dir=hf_cache)
