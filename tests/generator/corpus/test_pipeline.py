"""The synthetic configuration end to end: tiny preset, CPU, offline.

Corpora are compared by what they hold: stills and PNG frames pixel for pixel, labels and records exactly,
MP4s by their decoded frames (one gray level of tolerance: H.264 byte reproducibility across processes is not
promised, see video.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from generator.animate.motion.varied import varied_program
from generator.corpus.pipeline import DiskFullError, GenerationPipeline
from generator.corpus.workers import Worker, parse_shard
from generator.stills.prompts import image_seed, sample_identity
from generator.corpus.settings import DEFAULT_GOP, GenerationSettings, parse_motion
from thermvision_db import load_dataset
from thermvision_db.schema.generated_corpus import CorpusError, GeneratedCorpus
from thermvision_db.io.decode import read_frames
from thermvision_db.tools.pytorch import ClipSampler

pytestmark = pytest.mark.usefixtures("private_hash_cache")
MOTION = "head_pose=5,expression=10"
REPO = Path(__file__).resolve().parents[3]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _generate(out: Path, n: int, worker: Worker | None = None, writers: int | None = None, **settings) -> object:
    settings.setdefault("motion", MOTION)
    settings.setdefault("still_batch", 2)
    return GenerationPipeline(GenerationSettings(**settings), out, device="cpu", progress=False,
                              writers=writers).run(n, worker=worker)


def _corpus_content(root: Path) -> dict:
    """Everything a corpus holds except the MP4 bytes: file name -> bytes (JSON) or pixels (PNG)."""
    content = {}
    ident = root / "identities"
    for path in sorted(ident.rglob("*")):
        rel = str(path.relative_to(ident))
        if path.suffix == ".png":
            content[rel] = np.asarray(Image.open(path)).tobytes()
        elif path.suffix == ".json":
            content[rel] = path.read_bytes()
        elif path.suffix == ".npz":
            with np.load(path) as z:
                content[rel] = {k: z[k].tobytes() for k in z.files}
        elif path.suffix == ".mp4":
            content[rel] = read_frames(path)
    return content


def _assert_same_corpus(a: Path, b: Path) -> None:
    ca, cb = _corpus_content(a), _corpus_content(b)
    assert sorted(ca) == sorted(cb)
    for key in ca:
        if key.endswith(".mp4"):
            diff = np.abs(ca[key].astype(int) - cb[key].astype(int))
            assert ca[key].shape == cb[key].shape and diff.max() <= 1, key
        else:
            assert ca[key] == cb[key], key
    ma, mb = GeneratedCorpus(a).read_manifest(), GeneratedCorpus(b).read_manifest()
    assert ma.equals(mb)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Three identities made in one uninterrupted in-process run."""
    out = tmp_path_factory.mktemp("reference")
    summary = _generate(out, 3)
    assert summary.failures == []
    return out


def test_rows_labels_and_provenance(reference, hf_cache):
    ds = load_dataset("thermvision_db", "synthetic", num_identities=3, motion=MOTION, output_dir=str(reference),
                      generator_options={"still_batch": 2}, cache_dir=hf_cache)
    train = ds["train"]  # indices 0..2 all fall in the train part of 19/3/3
    assert set(ds) == {"train"} and train.num_rows == 3 * (5 + 10)
    names = train.features["identity"].names
    assert names == ["S000000", "S000001", "S000002"]
    programs = {(i, set_name): varied_program(0, i, set_name, frames)
                for i in range(3) for set_name, frames in (("head_pose", 5), ("expression", 10))}
    for row in train:
        identity = int(names[row["identity"]][1:])
        expected = sample_identity(0, identity)
        assert row["seed"] == image_seed(0, identity) and row["prompt"] == expected.prompt
        assert train.features["gender"].int2str(row["gender"]) == expected.attributes.gender
        assert train.features["qc"].int2str(row["qc"]) == "ok"
        face = row["faces"][0]  # every frame labelled: the still's labels carried through the motion
        assert len(row["faces"]) == 1 and train.features["faces"].feature["source"].int2str(face["source"]) == "propagated"
        x, y, w, h = face["bbox"]
        assert w > 0 and h > 0 and 0 <= x and x + w <= row["image"].width and y + h <= row["image"].height
        assert np.asarray(face["landmarks"]).shape == (54, 2)
        set_name = train.features["set"].int2str(row["set"])
        program, i = programs[identity, set_name], row["frame_index"]  # varied: each identity its own program
        for axis in ("yaw", "pitch", "roll"):  # the pose each frame was given, in degrees
            assert row["head_pose"][axis] == pytest.approx(float(getattr(program, axis)[i]), abs=1e-3)
        assert row["expression"] == program.expression[i]
        assert row["eye_open"] == pytest.approx(program.eye_open[i], abs=1e-6)
        assert row["mouth_open"] == pytest.approx(program.mouth_open[i], abs=1e-6)
        assert row["driving_template"] == f"varied(seed=0, identity={identity}, {set_name}, {len(program)})"
    manifest = GeneratedCorpus(reference).read_manifest()
    assert list(manifest["identity"]) == names and list(manifest["num_frames"]) == [15, 15, 15]
    assert all(json.loads(w)[0]["sha256"] for w in manifest["weights"])  # tiny FLUX files are hashed too
    assert set(json.loads(manifest["motion"][0])["program"]) == {"head_pose", "expression"}
    videos = load_dataset("thermvision_db", "synthetic_videos", output_dir=str(reference), cache_dir=hf_cache)["train"]
    assert videos.num_rows == 6 and set(videos["num_frames"]) == {5, 10}
    first = videos[0]
    frames = read_frames(first["video"]["path"])
    assert frames.shape[0] == first["num_frames"] == len(first["boxes"]) == len(first["head_pose"])
    assert len(first["expression"]) == len(first["eye_open"]) == len(first["mouth_open"]) == first["num_frames"]
    assert json.loads(manifest["motion"][0])["kind"] == "varied"


