"""Upstream LivePortrait behaviour, checked against values worked out here from upstream's published formulas.

Templates are pickled the way upstream writes them (`pickle.dump` of numpy arrays in dicts/lists), in each
layout upstream has used; expected keypoints are computed in float64 numpy from the formulas, not by the code
under test.
"""

import copy
import pickle

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

from generator.animate.liveportrait.algorithm import (
    AnimationOptions,
    SourceInfo,
    driving_keypoints,
)
from generator.animate.liveportrait.checkpoint import load_into, normalise_keys
from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.animate.liveportrait.pipeline import (
    LivePortraitPipeline,
    frames_to_uint8,
    to_input,
)
from generator.animate.liveportrait.networks.spade_generator import SPADEDecoder
from generator.animate.liveportrait.template import MotionSequence
from generator.animate.motion import load_lip_array, load_motion, motion_from_image

K = 21  # the published keypoint count: absolute motion's expression subset needs it


@pytest.fixture(scope="module")
def nets():
    return LivePortraitNetworks.from_config(LivePortraitConfig.tiny(num_kp=K), seed=3)


def _source(pitch=0.0, yaw=0.0, roll=0.0, seed=0) -> SourceInfo:
    g = torch.Generator().manual_seed(seed)
    info = {"pitch": torch.tensor([pitch]), "yaw": torch.tensor([yaw]), "roll": torch.tensor([roll]),
            "scale": torch.tensor([[1.1]]), "t": torch.tensor([[0.04, -0.03, 0.2]]),
            "exp": torch.randn(1, K, 3, generator=g) * 0.02, "kp": torch.rand(1, K, 3, generator=g) - 0.5}
    return SourceInfo.from_keypoint_info(info)


def _yaw_matrix(deg: float) -> np.ndarray:
    """Upstream's row-vector rotation for a pure yaw: (Ry)^T, Ry = [[c, 0, s], [0, 1, 0], [-s, 0, c]]."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T


def _yaw_sweep(n=6, seed=0):
    rng = np.random.default_rng(seed)
    yaw = np.linspace(0, 30, n)
    return {"yaw": yaw, "R": np.stack([_yaw_matrix(y) for y in yaw]).astype(np.float32),
            "exp": rng.normal(0, 0.03, (n, K, 3)).astype(np.float32),
            "scale": rng.uniform(0.9, 1.1, (n, 1)).astype(np.float32),
            "t": rng.normal(0, 0.05, (n, 3)).astype(np.float32),
            "eyes": rng.uniform(0.1, 0.4, (n, 2)).astype(np.float32),
            "lip": rng.uniform(0.0, 0.5, (n, 1)).astype(np.float32)}


def _landmarks(eye_left: float, eye_right: float, lip: float) -> np.ndarray:
    """203 points with eye widths 10 and 12 and mouth width 20, opened to the given ratios."""
    p = np.zeros((203, 2), np.float32)
    p[0], p[12], p[6], p[18] = (0, 0), (10, 0), (5, -5 * eye_left), (5, 5 * eye_left)
    p[24], p[36], p[30], p[42] = (30, 0), (42, 0), (36, -6 * eye_right), (36, 6 * eye_right)
    p[48], p[66], p[90], p[102] = (10, 40), (30, 40), (20, 40 - 10 * lip), (20, 40 + 10 * lip)
    return p


def _write_template(path, sweep, layout: str):
    n = len(sweep["yaw"])
    rkey = "R_d" if layout == "R_d" else "R"
    frames = [{"scale": sweep["scale"][i][None], rkey: sweep["R"][i][None], "exp": sweep["exp"][i][None],
               "t": sweep["t"][i][None]} for i in range(n)]
    if layout == "R":  # current upstream also stores kp and x_s per frame
        for f in frames:
            f["kp"], f["x_s"] = np.zeros((1, K, 3), np.float32), np.zeros((1, K, 3), np.float32)
        data = {"n_frames": n, "output_fps": 30, "motion": frames,
                "c_eyes_lst": [e[None] for e in sweep["eyes"]], "c_lip_lst": [v[None] for v in sweep["lip"]]}
    elif layout == "R_d":
        data = {"n_frames": n, "output_fps": 30, "motion": frames,
                "c_d_eyes_lst": [e[None] for e in sweep["eyes"]], "c_d_lip_lst": [v[None] for v in sweep["lip"]]}
    else:  # first release: [per-frame dicts with n_frames and R_d, driving landmarks]
        for i, f in enumerate(frames):
            f["n_frames"], f["frames_index"] = n, i
            f["R_d"] = f.pop("R")
        lmk = [_landmarks(*sweep["eyes"][i], sweep["lip"][i, 0]) for i in range(n)]
        data = [frames, lmk]
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


def _expected_relative(src: SourceInfo, sw, multiplier: bool) -> np.ndarray:
    """Upstream's relative motion in float64: R_d,i R_d,0^T R_s; exp_s + exp_i - exp_0; s_s s_i / s_0; t (tz = 0)."""
    R_s, x_c, exp_s = (src.R[0].double().numpy(), src.kp[0].double().numpy(), src.exp[0].double().numpy())
    s_s, t_s = float(src.scale), src.t[0].double().numpy()
    R, exp, scale, t = (sw[k].astype(np.float64) for k in ("R", "exp", "scale", "t"))
    out = []
    for i in range(len(R)):
        t_new = t_s + t[i] - t[0]
        t_new[2] = 0
        out.append(s_s * scale[i, 0] / scale[0, 0] * (x_c @ (R[i] @ R[0].T @ R_s) + exp_s + exp[i] - exp[0]) + t_new)
    out = np.stack(out)
    if multiplier:
        x_s = src.x_s[0].double().numpy()
        m = np.sqrt(ConvexHull(x_s).volume) / np.sqrt(ConvexHull(out[0]).volume)
        out = x_s + (out - out[0]) * m
    return out


