"""Checkpoint layouts: round trips, equal outputs across layouts, spectral-norm folding, clear refusals."""

import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from generator.animate.liveportrait.checkpoint import CheckpointError, fold_spectral_norm, load_state_dict
from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.animate.liveportrait.pipeline import LivePortraitPipeline
from generator.animate.motion import head_pose_sweep


@pytest.fixture(scope="module")
def tiny():
    return LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=3)


def _render(nets, image, frames=4):
    pipe = LivePortraitPipeline(nets, device="cpu", progress=False)
    return pipe.animate(image, head_pose_sweep(frames)).frames


@pytest.fixture(scope="module")
def still():
    return (np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8)


def test_state_dict_round_trip(tiny):
    other = LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=99)
    other.load_state_dict(tiny.state_dict())
    for (k, a), b in zip(tiny.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("layout", ["upstream", "comfyui", "thermvision"])
def test_layouts_load_to_identical_outputs(tiny, still, tmp_path, layout):
    folder = tiny.save_pretrained(tmp_path / layout, layout=layout)
    loaded = LivePortraitNetworks.from_pretrained(folder)
    ref = _render(tiny, still)
    out = _render(loaded, still)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1  # spectral fold in float64 -> rounding only


def test_upstream_and_comfyui_files_have_the_published_key_layouts(tiny, tmp_path):
    up = tiny.save_pretrained(tmp_path / "up", layout="upstream")
    s = torch.load(up / "stitching_retargeting_module.pth", weights_only=True)
    assert set(s) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    assert "module.mlp.0.weight" in s["retarget_eye"]
    g = torch.load(up / "spade_generator.pth", weights_only=True)
    assert {"G_middle_0.conv_0.weight_orig", "G_middle_0.conv_0.weight_u", "up_1.conv_s.weight_v"} <= set(g)
    assert "G_middle_0.conv_0.weight" not in g and "fc.weight" in g
    assert any(k.startswith("detector.") for k in torch.load(up / "motion_extractor.pth", weights_only=True))
    kj = tiny.save_pretrained(tmp_path / "kj", layout="comfyui")
    flat = load_file(str(kj / "stitching_retargeting_module.safetensors"))
    assert "retarget_shoulder_module.mlp.0.bias" in flat and "retarget_mouth_module.mlp.4.weight" in flat
    tv = tiny.save_pretrained(tmp_path / "tv", layout="thermvision")
    assert (tv / "thermal_motion_extractor.safetensors").is_file()
    assert (tv / "thermal_spade_generator.safetensors").is_file()


def test_pth_and_safetensors_of_the_same_weights_give_identical_outputs(tiny, still, tmp_path):
    a = LivePortraitNetworks.from_pretrained(tiny.save_pretrained(tmp_path / "a", layout="upstream"))
    b = LivePortraitNetworks.from_pretrained(tiny.save_pretrained(tmp_path / "b", layout="comfyui"))
    assert np.array_equal(_render(a, still), _render(b, still))


def test_spectral_norm_fold_matches_torch_eval_weight():
    torch.manual_seed(0)
    conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(6, 5, 3))
    for _ in range(3):  # a few power iterations, as in training
        conv(torch.randn(1, 6, 8, 8))
    conv.eval()
    with torch.no_grad():
        conv(torch.randn(1, 6, 8, 8))  # eval recomputes weight from the frozen u, v
    sd = {f"x.{k}": v for k, v in conv.state_dict().items()}
    folded = fold_spectral_norm(sd)
    assert set(folded) == {"x.weight", "x.bias"}
    assert torch.allclose(folded["x.weight"], conv.weight, atol=1e-6)


def test_module_prefixes_and_nested_groups_are_normalised(tmp_path):
    w = torch.randn(4, 3)
    torch.save({"retarget_eye": {"module.mlp.0.weight": w}}, tmp_path / "s.pth")
    assert torch.equal(load_state_dict(tmp_path / "s.pth")["eye.mlp.0.weight"], w)
    save_file({"retarget_mouth_module.mlp.2.bias": w[0]}, str(tmp_path / "s.safetensors"))
    assert "lip.mlp.2.bias" in load_state_dict(tmp_path / "s.safetensors")


def _mutate(folder, name, fn):
    path = folder / name
    sd = load_file(str(path))
    fn(sd)
    save_file(sd, str(path))


def test_missing_unexpected_and_misshapen_keys_are_named(tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "m", layout="comfyui")
    _mutate(folder, "warping_module.safetensors", lambda sd: sd.pop("fourth.bias"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): fourth.bias"):
        LivePortraitNetworks.from_pretrained(folder)

    folder = tiny.save_pretrained(tmp_path / "u", layout="comfyui")
    _mutate(folder, "appearance_feature_extractor.safetensors", lambda sd: sd.update(extra_head=torch.zeros(2)))
    with pytest.raises(CheckpointError, match="unexpected keys.*extra_head"):
        LivePortraitNetworks.from_pretrained(folder)

    folder = tiny.save_pretrained(tmp_path / "s", layout="comfyui")
    _mutate(folder, "spade_generator.safetensors", lambda sd: sd.update({"fc.bias": torch.zeros(5)}))
    with pytest.raises(CheckpointError, match=r"shape mismatches.*fc.bias: checkpoint \(5,\)"):
        LivePortraitNetworks.from_pretrained(folder)


def test_channel_count_is_read_from_the_weights(tmp_path):
    cfg = LivePortraitConfig.tiny()
    cfg.appearance.image_channel = 1
    cfg.motion.image_channel = 1
    one = LivePortraitNetworks.from_config(cfg)
    loaded = LivePortraitNetworks.from_pretrained(one.save_pretrained(tmp_path / "c1"), cfg=LivePortraitConfig.tiny())
    assert loaded.cfg.appearance.image_channel == 1 and loaded.cfg.motion.image_channel == 1
    frames = _render(loaded, np.full((64, 64, 3), 128, np.uint8), frames=3)
    assert frames.shape == (3, 128, 128, 3)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_payload_in_pth_is_refused(tiny, tmp_path, capfd):
    folder = tiny.save_pretrained(tmp_path / "p", layout="upstream")
    with open(folder / "warping_module.pth", "wb") as fh:
        pickle.dump({"fourth.weight": _Payload()}, fh)
    with pytest.raises(CheckpointError, match="warping_module.pth.*weights_only"):
        LivePortraitNetworks.from_pretrained(folder)
    assert "pwned" not in capfd.readouterr().out


def test_wrong_file_types_and_missing_files_are_named(tmp_path):
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"w.onnx: unsupported checkpoint type '.onnx'"):
        load_state_dict(tmp_path / "w.onnx")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors is not a readable .safetensors"):
        load_state_dict(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="no appearance_feature_extractor weights"):
        LivePortraitNetworks.from_pretrained(tmp_path)


def test_separate_driving_motion_extractor_loads(tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "d", layout="thermvision")
    other = LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=5)
    other.save_pretrained(tmp_path / "rgb", layout="upstream")
    nets = LivePortraitNetworks.from_pretrained(folder, driving_motion_extractor=tmp_path / "rgb" / "motion_extractor.pth")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(nets.driving_extractor(x)["kp"], other.motion_extractor(x)["kp"])
        assert torch.allclose(nets.motion_extractor(x)["kp"], tiny.motion_extractor(x)["kp"])