def test_same_settings_in_another_output_dir_generate_there(reference, hf_cache, tmp_path):
    """The cache is keyed on the corpus folder too: new output_dir, same settings -> the folder is written."""
    kwargs = dict(num_identities=3, motion=MOTION, generator_options={"still_batch": 2}, cache_dir=hf_cache)
    first = load_dataset("thermvision_db", "synthetic", output_dir=str(reference), **kwargs)["train"]
    other = tmp_path / "elsewhere"
    second = load_dataset("thermvision_db", "synthetic", output_dir=str(other), **kwargs)["train"]
    assert len(list((other / "identities").iterdir())) == 3
    assert second.num_rows == first.num_rows


def test_rows_equal_the_files(reference):
    """A frame row's image is the PNG on disk, which is the MP4's frame up to H.264 loss."""
    corpus = GeneratedCorpus(reference)
    record = corpus.records()[1]
    key, row = next(corpus.frame_rows(record))
    png = np.asarray(Image.open(row["image"]["path"]).convert("RGB"))  # gray frames: 1-channel PNG
    mp4 = read_frames(corpus.identity_dir(record["identity"]) / record["videos"][0]["mp4"])[0]
    assert key == f"{record['identity']}_head_pose/00000" and np.abs(png.astype(int) - mp4.astype(int)).mean() < 8


def test_rerun_skips_and_extends(reference, tmp_path):
    out = tmp_path / "grow"
    shutil.copytree(reference, out)
    again = _generate(out, 3)
    assert again.generated == [] and again.skipped == 3
    more = _generate(out, 4)
    assert more.generated == ["S000003"] and more.skipped == 3
    assert [r["identity"] for r in GeneratedCorpus(out).records()] == ["S000000", "S000001", "S000002", "S000003"]


def test_shards_give_the_same_corpus(reference, tmp_path):
    out = tmp_path / "shards"
    first = _generate(out, 3, worker=Worker(0, 2))
    second = _generate(out, 3, worker=Worker(1, 2))
    # blocks of still_batch=2: block 0 (identities 0, 1) -> worker 0, block 1 (identity 2) -> worker 1
    assert first.generated == ["S000000", "S000001"] and second.generated == ["S000002"]
    _assert_same_corpus(reference, out)