def test_yaw_sweep_template_in_every_layout_animates_to_the_same_keypoints(tmp_path, nets):
    sweep = _yaw_sweep()
    src = _source()
    S = nets.stitching_retargeting_module
    results = {}
    for layout in ("R", "R_d", "list"):
        motion = load_motion(_write_template(tmp_path / f"{layout}.pkl", sweep, layout))
        assert len(motion) == 6 and motion.relative and not motion.single_image
        np.testing.assert_array_equal(motion.R, sweep["R"])
        np.testing.assert_allclose(motion.eye_ratio, sweep["eyes"], atol=1e-6)  # both eyes kept, [left, right]
        np.testing.assert_allclose(motion.lip_ratio, sweep["lip"], atol=1e-6)
        for option in ("pose-friendly", "expression-friendly"):
            kp = driving_keypoints(src, motion, S, AnimationOptions(stitching=False, driving_option=option))
            want = _expected_relative(src, sweep, multiplier=option == "expression-friendly")
            assert np.abs(kp["x_d"].double().numpy() - want).max() < 1e-5, (layout, option)
            results[layout, option] = kp["x_d"]
        # R_s = identity and yaw_0 = 0: the animated head turns by exactly the template's yaw
        np.testing.assert_allclose(kp["yaw"].numpy(), sweep["yaw"], atol=1e-3)
    assert load_motion(tmp_path / "R.pkl").fps == 30 and load_motion(tmp_path / "list.pkl").fps == 25
    for option in ("pose-friendly", "expression-friendly"):
        assert torch.equal(results["R", option], results["R_d", option])
        assert torch.equal(results["R", option], results["list", option])


def test_template_layout_problems_are_named(tmp_path):
    sweep = _yaw_sweep(3)
    path = _write_template(tmp_path / "t.pkl", sweep, "R")
    data = pickle.loads(path.read_bytes())
    for mutate, message in [
        (lambda d: d["motion"][1].pop("R"), r"motion\[1\] has no 'R' or 'R_d'"),
        (lambda d: d.update(n_frames=5), "n_frames is 5 but the template holds 3"),
        (lambda d: d.update(c_eyes_lst=d["c_eyes_lst"][:2]), "'c_eyes_lst' must list one entry per frame"),
        (lambda d: d["motion"][0].update(exp=np.zeros((1, 5))), r"motion\[0\]\['exp'\] has shape"),
        (lambda d: d["motion"][2]["t"].fill(np.nan), r"motion\[2\]\['t'\] holds NaN"),
    ]:
        bad = copy.deepcopy(data)
        mutate(bad)
        (tmp_path / "bad.pkl").write_bytes(pickle.dumps(bad))
        with pytest.raises(ValueError, match=message) as err:
            load_motion(tmp_path / "bad.pkl")
        assert "bad.pkl" in str(err.value)
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="first-release layout"):
        load_motion(tmp_path / "list.pkl")


