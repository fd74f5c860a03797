"""The algorithm against independent formulas: rotations, bins, relative motion, multiplier, batching, paste-back."""

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from generator.animate.liveportrait.algorithm import AnimationOptions, SourceInfo, driving_keypoints, motion_multiplier
from generator.animate.liveportrait.camera import matrix_to_degrees, rotation_matrix
from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.crop import crop_from_box, paste_back
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.animate.liveportrait.networks.motion_extractor import bins_to_degrees
from generator.animate.liveportrait.pipeline import LivePortraitPipeline
from generator.animate.liveportrait.template import MotionSequence
from generator.animate.motion import expression_set, head_pose_sweep


@pytest.fixture(scope="module")
def nets():
    return LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=1)


@pytest.fixture(scope="module")
def pipe(nets):
    return LivePortraitPipeline(nets, device="cpu", progress=False, chunk_size=4)


@pytest.fixture(scope="module")
def source(pipe):
    yy, xx = np.mgrid[0:64, 0:64]
    face = (128 + 100 * np.exp(-((xx - 32) ** 2 + (yy - 30) ** 2) / 300)).astype(np.uint8)
    return pipe.prepare_source(face)


def test_rotation_matrix_matches_scipy_euler():
    rng = np.random.default_rng(0)
    pitch, yaw, roll = rng.uniform(-80, 80, (3, 16))
    ours = rotation_matrix(pitch, yaw, roll).numpy()
    # upstream: Rz(roll) @ Ry(yaw) @ Rx(pitch), returned transposed (row-vector keypoints)
    ref = Rotation.from_euler("ZYX", np.stack([roll, yaw, pitch], 1), degrees=True).as_matrix().transpose(0, 2, 1)
    assert np.allclose(ours, ref, atol=1e-6)
    back = matrix_to_degrees(torch.from_numpy(ours))
    for got, want in zip(back, (pitch, yaw, roll)):
        assert np.allclose(got.numpy(), want, atol=1e-3)


def test_pure_yaw_turns_x_towards_minus_z():
    # kp @ R with R = Ry(yaw)^T: the unit x axis becomes (cos y, 0, -sin y)
    R = rotation_matrix(torch.zeros(1), torch.tensor([30.0]), torch.zeros(1))
    x = torch.tensor([[1.0, 0, 0]]) @ R[0]
    assert torch.allclose(x, torch.tensor([[np.cos(np.pi / 6), 0, -np.sin(np.pi / 6)]], dtype=torch.float32), atol=1e-6)


def test_bins_to_degrees_on_one_hot_logits():
    bins = torch.tensor([0, 10, 32, 65])
    logits = torch.full((4, 66), -1e4)
    logits[torch.arange(4), bins] = 1e4
    assert torch.allclose(bins_to_degrees(logits), bins.float() * 3 - 97.5)
    assert torch.allclose(bins_to_degrees(torch.zeros(1, 66)), torch.tensor([0.0]))  # uniform: mean bin 32.5


