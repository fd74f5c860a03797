"""Varied per-identity motion, the expression library and the paper's clip-to-template cache."""

import numpy as np
import pytest

import torch

from generator.animate.liveportrait.algorithm import AnimationOptions
from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.animate.liveportrait.pipeline import LivePortraitPipeline
from generator.animate.motion.library import ExpressionLibrary, parse_library_spec
from generator.animate.motion.paper import clip_template, paper_clip_paths
from generator.animate.motion.templates import save_template
from generator.animate.motion.varied import VARIED_RANGES, varied_program
from generator.animate.liveportrait.template import MotionSequence
from thermvision_db.io.encode import write_mp4


def tiny_pipe(seed):
    return LivePortraitPipeline(LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=seed), device="cpu",
                                progress=False)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(2)


def clip(path, n=6, seed=0, size=64):
    """A small aligned driving clip written as x264 through PyAV, as a user's .mp4 would be."""
    rng = np.random.default_rng(seed)
    frames = [np.repeat((rng.random((size, size, 1)) * 255).astype(np.uint8), 3, axis=2) for _ in range(n)]
    return write_mp4(path, frames, fps=25)


def smile_template(path, n=8, K=6, seed=1):
    rng = np.random.default_rng(seed)
    exp = np.cumsum(rng.normal(scale=0.01, size=(n, K, 3)), axis=0).astype(np.float32)
    return save_template(MotionSequence(exp=exp, fps=25, name=path.stem), path)


# ---------------------------------------------------------------------------------------------- varied programs
@pytest.mark.parametrize("set_name", ["head_pose", "expression"])
def test_two_identities_differ_and_one_identity_repeats(set_name):
    a = varied_program(0, 3, set_name, 120)
    again = varied_program(0, 3, set_name, 120)
    b = varied_program(0, 4, set_name, 120)
    other_run = varied_program(1, 3, set_name, 120)
    for x in (a.yaw, a.pitch, a.roll):
        assert len(x) == 120
    assert np.array_equal(a.yaw, again.yaw) and a.expression == again.expression and a.segments == again.segments
    assert not np.allclose(a.yaw, b.yaw) and not np.allclose(a.yaw, other_run.yaw)


def test_many_identities_never_share_a_trajectory():
    trajectories = {varied_program(7, i, "head_pose", 60).yaw.round(6).tobytes() for i in range(40)}
    assert len(trajectories) == 40


def test_head_pose_amplitudes_stay_in_the_documented_ranges():
    for i in range(20):
        p = varied_program(0, i, "head_pose", 200)
        for axis in ("yaw", "pitch", "roll"):
            lo, hi = VARIED_RANGES[axis]
            assert np.abs(getattr(p, axis)).max() <= hi + 1e-9
            assert abs(p.params["amplitude"][axis]) >= lo
        assert sorted(a for a in p.params["order"] if a != "circle") == ["pitch", "roll", "yaw"]
        assert p.yaw[0] == 0 and p.yaw[-1] == pytest.approx(0, abs=1e-9)  # starts and ends facing the camera


def test_labelled_pose_equals_the_pose_the_animation_applies(pipe):
    program = varied_program(0, 5, "head_pose", 30)
    source = pipe.prepare_source(np.full((64, 64), 90, np.uint8))
    kp = pipe.driving_keypoints(source, program.bind())
    labels = program.frame_labels()
    for t in range(30):
        assert float(kp["yaw"][t]) == pytest.approx(labels[t]["head_pose"]["yaw"], abs=1e-3)
        assert float(kp["pitch"][t]) == pytest.approx(labels[t]["head_pose"]["pitch"], abs=1e-3)
        assert float(kp["roll"][t]) == pytest.approx(labels[t]["head_pose"]["roll"], abs=1e-3)