def test_retargeting_only_when_flagged_and_with_the_driving_left_eye(tmp_path, nets):
    sweep = _yaw_sweep()
    motion = load_motion(_write_template(tmp_path / "t.pkl", sweep, "R_d"))
    src = _source(seed=4)
    S = nets.stitching_retargeting_module
    plain = driving_keypoints(src, motion, S, AnimationOptions(stitching=False, driving_option="pose-friendly"))
    assert np.abs(plain["x_d"].double().numpy() - _expected_relative(src, sweep, False)).max() < 1e-5  # flags off

    opts = AnimationOptions(stitching=False, eye_retargeting=True, lip_retargeting=True,
                            source_eye_ratio=(0.3, 0.25), source_lip_ratio=0.1)
    x_s = src.x_s.reshape(1, -1).expand(6, -1)
    with torch.no_grad():
        eye_in = torch.cat([x_s, torch.tensor([[0.3, 0.25]]).expand(6, 2), torch.from_numpy(sweep["eyes"][:, :1])], 1)
        lip_in = torch.cat([x_s, torch.full((6, 1), 0.1), torch.from_numpy(sweep["lip"])], 1)
        eye, lip = S.eye(eye_in).reshape(6, K, 3), S.lip(lip_in).reshape(6, K, 3)
    relative = driving_keypoints(src, motion, S, opts)["x_d"]
    assert torch.allclose(relative, src.x_s + eye + lip, atol=1e-6)  # relative: x_s + deltas, expression dropped

    swapped = copy.deepcopy(motion)
    swapped.eye_ratio[:, 1] = 0.9  # the right driving eye is not read
    assert torch.equal(driving_keypoints(src, swapped, S, opts)["x_d"], relative)

    absolute = driving_keypoints(src, motion, S, AnimationOptions(**{**opts.__dict__, "relative_motion": False}))
    no_retarget = driving_keypoints(src, motion, S, AnimationOptions(stitching=False, relative_motion=False))
    assert torch.allclose(absolute["x_d"], no_retarget["x_d"] + eye + lip, atol=1e-6)  # absolute: x_d + deltas

    stitched = driving_keypoints(src, motion, S, AnimationOptions(**{**opts.__dict__, "stitching": True}))
    with torch.no_grad():
        assert torch.allclose(stitched["x_d"], S.stitch(src.x_s.expand(6, K, 3), relative), atol=1e-6)

    bare = load_motion(_write_template(tmp_path / "bare.pkl", sweep, "R"))
    bare.eye_ratio = None  # an upstream expression clip without c_eyes_lst
    with pytest.raises(ValueError, match="carries no eye ratios"):
        driving_keypoints(src, bare, S, opts)


def test_absolute_motion_takes_upstreams_expression_subset_and_keeps_the_source_scale(nets):
    src = _source(pitch=4, yaw=-7, roll=2, seed=5)
    rng = np.random.default_rng(5)
    R = np.stack([_yaw_matrix(a) for a in (10.0, -20.0)]).astype(np.float32)
    exp = rng.normal(0, 0.05, (2, K, 3)).astype(np.float32)
    t = rng.normal(0, 0.1, (2, 3)).astype(np.float32)
    motion = MotionSequence(R=R, exp=exp, scale=np.full((2, 1), 3.0, np.float32), t=t, relative=False)
    kp = driving_keypoints(src, motion, nets.stitching_retargeting_module, AnimationOptions(stitching=False))
    take = np.zeros((K, 3), bool)  # upstream: rows 1, 2, 6, 11-20 whole; (3,y) (4,y) (5,z) (8,z) (9,y) (9,z)
    take[[1, 2, 6, *range(11, 21)]] = True
    take[3, 1] = take[4, 1] = take[5, 2] = take[8, 2] = take[9, 1] = take[9, 2] = True
    exp_s, x_c = src.exp[0].double().numpy(), src.kp[0].double().numpy()
    for i in range(2):
        delta = np.where(take, exp[i], exp_s)
        want = 1.1 * (x_c @ R[i].astype(np.float64) + delta) + np.array([t[i, 0], t[i, 1], 0.0])
        assert np.abs(kp["x_d"][i].double().numpy() - want).max() < 1e-5


