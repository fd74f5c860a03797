"""Corpus motion programs: settings parsing, the paper's clips end to end, procedural corpora unchanged."""

import json

import numpy as np
import pytest

from generator.corpus.pipeline import GenerationPipeline
from generator.corpus.settings import GenerationSettings
from thermvision_db.schema.generated_corpus import GeneratedCorpus
from thermvision_db.io.encode import write_mp4

pytestmark = pytest.mark.usefixtures("private_hash_cache")


def driving_folder(root, frames=(4, 6)):
    """A LivePortrait checkout's assets/examples/driving with small aligned d3/d19 clips (x264 via PyAV)."""
    folder = root / "LivePortrait" / "assets" / "examples" / "driving"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in zip(("d3.mp4", "d19.mp4"), frames):
        write_mp4(folder / name, [np.repeat((rng.random((64, 64, 1)) * 255).astype(np.uint8), 3, axis=2)
                                  for _ in range(n)], fps=25)
    return root / "LivePortrait"


@pytest.mark.parametrize("spec, kind, frames", [
    ("short", "varied", {"head_pose": 12, "expression": 12}),
    ("varied", "varied", {"head_pose": 354, "expression": 250}),
    ("procedural:short", "procedural", {"head_pose": 12, "expression": 12}),
    ("varied:head_pose=30,expression=20", "varied", {"head_pose": 30, "expression": 20}),
    ({"head_pose": 7}, "varied", {"head_pose": 7}),
])
def test_motion_spec_names_program_and_frames(spec, kind, frames):
    s = GenerationSettings(motion=spec)
    assert (s.motion_program, s.motion) == (kind, frames)
    again = GenerationSettings.from_dict(s.to_dict())  # what run.json stores reads back the same
    assert (again.motion_program, again.motion, again.fingerprint()) == (kind, frames, s.fingerprint())


def test_bad_motion_specs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="driving_clips"):
        GenerationSettings(motion="paper")
    with pytest.raises(ValueError, match="program must be one of"):
        GenerationSettings(motion="sweep:short")
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        GenerationSettings(expression_library=f"smile={tmp_path / 'nope.pkl'}")


def test_programs_have_different_fingerprints_and_procedural_keeps_the_old_one():
    procedural = GenerationSettings(motion="procedural:short")
    assert procedural.fingerprint() != GenerationSettings(motion="varied:short").fingerprint()
    import hashlib

    legacy = {k: v for k, v in procedural.to_dict().items()
              if k not in ("motion_program", "driving_clips", "expression_library", "prompt_template_t5",
                           "still_noise", "lora_allow_ignored_keys", "frames", "video_encoder", "video_gop")}
    legacy["write_png"] = True  # the frame-writing default before `frames` / `video_encoder` existed
    for key in ("flux", "flux_base", "lora", "liveportrait_dir", "label_detector", "label_landmarker", "eye_lip_model"):
        legacy[key] = None
    # a corpus made before motion programs existed (same fields minus the new ones) keeps its fingerprint
    assert procedural.fingerprint() == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:16]


def test_paper_motion_animates_every_identity_with_the_cached_clip_templates(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMVISION_CACHE", str(tmp_path / "cache"))
    checkout = driving_folder(tmp_path)
    settings = GenerationSettings(motion="paper", driving_clips=str(checkout), still_batch=2)
    assert settings.motion == {"head_pose": 354, "expression": 250}  # at most; the clips are shorter here
    summary = GenerationPipeline(settings, tmp_path / "corpus", device="cpu", progress=False).run(2)
    assert summary.failures == []
    corpus = GeneratedCorpus(tmp_path / "corpus")
    records = corpus.records()
    for record in records:
        videos = {v["set"]: v for v in record["videos"]}
        assert videos["head_pose"]["driving_template"] == "d3.mp4" and videos["head_pose"]["num_frames"] == 4
        assert videos["expression"]["driving_template"] == "d19.mp4" and videos["expression"]["num_frames"] == 6
        sets = record["motion"]["sets"]
        assert sets["head_pose"]["clip"].endswith("d3.mp4") and len(sets["head_pose"]["clip_sha256"]) == 64
    caches = [r["motion"]["sets"]["head_pose"]["template"] for r in records]
    assert caches[0] == caches[1] and len(list((tmp_path / "cache" / "motion").glob("*.npz"))) == 2
    key, row = next(corpus.frame_rows(records[0]))
    assert row["expression"] is None and row["eye_open"] is None  # the clips carry no expression names


def test_procedural_program_still_runs_offline(tmp_path):
    settings = GenerationSettings(motion="procedural:head_pose=4,expression=10", still_batch=1)
    summary = GenerationPipeline(settings, tmp_path / "corpus", device="cpu", progress=False).run(1)
    assert summary.failures == []
    corpus = GeneratedCorpus(tmp_path / "corpus")
    record = corpus.records()[0]
    assert [v["driving_template"] for v in record["videos"]] == ["head_pose_sweep(4)", "expression_set(10)"]
    labels = json.loads((corpus.identity_dir(record["identity"]) / "expression.labels.json").read_text())
    assert labels["frames"][0]["mouth_open"] == 0.0 and labels["frames"][0]["eye_open"] > 0.3