def _source_info(K=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    info = {"pitch": torch.tensor([5.0]), "yaw": torch.tensor([-10.0]), "roll": torch.tensor([3.0]),
            "scale": torch.tensor([[1.2]]), "t": torch.tensor([[0.05, -0.02, 0.3]]),
            "exp": torch.randn(1, K, 3, generator=g) * 0.02, "kp": torch.rand(1, K, 3, generator=g) - 0.5}
    return SourceInfo.from_keypoint_info(info)


def test_source_keypoints_drop_tz():
    s = _source_info()
    manual = 1.2 * (s.kp @ s.R + s.exp) + torch.tensor([0.05, -0.02, 0.0])
    assert torch.allclose(s.x_s, manual, atol=1e-6)


def test_relative_motion_identical_to_first_frame_reproduces_source(nets):
    s = _source_info()
    T = 3
    R = rotation_matrix(torch.full((T,), 20.0), torch.full((T,), -5.0), torch.zeros(T)).numpy()
    m = MotionSequence(R=R, exp=np.full((T, 6, 3), 0.1), scale=np.full((T, 1), 0.7), t=np.ones((T, 3)))
    out = driving_keypoints(s, m, nets.stitching_retargeting_module, AnimationOptions(stitching=False))
    assert torch.allclose(out["x_d"], s.x_s.expand(T, 6, 3), atol=1e-5)


def test_relative_motion_follows_the_published_formulas(nets):
    s = _source_info()
    rng = np.random.default_rng(1)
    pitch, yaw, roll = rng.uniform(-20, 20, (3, 4))
    R = Rotation.from_euler("ZYX", np.stack([roll, yaw, pitch], 1), degrees=True).as_matrix().transpose(0, 2, 1)
    exp, scale, t = rng.normal(0, 0.05, (4, 6, 3)), rng.uniform(0.8, 1.2, (4, 1)), rng.normal(0, 0.1, (4, 3))
    m = MotionSequence(R=R, exp=exp, scale=scale, t=t)
    out = driving_keypoints(s, m, nets.stitching_retargeting_module,
                            AnimationOptions(stitching=False, driving_option="pose-friendly"))
    R0, xc, Rs = R[0], s.kp[0].numpy(), s.R[0].numpy()
    for i in range(4):
        R_new = R[i] @ R0.T @ Rs
        d_new = s.exp[0].numpy() + exp[i] - exp[0]
        s_new = 1.2 * scale[i, 0] / scale[0, 0]
        t_new = np.array([0.05, -0.02, 0.3]) + t[i] - t[0]
        t_new[2] = 0
        want = s_new * (xc @ R_new + d_new) + t_new
        assert np.allclose(out["x_d"][i].numpy(), want, atol=1e-5)


def test_expression_friendly_multiplier_scales_with_hull_volume():
    x = torch.rand(1, 8, 3, generator=torch.Generator().manual_seed(2))
    for c in (0.5, 2.0):  # volume scales by c^3, so the multiplier is c^-1.5
        assert motion_multiplier(x, x * c) == pytest.approx(c ** -1.5, rel=1e-6)


def test_head_pose_sweep_reports_the_yaw_it_was_given(pipe, source):
    sweep = head_pose_sweep(30, yaw=40, pitch=20, roll=15)
    kp = pipe.driving_keypoints(source, sweep)
    assert np.allclose(kp["yaw"].numpy(), sweep.extra["yaw"], atol=1e-3)
    assert np.allclose(kp["pitch"].numpy(), sweep.extra["pitch"], atol=1e-3)
    assert np.allclose(kp["roll"].numpy(), sweep.extra["roll"], atol=1e-3)
    assert sweep.extra["yaw"].max() == pytest.approx(40, abs=0.5) and sweep.extra["yaw"].min() == pytest.approx(-40, abs=0.5)
    assert len(head_pose_sweep()) == 354


def test_expression_set_drives_the_retargeting_networks(pipe, source, nets):
    expr = expression_set()
    assert len(expr) == 250 and expr.eye_ratio.min() < 0.01 and expr.lip_ratio.max() == pytest.approx(0.6, abs=0.01)
    short = expression_set(30)
    opts = AnimationOptions(stitching=False)
    kp = pipe.driving_keypoints(source, short, opts)
    x_s = source.info.x_s
    S = nets.stitching_retargeting_module
    with torch.no_grad():
        eye = S.eye(torch.cat([x_s.reshape(1, -1).expand(30, -1), torch.full((30, 2), 0.35),
                               torch.from_numpy(short.eye_ratio)], 1)).reshape(30, -1, 3)
        lip = S.lip(torch.cat([x_s.reshape(1, -1).expand(30, -1), torch.zeros(30, 1),
                               torch.from_numpy(short.lip_ratio)], 1)).reshape(30, -1, 3)
    assert torch.allclose(kp["x_d"], x_s + eye + lip, atol=1e-5)


def test_lip_normalisation_adds_the_lip_closing_offset_above_threshold(nets):
    s = _source_info()
    m = MotionSequence(R=np.repeat(s.R.numpy(), 2, 0), relative=True)
    S = nets.stitching_retargeting_module
    plain = driving_keypoints(s, m, S, AnimationOptions(stitching=False))["x_d"]
    opened = driving_keypoints(s, m, S, AnimationOptions(stitching=False, normalize_lip=True, source_lip_ratio=0.2))
    with torch.no_grad():
        delta = S.lip(torch.cat([s.x_s.reshape(1, -1), torch.tensor([[0.2, 0.0]])], 1)).reshape(1, -1, 3)
    assert torch.allclose(opened["x_d"], plain + delta, atol=1e-6)
    closed = driving_keypoints(s, m, S, AnimationOptions(stitching=False, normalize_lip=True, source_lip_ratio=0.01))
    assert torch.allclose(closed["x_d"], plain)  # below the 0.03 threshold: unchanged
    absolute = MotionSequence(R=np.repeat(s.R.numpy(), 2, 0), relative=False)  # upstream: relative motion only
    opts = AnimationOptions(stitching=False, normalize_lip=True, source_lip_ratio=0.2)
    assert torch.equal(driving_keypoints(s, absolute, S, opts)["x_d"],
                       driving_keypoints(s, absolute, S, AnimationOptions(stitching=False))["x_d"])


def test_batched_equals_frame_by_frame_and_chunked_equals_unchunked(pipe, source):
    sweep = head_pose_sweep(6)
    kp = pipe.driving_keypoints(source, sweep)
    whole = pipe.render(source.feature, source.info.x_s, kp["x_d"])
    single = torch.cat([pipe.render(source.feature, source.info.x_s, kp["x_d"][i:i + 1]) for i in range(6)])
    assert torch.allclose(whole, single, atol=1e-5)
    a = np.stack(list(pipe.iter_frames(source, sweep, chunk_size=6)))
    b = np.stack(list(pipe.iter_frames(source, sweep, chunk_size=4)))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_bf16_autocast_path_runs_and_stays_close(nets, source):
    fp32 = LivePortraitPipeline(nets, device="cpu", dtype="fp32", progress=False)
    bf16 = LivePortraitPipeline(nets, device="cpu", dtype="bf16", progress=False)
    kp = fp32.driving_keypoints(source, head_pose_sweep(4))
    a = fp32.render(source.feature, source.info.x_s, kp["x_d"])
    b = bf16.render(source.feature, source.info.x_s, kp["x_d"])
    assert a.dtype == b.dtype == torch.float32 and (a - b).abs().mean() < 0.02


def test_gpu_paste_back_matches_cv2_warp_affine():
    rng = np.random.default_rng(3)
    original = rng.integers(0, 255, (90, 120, 3)).astype(np.float32) / 255
    crop = crop_from_box((40, 20, 80, 70), (90, 120), crop_size=64, scale=1.3)
    animated = rng.random((64, 64, 3)).astype(np.float32)
    mask = rng.random((64, 64)).astype(np.float32)
    ours = paste_back(torch.from_numpy(animated).permute(2, 0, 1)[None], torch.from_numpy(original).permute(2, 0, 1)[None],
                      crop, torch.from_numpy(mask)[None, None])[0].permute(1, 2, 0).numpy()
    warp = cv2.warpAffine(animated, crop.M_c2o, (120, 90), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = cv2.warpAffine(mask, crop.M_c2o, (120, 90), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    ref = alpha * warp + (1 - alpha) * original
    inner = (slice(2, -2), slice(2, -2))  # border pixels differ by interpolation edge rules only
    assert np.abs(ours[inner] - ref[inner]).max() < 2e-3


def test_cropped_source_is_pasted_back_at_original_size(nets):
    pipe = LivePortraitPipeline(nets, device="cpu", progress=False)
    image = np.full((80, 100), 60, np.uint8)
    src = pipe.prepare_source(image, crop=crop_from_box((30, 20, 70, 60), (80, 100), crop_size=64, scale=1.2))
    frames = pipe.animate(src, head_pose_sweep(3)).frames
    assert frames.shape == (3, 80, 100, 3)
    assert (frames[:, :3, :3] == 60).all()  # outside the mask: the original pixels
    assert (frames[..., 0] != frames[..., 2]).any()  # the decoder's 3 channels by default, as upstream
    gray = LivePortraitPipeline(nets, device="cpu", progress=False, grayscale_output=True)
    frames = gray.animate(gray.prepare_source(image, crop=src.crop), head_pose_sweep(3)).frames
    assert (frames[..., 0] == frames[..., 2]).all()  # grayscale when asked for


def test_gray_output_is_one_plane_with_the_pixels_of_the_three_channel_mean(nets):
    """Gray frames leave the device as one channel and come out as read-only views of it (channel stride 0);
    their pixels are those of the channel mean expanded to three channels, as the pipeline made them before."""
    import torch

    from generator.animate.liveportrait.pipeline import frames_to_uint8

    gray = LivePortraitPipeline(nets, device="cpu", progress=False, grayscale_output=True)
    yy, xx = np.mgrid[0:64, 0:64]
    source = gray.prepare_source((128 + 100 * np.exp(-((xx - 30) ** 2 + (yy - 33) ** 2) / 250)).astype(np.uint8))
    motion = head_pose_sweep(4)
    frames = list(gray.iter_frames(source, motion, chunk_size=3))
    size = nets.cfg.output_size
    assert len(frames) == 4 and all(f.shape == (size, size, 3) for f in frames)
    assert all(f.strides[2] == 0 and not f.flags.writeable for f in frames)
    kp = gray.driving_keypoints(source, motion)
    with torch.no_grad():
        images = gray.render(source.feature, source.info.x_s, kp["x_d"])
    expected = frames_to_uint8(images.mean(1, keepdim=True).expand(-1, 3, -1, -1))
    assert np.array_equal(np.stack(frames), expected)


def test_mapped_points_follow_the_keypoints(pipe, source):
    kp = pipe.driving_keypoints(source, head_pose_sweep(5))
    x_s = source.info.x_s[0].numpy()
    pts = ((x_s[:, :2] + 1) * 64 - 1) / 2  # keypoint xy as source-image pixels (64 x 64 source)
    moved = pipe.map_source_points(source, pts, kp)
    want = ((kp["x_d"][..., :2].numpy() + 1) * pipe.cfg.output_size - 1) / 2
    assert np.allclose(moved, want, atol=1e-3)
    still = MotionSequence(R=np.repeat(source.info.R.numpy(), 2, 0), relative=False)
    same = pipe.driving_keypoints(source, still, AnimationOptions(stitching=False))
    grid = np.array([[10.0, 12.0], [40.0, 50.0]])
    assert np.allclose(pipe.map_source_points(source, grid, same), np.repeat((grid * 2 + 0.5)[None], 2, 0), atol=1e-3)