def test_single_driving_image_is_source_plus_driving_expression_minus_the_lip_array(tmp_path, nets):
    src = _source(pitch=3, yaw=12, roll=-4, seed=6)
    rng = np.random.default_rng(6)
    lip_array = rng.normal(0, 0.01, (1, K, 3))  # float64 (1, K, 3), as upstream's lip_array.pkl
    (tmp_path / "lip_array.pkl").write_bytes(pickle.dumps(lip_array))
    R_d = _yaw_matrix(25.0)[None].astype(np.float32) @ _yaw_matrix(0)[None].astype(np.float32)
    exp_d = rng.normal(0, 0.05, (1, K, 3)).astype(np.float32)
    data = {"n_frames": 1, "output_fps": 25, "motion": [{"scale": np.array([[0.8]], np.float32), "R": R_d,
            "exp": exp_d, "t": np.array([[0.3, 0.2, 0.1]], np.float32)}]}
    (tmp_path / "image.pkl").write_bytes(pickle.dumps(data))
    motion = load_motion(tmp_path / "image.pkl")
    assert motion.single_image  # upstream: a 1-frame template is a driving image
    with pytest.raises(ValueError, match="lip array"):
        driving_keypoints(src, motion, nets.stitching_retargeting_module)
    opts = AnimationOptions(stitching=False, lip_array=load_lip_array(tmp_path / "lip_array.pkl"))
    kp = driving_keypoints(src, motion, nets.stitching_retargeting_module, opts)  # expression-friendly: no hull
    R_s, x_c = src.R[0].double().numpy(), src.kp[0].double().numpy()
    R_new = R_d[0].astype(np.float64) @ R_d[0].T.astype(np.float64) @ R_s
    delta = src.exp[0].double().numpy() + exp_d[0] - lip_array[0].astype(np.float32)
    want = 1.1 * (x_c @ R_new + delta) + np.array([0.04, -0.03, 0.0])
    assert np.abs(kp["x_d"][0].double().numpy() - want).max() < 1e-5


