"""Motion sources: safe .pkl templates, our template files, driving videos, ONNX detector, preprocessing, CLI."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from generator.animate import motion as motions
from generator.animate.liveportrait.camera import rotation_matrix
from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.animate.liveportrait.pipeline import LivePortraitPipeline, to_input
from generator.preprocess import preprocess
from thermvision_db.io.decode import read_frames
from thermvision_db.io.encode import write_mp4


@pytest.fixture(scope="module")
def pipe():
    return LivePortraitPipeline(LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=2), device="cpu",
                                progress=False)


def _upstream_template(n=4, K=21):
    rng = np.random.default_rng(0)
    R = rotation_matrix(rng.uniform(-10, 10, n), rng.uniform(-30, 30, n), rng.uniform(-5, 5, n)).numpy()
    return {"n_frames": n, "output_fps": 25, "motion": [
        {"scale": np.full((1, 1), 1.1, np.float32), "R": R[i:i + 1], "exp": rng.normal(size=(1, K, 3)).astype(np.float32),
         "t": rng.normal(size=(1, 3)).astype(np.float32), "kp": np.zeros((1, K, 3), np.float32),
         "x_s": np.zeros((1, K, 3), np.float32)} for i in range(n)],
        "c_eyes_lst": [np.full((1, 2), 0.3, np.float32)] * n, "c_lip_lst": [np.zeros((1, 1), np.float32)] * n}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_liveportrait_pkl_is_read(tmp_path, protocol):
    tpl = _upstream_template()
    (tmp_path / "d.pkl").write_bytes(pickle.dumps(tpl, protocol=protocol))
    m = motions.load_motion(tmp_path / "d.pkl")
    assert len(m) == 4 and m.relative and m.fps == 25
    assert np.array_equal(m.R[2], tpl["motion"][2]["R"][0])
    assert np.array_equal(m.exp[3], tpl["motion"][3]["exp"][0])


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class _FilePayload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickle_with_reduce_payload_is_refused_and_not_executed(tmp_path, capfd):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"motion": [_Payload()]}))
    with pytest.raises(motions.UnsafePickleError, match=r"evil.pkl: refused global (posix|os)\.system"):
        motions.load_liveportrait_pkl(tmp_path / "evil.pkl")
    assert "pwned" not in capfd.readouterr().out
    marker = tmp_path / "executed"
    (tmp_path / "evil2.pkl").write_bytes(pickle.dumps([_FilePayload(marker)]))
    with pytest.raises(motions.UnsafePickleError):
        motions.load_liveportrait_pkl(tmp_path / "evil2.pkl")
    assert not marker.exists()


def test_pkl_without_motion_list_is_named(tmp_path):
    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"frames": []}))
    with pytest.raises(ValueError, match="x.pkl is not a LivePortrait motion template"):
        motions.load_liveportrait_pkl(tmp_path / "x.pkl")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_own_template_round_trip(tmp_path, suffix):
    m = motions.expression_set(40)
    src = motions.head_pose_sweep(40)
    m.R, m.relative, m.fps = src.R, True, 24.0
    path = motions.save_template(m, tmp_path / f"t{suffix}")
    back = motions.load_motion(path)
    assert back.fps == 24.0 and back.relative and back.name == "expression"
    for field in ("R", "eye_ratio", "lip_ratio"):
        assert np.array_equal(getattr(back, field), getattr(m, field))
    assert back.exp is None


def test_template_with_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"t.json: not a motion template"):
        motions.load_motion(tmp_path / "t.json")


def test_aligned_driving_video_gives_the_extractors_motion(pipe, tmp_path):
    rng = np.random.default_rng(4)
    frames = [np.repeat((rng.random((64, 64, 1)) * 255).astype(np.uint8), 3, axis=2) for _ in range(5)]
    path = write_mp4(tmp_path / "drive.mp4", frames, fps=12)
    m = motions.motion_from_video(path, pipe, batch_size=2)
    assert len(m) == 5 and m.fps == 12 and m.relative
    decoded = read_frames(path)
    with torch.no_grad():
        info = pipe.nets.driving_extractor.keypoint_info(to_input(decoded, 64, 3, pipe.device))
    R = rotation_matrix(info["pitch"], info["yaw"], info["roll"]).numpy()
    assert np.allclose(m.R, R, atol=1e-5) and np.allclose(m.exp, info["exp"].numpy(), atol=1e-5)
    result = pipe.animate(np.full((64, 64), 90, np.uint8), m)
    assert result.frames.shape == (5, 128, 128, 3) and result.fps == 12


def test_non_square_video_without_detector_is_refused(pipe, tmp_path):
    path = write_mp4(tmp_path / "wide.mp4", [np.zeros((32, 48, 3), np.uint8)] * 2, fps=10)
    with pytest.raises(ValueError, match="not square.*face detector"):
        motions.motion_from_video(path, pipe)


def _constant_box_detector(path, box):
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    out = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 5])
    pooled = helper.make_node("ReduceMean", ["image"], ["m"], keepdims=0)
    zero = helper.make_node("Mul", ["m", "zero"], ["z"])
    add = helper.make_node("Add", ["box", "z"], ["boxes"])
    graph = helper.make_graph([pooled, zero, add], "det", [inp], [out], initializer=[
        helper.make_tensor("box", TensorProto.FLOAT, [1, 5], list(box)),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_detector_box_is_scaled_and_used_to_crop(pipe, tmp_path):
    det = motions.OnnxFaceDetector(_constant_box_detector(tmp_path / "det.onnx", [4, 6, 20, 26, 0.9]))
    assert det(np.zeros((64, 96, 3), np.uint8)) == pytest.approx((12, 12, 60, 52))
    frames = [np.zeros((64, 96, 3), np.uint8)] * 3
    path = write_mp4(tmp_path / "wide.mp4", frames, fps=10)
    m = motions.motion_from_video(path, pipe, detector=det)
    assert len(m) == 3


def test_thermal_preprocessing_steps():
    img = np.linspace(50, 100, 64 * 64).reshape(64, 64)
    out = preprocess(img, ["minmax"])
    assert out.shape == (64, 64, 3) and out.min() == 0 and out.max() == 255
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    eq = preprocess((np.random.default_rng(0).random((64, 64)) * 60).astype(np.uint8), ["bilateral", "equalize"])
    assert eq.max() == 255  # equalisation spreads a narrow histogram over the full range
    with pytest.raises(ValueError, match="unknown preprocessing"):
        preprocess(img, ["sharpen"])


def test_cli_animates_a_still_and_writes_video_frames_and_motion(tmp_path):
    from PIL import Image

    from thermvision_db.cli.main import main

    Image.fromarray(np.full((64, 64), 120, np.uint8)).save(tmp_path / "id0.png")
    rc = main(["generate", "--stage", "animate", "--source", str(tmp_path / "id0.png"), "--driving", "head_pose",
               "--frames", "6", "--out", str(tmp_path / "out"), "--chunk-size", "4", "--preprocess", "minmax"])
    assert rc == 0
    folder = tmp_path / "out" / "animate" / "id0"
    assert read_frames(folder / "head_pose.mp4").shape == (6, 128, 128, 3)
    assert len(list((folder / "head_pose_frames").glob("*.png"))) == 6
    data = json.loads((folder / "head_pose.motion.json").read_text())
    sweep = motions.head_pose_sweep(6)
    assert [round(f["yaw"], 3) for f in data["frames"]] == [round(float(v), 3) for v in sweep.extra["yaw"]]
    with np.load(folder / "head_pose.motion.npz") as z:
        assert z["x_d"].shape == (6, 6, 3) and z["exp"].shape == (6, 6, 3)
