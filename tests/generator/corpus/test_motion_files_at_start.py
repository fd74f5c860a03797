"""Motion and library files are checked at the start of a run, before any still (docs/generator-hostile-inputs.md,
'Motion'): a user's file is refused by name, a failing cache of the paper's clips is extracted again."""

from __future__ import annotations

import numpy as np
import pytest

from generator.animate.liveportrait.template import MotionSequence
from generator.animate.motion.templates import load_template, save_template
from generator.corpus.pipeline import GenerationPipeline
from generator.corpus.settings import GenerationSettings
from thermvision_db.errors import InputError, ThermVisionError
from thermvision_db.schema.generated_corpus import GeneratedCorpus

from test_motion_programs import driving_folder  # noqa: E402  (tests/generator/corpus is on sys.path)

TINY_KP = 6  # LivePortraitConfig.tiny()'s implicit keypoints


def _library_template(path, keypoints=TINY_KP, frames=4, nan_at=None):
    exp = np.linspace(0, 0.02, frames * keypoints * 3, dtype=np.float32).reshape(frames, keypoints, 3)
    if nan_at is not None:
        exp[nan_at, 0, 0] = np.nan
        np.savez(path, exp=exp)  # MotionSequence refuses NaN, so the file is written without it
        return path
    return save_template(MotionSequence(exp=exp, name="smile"), path)


def _stills(corpus_dir) -> list:
    stills = corpus_dir / "stills"
    return sorted(stills.glob("*.png")) if stills.is_dir() else []


@pytest.mark.parametrize("problem, match", [
    ("nan", r"smile\.npz.*exp holds NaN or inf values \(frame 2\)"),
    ("keypoints", r"smile\.npz \(smile\): its expressions have 21 keypoints per frame but the loaded LivePortrait "
                  r"model uses 6"),
])
def test_a_bad_library_file_stops_the_run_before_any_still(tmp_path, problem, match):
    path = tmp_path / "smile.npz"
    if problem == "nan":
        _library_template(path, nan_at=2)
    else:
        _library_template(path, keypoints=21)
    settings = GenerationSettings(motion="short", expression_library={"smile": str(path)}, still_batch=1)
    with pytest.raises(InputError, match=match):
        GenerationPipeline(settings, tmp_path / "corpus", device="cpu", progress=False).run(2)
    assert _stills(tmp_path / "corpus") == []  # refused at start: no still was made
    assert GeneratedCorpus(tmp_path / "corpus").records() == []


def test_a_good_library_file_of_the_right_width_runs(tmp_path):
    path = _library_template(tmp_path / "smile.npz")
    settings = GenerationSettings(motion="short", expression_library={"smile": str(path)}, still_batch=1)
    summary = GenerationPipeline(settings, tmp_path / "corpus", device="cpu", progress=False).run(1)
    assert summary.failures == [] and len(GeneratedCorpus(tmp_path / "corpus").records()) == 1


def test_an_undecodable_paper_clip_stops_the_run_before_any_still(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMVISION_CACHE", str(tmp_path / "cache"))
    checkout = driving_folder(tmp_path)
    (checkout / "assets" / "examples" / "driving" / "d19.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    settings = GenerationSettings(motion="paper", driving_clips=str(checkout), still_batch=1)
    with pytest.raises(ThermVisionError) as err:  # one line in the CLI, not a traceback
        GenerationPipeline(settings, tmp_path / "corpus", device="cpu", progress=False).run(1)
    assert "d19.mp4" in str(err.value)
    assert _stills(tmp_path / "corpus") == []


def _cache_files(root) -> dict:
    return {p.name: p for p in (root / "cache" / "motion").glob("*.npz")}


def _damage(path, how: str, outside):
    good = load_template(path)
    if how == "nan":
        np.savez(path, R=np.where(np.arange(len(good))[:, None, None] == 1, np.nan, good.R), scale=good.scale,
                 t=good.t, exp=good.exp)
    elif how == "zero_frames":
        np.savez(path, R=np.zeros((0, 3, 3), np.float32))
    elif how == "keypoints":  # a template extracted with other weights (21 keypoints, upstream's)
        save_template(MotionSequence(R=good.R, scale=good.scale, t=good.t,
                                     exp=np.zeros((len(good), 21, 3), np.float32), name=good.name), path)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif how == "link":
        outside.write_bytes(b"a file outside the cache, never written")
        path.unlink()
        path.symlink_to(outside)


@pytest.mark.parametrize("how", ["nan", "zero_frames", "keypoints", "truncated", "link"])
def test_a_cached_paper_clip_failing_its_check_is_extracted_again(tmp_path, monkeypatch, capfd, how):
    monkeypatch.setenv("THERMVISION_CACHE", str(tmp_path / "cache"))
    settings = GenerationSettings(motion="paper", driving_clips=str(driving_folder(tmp_path)), still_batch=1)
    GenerationPipeline(settings, tmp_path / "first", device="cpu", progress=False).run(1)
    caches = _cache_files(tmp_path)
    assert len(caches) == 2
    name, path = next((n, p) for n, p in caches.items() if n.startswith("d3-"))
    original = load_template(path)
    outside = tmp_path / "outside.bin"
    _damage(path, how, outside)
    capfd.readouterr()

    summary = GenerationPipeline(settings, tmp_path / "second", device="cpu", progress=False).run(1)
    assert summary.failures == []
    assert f"cached motion {path} fails its check" in capfd.readouterr().err
    again = load_template(path)  # replaced by a fresh extraction, equal to the first one
    assert not path.is_symlink()
    for field in MotionSequence.FIELDS:
        np.testing.assert_array_equal(getattr(again, field), getattr(original, field))
    if how == "link":
        assert outside.read_bytes() == b"a file outside the cache, never written"
    record = GeneratedCorpus(tmp_path / "second").records()[0]
    assert record["motion"]["sets"]["head_pose"]["cache"] == "replaced"
    assert record["motion"]["sets"]["expression"]["cache"] == "hit"
    media = [{f.relative_to(d): f.read_bytes() for f in sorted(d.rglob("*")) if f.suffix in (".png", ".mp4")}
             for d in (GeneratedCorpus(tmp_path / r).identity_dir("S000000") for r in ("first", "second"))]
    assert media[0] and media[0] == media[1]  # the same animation, frame for frame


def test_template_files_are_checked_without_a_model(tmp_path):
    """What the Ray driver checks before any still (it never loads LivePortrait): values, frames, links."""
    from generator.corpus.motion_plan import MotionPlan

    good = _library_template(tmp_path / "smile.npz")
    bad = _library_template(tmp_path / "frown.npz", nan_at=1)
    video = tmp_path / "laugh.mp4"
    video.write_bytes(b"not read without a model")
    MotionPlan.check_templates(GenerationSettings(expression_library={"smile": str(good), "laugh": str(video)}))
    with pytest.raises(InputError, match=r"frown\.npz.*exp holds NaN"):
        MotionPlan.check_templates(GenerationSettings(expression_library={"smile": str(good), "frown": str(bad)}))