def test_motion_from_a_driving_image_uses_cv2_default_resize(nets):
    pipe = LivePortraitPipeline(nets, device="cpu", progress=False)
    image = np.random.default_rng(7).integers(0, 256, (480, 480, 3), dtype=np.uint8)
    motion = motion_from_image(image, pipe)
    assert motion.single_image and len(motion) == 1
    x = torch.from_numpy(cv2.resize(image, (64, 64))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        info = nets.motion_extractor.keypoint_info(x)
    np.testing.assert_allclose(motion.exp, info["exp"].numpy(), atol=1e-6)


def test_480_frame_is_resized_with_cv2s_default_bilinear(nets):
    image = np.random.default_rng(8).integers(0, 256, (480, 480, 3), dtype=np.uint8)
    ours = to_input(image, 256, 3, torch.device("cpu"))
    bilinear = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    area = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    assert torch.equal(ours[0].permute(1, 2, 0), torch.from_numpy(bilinear))
    assert (np.abs(bilinear - area) > 0).mean() > 0.1  # the two really differ on this frame
    pipe = LivePortraitPipeline(nets, device="cpu", progress=False)  # an uncropped source takes the same path
    x = torch.from_numpy(cv2.resize(image, (64, 64))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():  # (memory layout alone moves the conv's last bit)
        assert (pipe.prepare_source(image).feature - nets.appearance_feature_extractor(x)).abs().max() < 1e-6


def test_frames_are_truncated_to_uint8_as_upstream():
    values = torch.tensor([0.5, 0.999, 1.2, -0.1, 0.0039, 0.2, 254.9 / 255, 1.0], dtype=torch.float32)
    frame = values.reshape(1, 1, 1, 8).expand(1, 3, 1, 8)
    # by hand: 127.5 -> 127, 254.745 -> 254, clip -> 255, clip -> 0, 0.9945 -> 0, 51.0000008 -> 51, 254.9 -> 254
    want = np.array([127, 254, 255, 0, 0, 51, 254, 255], np.uint8)
    out = frames_to_uint8(frame)
    assert out.shape == (1, 1, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, :, 0], want)
    assert (np.round(values.clamp(0, 1).numpy() * 255) != want).sum() == 4  # rounding would differ on 4


def test_folded_spade_weights_equal_torch_spectral_norm_module_in_fp32():
    cfg = LivePortraitConfig.tiny().spade
    torch.manual_seed(9)
    reference = SPADEDecoder(cfg)
    for name, module in list(reference.named_modules()):
        for leaf in ("conv_0", "conv_1", "conv_s"):
            if hasattr(module, leaf):
                torch.nn.utils.spectral_norm(getattr(module, leaf))
    feature = torch.randn(2, cfg.input_channels, 8, 8)
    reference.train()
    with torch.no_grad():
        for _ in range(3):  # a few power iterations: u and v as a trained checkpoint holds them
            reference(feature)
    reference.eval()
    with torch.no_grad():
        want = reference(feature)
    sd = reference.state_dict()
    assert any(k.endswith("weight_orig") for k in sd) and not any(k.endswith("conv_0.weight") for k in sd)
    ours = SPADEDecoder(cfg)
    folded = normalise_keys(dict(sd))
    load_into(ours, folded, "reference")
    for name, module in reference.named_modules():
        if name.endswith(("conv_0", "conv_1", "conv_s")):
            assert torch.equal(folded[name + ".weight"], module.weight), name  # bit for bit torch's weight
    with torch.no_grad():
        assert (ours.eval()(feature) - want).abs().max() <= 1e-6


def test_fp16_overflow_is_redone_in_fp32(nets, monkeypatch):
    pipe = LivePortraitPipeline(nets, device="cpu", dtype="fp16", progress=False)
    ref = LivePortraitPipeline(nets, device="cpu", dtype="fp32", progress=False)
    image = np.full((64, 64, 3), 90, np.uint8)
    source = ref.prepare_source(image)
    x_d = source.info.x_s.expand(2, K, 3)
    warp, decode, calls = pipe.warp, pipe.decode, []

    def fast_warp(*args):  # CPU fp16 kernels are slow; W's fp16 numerics are not what this test is about
        with torch.autocast("cpu", enabled=False):
            return warp(*args)

    def overflowing(feature):  # stands in for a SPADE overflow on a GPU without proper fp16
        fp16 = torch.is_autocast_enabled("cpu")
        calls.append(torch.get_autocast_dtype("cpu") if fp16 else torch.float32)
        with torch.autocast("cpu", enabled=False):
            out = decode(feature)
        return out * float("nan") if fp16 else out

    monkeypatch.setattr(pipe, "warp", fast_warp)
    monkeypatch.setattr(pipe, "decode", overflowing)
    out = pipe.render(source.feature, source.info.x_s, x_d)
    assert calls == [torch.float16, torch.float32]  # tried in upstream's fp16, redone in fp32
    assert torch.isfinite(out).all()
    assert torch.allclose(out, ref.render(source.feature, source.info.x_s, x_d), atol=1e-6)


def test_cli_animates_a_driving_image_with_upstreams_lip_array(tmp_path, capsys):
    from PIL import Image

    from thermvision_db.cli.main import main

    Image.fromarray(np.full((64, 64), 120, np.uint8)).save(tmp_path / "id0.png")
    rng = np.random.default_rng(10)
    Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(tmp_path / "smile.png")
    (tmp_path / "lip_array.pkl").write_bytes(pickle.dumps(rng.normal(0, 0.01, (1, 6, 3))))  # tiny preset: 6 kp
    args = ["generate", "--stage", "animate", "--source", str(tmp_path / "id0.png"), "--driving", "image",
            "--driving-path", str(tmp_path / "smile.png"), "--out", str(tmp_path / "out"), "--animate-gray"]
    assert main(args) == 2  # a project error: one line naming the fix, no traceback
    assert "lip array" in capsys.readouterr().err
    assert main([*args, "--lip-array", str(tmp_path / "lip_array.pkl")]) == 0
    frame = np.asarray(Image.open(tmp_path / "out" / "animate" / "id0" / "smile_frames" / "00000.png"))
    assert frame.shape == (128, 128)  # gray frames: one-channel PNG, as the corpus writes them