def test_expression_labels_follow_segment_boundaries(tmp_path, pipe):
    library = ExpressionLibrary.load({"smile": [smile_template(tmp_path / "smile.npz")]})
    program = varied_program(0, 2, "expression", 300, library=library)
    assert program.segments and {name for *_, name in program.segments} <= {"blink", "mouth_open", "smile"}
    covered = set()
    for start, stop, name in program.segments:
        assert program.expression[start:stop] == [name] * (stop - start)
        covered.update(range(start, stop))
        if name == "mouth_open":
            assert max(program.mouth_open[start:stop]) > 0.2 and program.mouth_open[start] == pytest.approx(0)
        if name == "blink":
            assert min(program.eye_open[start:stop]) < 0.05
        if name == "smile":  # the library clip drives the face; its deltas are played over the segment
            assert np.abs(program.exp_delta[start:stop]).max() > 0 and program.eye_open[start] is None
    assert all(program.expression[t] == "neutral" for t in range(300) if t not in covered)
    assert all(program.segments[k][1] < program.segments[k + 1][0] for k in range(len(program.segments) - 1))
    names = [name for *_, name in program.segments]
    assert all(x != y for x, y in zip(names, names[1:]))  # never the same expression twice in a row
    source = pipe.prepare_source(np.full((64, 64), 90, np.uint8))
    motion = program.bind(source_exp=source.info.exp.numpy())
    options = AnimationOptions(eye_retargeting=True, lip_retargeting=True)  # as the corpus animates programs
    kp = pipe.driving_keypoints(source, motion, options)
    plain = pipe.driving_keypoints(source, motion, AnimationOptions(eye_retargeting=False, lip_retargeting=False))
    start, stop, _ = next(s for s in program.segments if s[2] in ("blink", "mouth_open"))
    assert len(kp["x_d"]) == 300 and not torch.allclose(kp["x_d"][start:stop], plain["x_d"][start:stop])


def test_library_refuses_files_it_cannot_use(tmp_path):
    pose_only = save_template(MotionSequence(R=np.repeat(np.eye(3, dtype=np.float32)[None], 4, 0)), tmp_path / "p.npz")
    with pytest.raises(ValueError, match="p.npz has no per-frame expressions"):
        ExpressionLibrary.load({"smile": [pose_only]})
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        ExpressionLibrary.load({"smile": [tmp_path / "missing.pkl"]})
    with pytest.raises(ValueError, match="procedural"):
        ExpressionLibrary.load({"blink": [pose_only]})
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="x.txt is neither"):
        ExpressionLibrary.load({"smile": [tmp_path / "x.txt"]})
    assert parse_library_spec("smile=a.pkl,smile=b.mp4,frown=c.npz") == {"smile": ["a.pkl", "b.mp4"], "frown": ["c.npz"]}
    with pytest.raises(ValueError, match="name=file"):
        parse_library_spec("smile.pkl")


def test_library_videos_go_through_the_motion_extractor(tmp_path, pipe):
    video = clip(tmp_path / "surprise.mp4", n=5)
    library = ExpressionLibrary.load({"surprise": [video]}, pipeline=pipe, cache_dir=tmp_path / "cache")
    assert library.names() == ["surprise"] and library.clip("surprise").exp_delta.shape == (5, 6, 3)
    with pytest.raises(ValueError, match="needs the loaded"):
        ExpressionLibrary.load({"surprise": [video]})


# ---------------------------------------------------------------------------------------------- paper clips
def test_clip_template_cache_hits_and_misses_on_other_weights(tmp_path, pipe):
    d3 = clip(tmp_path / "d3.mp4", n=6, seed=3)
    first, rec1 = clip_template(d3, pipe, tmp_path / "cache")
    second, rec2 = clip_template(d3, pipe, tmp_path / "cache")
    assert (rec1["cache"], rec2["cache"]) == ("miss", "hit") and rec1["template"] == rec2["template"]
    assert np.array_equal(first.R, second.R) and np.array_equal(first.exp, second.exp) and len(first) == 6
    other_weights, rec3 = clip_template(d3, tiny_pipe(5), tmp_path / "cache")
    assert rec3["cache"] == "miss" and rec3["extractor_sha256"] != rec1["extractor_sha256"]
    assert not np.allclose(other_weights.exp, first.exp)
    d3_edited = clip(tmp_path / "edited" / "d3.mp4", n=6, seed=4)
    _, rec4 = clip_template(d3_edited, pipe, tmp_path / "cache")
    assert rec4["cache"] == "miss" and rec4["clip_sha256"] != rec1["clip_sha256"]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3


def test_paper_clips_come_from_a_liveportrait_checkout_or_paths(tmp_path):
    driving = tmp_path / "LivePortrait" / "assets" / "examples" / "driving"
    driving.mkdir(parents=True)
    for name in ("d3.mp4", "d19.mp4"):
        clip(driving / name, n=3)
    assert paper_clip_paths(tmp_path / "LivePortrait") == {"head_pose": driving / "d3.mp4",
                                                           "expression": driving / "d19.mp4"}
    assert paper_clip_paths(driving)["expression"] == driving / "d19.mp4"
    assert paper_clip_paths(f"head_pose={driving / 'd19.mp4'}") == {"head_pose": driving / "d19.mp4"}
    with pytest.raises(FileNotFoundError, match="d3.mp4"):
        paper_clip_paths(tmp_path)
    with pytest.raises(ValueError, match="driving_clips"):
        paper_clip_paths(None)