# The CLI in a subprocess that SIGKILLs itself at a fixed point: the second identity's files are all written
# (its writers finished) but its folder is not yet renamed into place. No polling, so no race with the rename.
KILL_AT_SECOND_FINISH = """
import os, signal, sys
from generator.corpus.pipeline import GenerationPipeline
real, calls = GenerationPipeline.finish_identity, []
def finish_or_die(self, pending, summary):
    calls.append(pending.name)
    if len(calls) == 2:
        for job in pending.jobs:
            job.result()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, pending, summary)
GenerationPipeline.finish_identity = finish_or_die
from thermvision_db.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_run_restarts_to_the_same_corpus(reference, tmp_path):
    out = tmp_path / "killed"
    args = ["generate", "-n", "3", "--motion", MOTION, "--batch-size", "2", "--device", "cpu", "--out", str(out)]
    log = tmp_path / "killed.log"  # a file, not a pipe: writer processes outliving the kill must not hold the test
    with open(log, "w") as handle:
        result = subprocess.run([sys.executable, "-c", KILL_AT_SECOND_FINISH, *args], env=_env(), stdout=handle,
                                stderr=subprocess.STDOUT, timeout=300)
    assert result.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    corpus = GeneratedCorpus(out)
    assert corpus.finished() == {0}  # the first identity is in place
    partial = corpus.partial_dirs()  # the second is on disk, complete but for its record, and not in the corpus
    assert [p.name for p in partial if p.name.endswith("S000001")] and any(p.rglob("*.png") for p in partial)
    summary = _generate(out, 3)
    assert summary.failures == [] and not corpus.partial_dirs()
    assert summary.skipped == 1 and summary.generated == ["S000001", "S000002"]
    _assert_same_corpus(reference, out)


def test_two_torchrun_processes_give_the_same_corpus(reference, tmp_path):
    import torch

    out = tmp_path / "torchrun"
    env = _env()
    # torchrun sets OMP_NUM_THREADS=1 when unset; CPU float sums depend on the thread count, so match ours
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "thermvision_db", "generate", "-n", "3", "--motion", MOTION, "--batch-size", "2", "--device", "cpu",
           "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = sorted(out.glob("summary.*-of-2.json"))
    assert [json.loads(p.read_text())["generated"] for p in summaries] == [2, 1]
    _assert_same_corpus(reference, out)


def test_distinct_filter_skips_a_duplicate(tmp_path):
    out = tmp_path / "distinct"

    def embed(images):  # candidate 1 is declared a copy of candidate 0
        vectors = np.eye(len(images))
        vectors[1] = vectors[0]
        return vectors

    settings = GenerationSettings(motion="head_pose=3,expression=10", still_batch=2, distinct=0.9)
    GenerationPipeline(settings, out, device="cpu", progress=False, embed=embed).run(2)
    records = GeneratedCorpus(out).records()
    assert [(r["identity"], r["slot"]) for r in records] == [("S000000", 0), ("S000001", 2)]
    assert records[1]["seed"] == image_seed(0, 2)
    decisions = json.loads((out / "filter.json").read_text())["decisions"]
    assert [d["accepted"] for d in decisions] == [True, False, True]


def test_pixel_embedding_and_selection():
    from generator.corpus.distinct import pixel_embedding, select_distinct

    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    inverted = Image.fromarray(255 - np.asarray(a))
    e = pixel_embedding([a, a, inverted])
    assert e[0] @ e[1] == pytest.approx(1.0) and e[0] @ e[2] == pytest.approx(-1.0, abs=1e-6)
    candidates = np.array([[1, 0], [1, 0.01], [0, 1], [1, 1]])  # [1, 1] is at cosine 1/sqrt(2) of both axes
    assert select_distinct(candidates, threshold=0.8, needed=5)[0] == [0, 2, 3]
    assert select_distinct(candidates, threshold=0.6, needed=5)[0] == [0, 2]
    assert select_distinct(candidates, threshold=0.8, needed=2)[0] == [0, 2]


def test_detector_labels_are_kept_beside_propagated(tmp_path):
    from tests.support.tiny_onnx import write_yolo_detector

    # a detector that always sees one face at (24..40, 20..44) of its 64x64 input
    detector = write_yolo_detector(tmp_path / "det.onnx", [[32, 32, 16, 24, 0.9]], input_size=(64, 64))
    out = tmp_path / "det"
    summary = _generate(out, 1, motion="head_pose=3,expression=10", label_detector=str(detector))
    assert summary.failures == []
    record = GeneratedCorpus(out).records()[0]
    assert record["labels"]["still_labels"] == "detector"
    size = record["videos"][0]["width"]
    labels = json.loads((out / "identities/S000000/head_pose.labels.json").read_text())
    for frame in labels["frames"]:
        assert [f["source"] for f in frame["faces"]] == ["propagated", "detector"]
        k = size / 64  # the frame is the detector input scaled by k
        assert frame["faces"][1]["bbox"] == pytest.approx([24 * k, 20 * k, 16 * k, 24 * k], abs=1e-3)
    assert labels["disagreement"] is not None and "frames" in json.dumps(labels["disagreement"])


def test_bad_settings_fail_clearly(tmp_path, hf_cache):
    with pytest.raises(ValueError, match="unknown preset 'flux-schnell'.*tiny"):
        GenerationSettings(preset="flux-schnell")
    with pytest.raises(ValueError, match="unknown preset"):
        load_dataset("thermvision_db", "synthetic", num_identities=2, preset="flux-schnell", cache_dir=hf_cache)
    with pytest.raises(ValueError, match="motion 'wiggle'"):
        parse_motion("wiggle")
    with pytest.raises(ValueError, match="expression program needs at least 10"):
        parse_motion("expression=4")
    with pytest.raises(ValueError, match="--shard takes i/n"):
        parse_shard("3")
    with pytest.raises(ValueError, match="needs num_identities=N"):
        load_dataset("thermvision_db", "synthetic", cache_dir=hf_cache)


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CorpusError, match=r"cannot write the generated corpus to .*a_file/corpus"):
        _generate(blocker / "corpus", 1)


def test_other_settings_in_the_same_folder_are_refused(reference, tmp_path):
    out = tmp_path / "mixed"
    shutil.copytree(reference, out)
    with pytest.raises(CorpusError, match="other settings \\(changed: seed\\)"):
        _generate(out, 3, seed=1)


def test_full_disk_is_refused_before_starting(tmp_path, monkeypatch):
    import generator.corpus.pipeline as pipeline

    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1024, 1024))
    with pytest.raises(DiskFullError, match="GiB free; 2 identities need about"):
        _generate(tmp_path / "full", 2)


def test_disk_filling_up_mid_run_keeps_finished_identities(reference, tmp_path, monkeypatch):
    import thermvision_db.io.encode as video

    real = video.H264Writer.close
    calls = {"n": 0}

    def failing(self):
        calls["n"] += 1
        if calls["n"] == 3:  # the second identity's first video
            self.abort()
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self)

    monkeypatch.setattr(video.H264Writer, "close", failing)  # inline writers: the patch is seen
    out = tmp_path / "filling"
    with pytest.raises(DiskFullError, match="disk holding .* is full.*1 finished identities are kept"):
        _generate(out, 3, writers=0)
    corpus = GeneratedCorpus(out)
    assert corpus.finished() == {0} and corpus.partial_dirs() == []
    monkeypatch.setattr(video.H264Writer, "close", real)
    _generate(out, 3)
    _assert_same_corpus(reference, out)


def test_generate_cli_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "thermvision_db", "generate", "-n", "2", "--motion",
                           "head_pose=3,expression=10", "--device", "cpu", "--out", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 identities generated" in done.stdout and "identities/hour" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generated"] == 2 and abs(sum(summary["stage_share"].values()) - 1) < 1e-3
    bad = subprocess.run([sys.executable, "-m", "thermvision_db", "generate", "-n", "2", "--preset", "nope",
                          "--out", str(out)], env=_env(), capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "unknown preset 'nope'" in bad.stderr


def test_generated_corpus_side_by_side_with_the_release(reference, mini, tmp_path, hf_cache):
    """`evaluate GENERATED --compare RELEASED`: the generated folder is read through the synthetic config."""
    from generator.evaluate.report import evaluate

    evaluate(reference, tmp_path / "report", compare_dir=mini.root, cache_dir=hf_cache, progress=False,
             fid_features="none")
    numbers = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert numbers["names"] == ["released", "generated"]
    assert numbers["realism"] == {"skipped": "no feature extractor requested"}
    assert (tmp_path / "report" / "comparison.png").stat().st_size > 0
    generated = numbers["corpora"]["generated"]
    assert generated["frames"] == 45 and generated["qc_rates"]["ok"] == 1.0


def test_eye_lip_model_sets_the_source_opening(tmp_path):
    """A 203-point model with placed eyes and lips: the recorded source ratios are the analytic ones."""
    from tests.support.tiny_onnx import write_landmarker203

    points = np.random.default_rng(0).uniform(0.2, 0.8, (203, 2))
    placed = {0: (0.30, 0.40), 12: (0.40, 0.40), 6: (0.35, 0.38), 18: (0.35, 0.42),  # left eye 0.04 / 0.10
              24: (0.60, 0.40), 36: (0.70, 0.40), 30: (0.65, 0.385), 42: (0.65, 0.415),  # right eye 0.03 / 0.10
              48: (0.40, 0.70), 66: (0.60, 0.70), 90: (0.50, 0.68), 102: (0.50, 0.74)}  # lips 0.06 / 0.20
    for i, xy in placed.items():
        points[i] = xy
    model = write_landmarker203(tmp_path / "lmk203.onnx", points)
    out = tmp_path / "eyes"
    _generate(out, 1, motion="head_pose=3,expression=10", eye_lip_model=str(model))
    labels = GeneratedCorpus(out).records()[0]["labels"]
    assert labels["eye_lip_measured"] is True
    assert labels["source_eye_ratio"] == pytest.approx([0.4, 0.3], abs=1e-4)
    assert labels["source_lip_ratio"] == pytest.approx(0.3, abs=1e-4)


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1, 0)),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1)),  # torchrun, accelerate --multi_gpu
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}, (2, 3, 0)),
    ({"PMI_RANK": "1", "PMI_SIZE": "2"}, (1, 2, 0)),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}, (5, 8, 1)),
])
def test_workers_from_each_launcher(env, expected):
    from generator.corpus.workers import launcher_rank

    assert launcher_rank(env) == expected
    rank, world, local = expected
    worker = Worker.from_env("1/2", env=env)  # a scheduler shard on top: shard-major numbering
    assert (worker.index, worker.count, worker.local_rank) == (world + rank, 2 * world, local)
    owned = [b for b in range(4 * world) if worker.owns(b)]
    assert owned == [world + rank, 3 * world + rank]


def test_streaming_has_one_shard_per_identity(reference):
    import torch

    stream = load_dataset("thermvision_db", "synthetic", output_dir=str(reference), split="train", streaming=True)
    assert stream.num_shards == 3
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2, collate_fn=lambda row: row)
    keys = [(row["video_id"], row["frame_index"]) for row in loader]
    assert len(keys) == len(set(keys)) == 45


def test_written_files_get_the_umask_mode_not_a_private_one(reference):
    """Atomic writes go through mkstemp (0600); a corpus on a shared cluster must stay readable."""
    mask = os.umask(0)
    os.umask(mask)
    for path in (reference / "identities/S000000/identity.json", reference / "stills/still_000000.json",
                 reference / "stills/still_000000.png", reference / "manifest.parquet", reference / "run.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_barrier_times_out_with_a_clear_error(reference, tmp_path):
    """A worker waiting for identities another worker never makes fails with the count and the first name."""
    out = tmp_path / "barrier"
    shutil.copytree(reference, out)
    pipeline = GenerationPipeline(GenerationSettings(motion=MOTION, still_batch=2), out, progress=False,
                                  barrier_timeout=0.3)
    pipeline.wait_for_identities(3)  # all there: returns at once
    with pytest.raises(CorpusError, match=r"2 identities are not finished .*first: S000003"):
        pipeline.wait_for_identities(5)  # one process: nobody else will make them, so no wait at all
    pipeline.worker = Worker(0, 2)  # one of two workers: waits for the other, then fails naming what is missing
    with pytest.raises(CorpusError, match=r"waited 0 s for 2 identities .*first: S000003"):
        pipeline.wait_for_identities(5)


def test_mp4_only_corpus_loads_its_frames_from_the_video(reference, tmp_path, hf_cache):
    """frames='none' (CLI --frame-files none): no PNG on disk, the same MP4 bytes, rows decoded from the MP4."""
    out = tmp_path / "mp4only"
    ds = load_dataset("thermvision_db", "synthetic", num_identities=1, motion=MOTION, output_dir=str(out),
                      generator_options={"still_batch": 2, "frames": "none"}, cache_dir=hf_cache)["train"]
    folder = out / "identities" / "S000000"
    assert not list(folder.rglob("*.png"))[1:] and [p.name for p in folder.rglob("*.png")] == ["still.png"]
    record = GeneratedCorpus(out).records()[0]
    assert [v["frames"] for v in record["videos"]] == [None, None]
    for video in ("head_pose.mp4", "expression.mp4"):  # same frames, same encoder: byte-identical videos
        assert (folder / video).read_bytes() == (reference / "identities" / "S000000" / video).read_bytes()
    decoded = np.concatenate([read_frames(folder / "head_pose.mp4"), read_frames(folder / "expression.mp4")])
    assert ds.num_rows == len(decoded) == 15
    for row, frame in zip(ds, decoded):
        assert row["image"].mode == "RGB" and np.array_equal(np.asarray(row["image"]), frame)
    with pytest.raises(ValueError, match="frames must be 'png' or 'none'"):
        GenerationSettings(frames="jpeg")
    videos = load_dataset("thermvision_db", "synthetic_videos", output_dir=str(out), cache_dir=hf_cache)["train"]
    row = videos[0]
    assert row["frame_files"] is None  # nothing but the MP4: clips seek in it, and equal the frame rows
    clip = ClipSampler(3)(row)
    by_frame = {(r["video_id"], r["frame_index"]): np.asarray(r["image"]) for r in ds}
    assert np.array_equal(clip["frames"].transpose(0, 2, 3, 1),
                          np.stack([by_frame[row["video_id"], i] for i in clip["frame_indices"]]))


def test_clips_of_a_generated_corpus_read_its_png_frames_and_its_short_gop_mp4s(reference, hf_cache):
    """Clips come from the PNG frames, the frame rows' pixels; the MP4s keep a keyframe every DEFAULT_GOP frames,
    recorded per video, so `source="mp4"` seeks (equal to a full decode of the same frames)."""
    videos = load_dataset("thermvision_db", "synthetic_videos", output_dir=str(reference), cache_dir=hf_cache)["train"]
    frames = load_dataset("thermvision_db", "synthetic", output_dir=str(reference), cache_dir=hf_cache)["train"]
    by_frame = {(r["video_id"], r["frame_index"]): np.asarray(r["image"]) for r in frames}
    for record in GeneratedCorpus(reference).records():
        assert {v["gop"] for v in record["videos"]} == {DEFAULT_GOP}
    for row in videos:
        assert row["frame_files"] == [str(reference / "identities" / row["video_id"].split("_")[0] /
                                          f"{row['video_id'].split('_', 1)[1]}_frames" / f"{i:05d}.png")
                                      for i in range(row["num_frames"])]
        clip = ClipSampler(3, mode="random", seed=5)(row)
        assert np.array_equal(clip["frames"].transpose(0, 2, 3, 1),
                              np.stack([by_frame[row["video_id"], i] for i in clip["frame_indices"]]))
        mp4 = ClipSampler(3, mode="random", seed=5, source="mp4")(row)
        full = read_frames(row["video"]["path"])
        assert np.array_equal(mp4["frames"].transpose(0, 2, 3, 1), full[clip["frame_indices"]])
        with av.open(row["video"]["path"]) as container:
            keys = [i for i, p in enumerate(container.demux(container.streams.video[0])) if p.size and p.is_keyframe]
        assert keys[0] == 0 and max(np.diff(keys + [row["num_frames"]])) <= DEFAULT_GOP
    with pytest.raises(ValueError, match="video_gop must be a whole number"):
        GenerationSettings(video_gop=0)


def test_png_frames_are_gray_and_load_as_rgb(reference, hf_cache):
    folder = reference / "identities" / "S000000"
    with Image.open(folder / "head_pose_frames" / "00002.png") as png:
        assert png.mode == "L"  # the tiny preset's frames are gray: stored as one channel
        expected = np.asarray(png.convert("RGB"))
    ds = load_dataset("thermvision_db", "synthetic", output_dir=str(reference), cache_dir=hf_cache)["train"]
    row = ds[2]
    assert row["video_id"] == "S000000_head_pose" and row["frame_index"] == 2
    assert row["image"].mode == "RGB" and np.array_equal(np.asarray(row["image"]), expected)


@pytest.mark.parametrize("damage", ["empty", "junk record", "link"])
def test_a_damaged_identity_folder_is_replaced_and_counted_once(reference, tmp_path, damage):
    """An identity folder without a valid record is not finished: the run makes it again, replaces the folder
    (a link is removed, never followed) and counts it; the result equals the undamaged corpus."""
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    victim = out / "identities" / "S000001"
    shutil.rmtree(victim)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    if damage == "link":
        os.symlink(outside, victim)
    else:
        victim.mkdir()
        if damage == "junk record":
            (victim / "identity.json").write_text("[1, 2]")
    summary = _generate(out, 3)
    assert summary.generated == ["S000001"] and summary.failures == []
    assert GeneratedCorpus(out).finished() == {0, 1, 2} and GeneratedCorpus(out).damaged() == []
    assert (outside / "keep.txt").read_text() == "keep" and sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    _assert_same_corpus(reference, out)
