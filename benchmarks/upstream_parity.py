"""The project's LivePortrait against upstream's own code, same random weights, fp32 on CPU.

    git clone https://github.com/KwaiVGI/LivePortrait /tmp/LivePortrait    # upstream is never shipped here
    python benchmarks/upstream_parity.py --upstream /tmp/LivePortrait [--input-size 256] [--template d1.pkl]

Builds the published networks with random weights, writes them in upstream's `.pth` layout and loads them into
both implementations. Then:
1. each network stage (F, M, W, G, S/eye/lip) on the same inputs: max |difference|;
2. upstream's `LivePortraitPipeline.execute` (source image, template, flags; no crop, no paste-back, fp32) against
   `LivePortraitPipeline.animate` here: max |x_d difference| over all frames and the share of uint8 frame values
   that differ, with the largest difference, for relative/absolute motion, both driving options, stitching on/off,
   eye+lip retargeting on, and a driving image (1-frame template).
Upstream's detector/landmark stack is replaced by a stub that returns fixed 203 landmarks for the source (the
networks never see landmarks); its video writer and Kalman smoother are stubbed out (not used for an image
source). `--input-size 128` (the default, the smallest the published dense-motion depth allows) keeps the
published channels at half the resolution; 256 is the real size. Nothing is asserted: it prints a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one
from generator.animate.liveportrait import (
    AnimationOptions,
    LivePortraitConfig,
    LivePortraitNetworks,
)
from generator.animate.liveportrait.pipeline import LivePortraitPipeline
from generator.animate.motion import load_lip_array, load_motion
from generator.animate.motion.liveportrait_pkl import ratios_from_landmarks
from generator.safe_pickle import safe_pickle_load


def source_landmarks(size: int) -> np.ndarray:
    """203 points with open eyes (0.32, 0.30) and a slightly open mouth (0.05): fixed, as a stub detector."""
    p = np.tile(np.array([[size / 2, size / 2]], np.float32), (203, 1))
    p[0], p[12], p[6], p[18] = (60, 100), (100, 100), (80, 93.6), (80, 106.4)
    p[24], p[36], p[30], p[42] = (150, 100), (190, 100), (170, 94), (170, 106)
    p[48], p[66], p[90], p[102] = (100, 180), (160, 180), (130, 178.5), (130, 181.5)
    return p * size / 256


def install_stubs(upstream: Path, captured: dict) -> types.ModuleType:
    """Import upstream's pipeline with its detector, video writer, smoother and CLI parser stubbed."""
    sys.path.insert(0, str(upstream))

    def module(name: str, **attrs) -> None:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m

    class Cropper:
        def __init__(self, crop_cfg=None, **_):
            self.crop_cfg = crop_cfg

        def calc_lmk_from_cropped_image(self, img, **_):
            return source_landmarks(img.shape[0])

    def concat_frames(driving, source, generated):
        captured["frames"] = [np.asarray(f) for f in generated]
        return [np.asarray(f) for f in generated]

    if "imageio" not in sys.modules:  # upstream's video reader; an image source never uses it
        try:
            import imageio  # noqa: F401
        except ImportError:
            module("imageio", get_reader=None)
    module("src.utils.cropper", Cropper=Cropper)
    module("src.utils.video", images2video=lambda *a, **k: None, concat_frames=concat_frames,
           get_fps=lambda *a: 25, add_audio_to_video=lambda *a: None, has_audio_stream=lambda *a: False)
    module("src.utils.filter", smooth=lambda *a, **k: (_ for _ in ()).throw(RuntimeError("source videos only")))
    module("src.config.argument_config", ArgumentConfig=object)
    import src.live_portrait_pipeline as lpp

    return lpp


def random_networks(input_size: int, folder: Path, seed: int) -> LivePortraitNetworks:
    nets = LivePortraitNetworks.from_config(LivePortraitConfig(input_size=input_size), seed=seed)
    with torch.no_grad():  # break the symmetric inits so every output depends on every weight
        for p in nets.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    nets.save_pretrained(folder, layout="upstream")
    return LivePortraitNetworks.from_pretrained(folder)  # spectral norm folded from the .pth, as a user loads it


def upstream_wrapper(lpp, folder: Path, input_size: int):
    from src.config.inference_config import InferenceConfig

    cfg = InferenceConfig(
        checkpoint_F=str(folder / "appearance_feature_extractor.pth"),
        checkpoint_M=str(folder / "motion_extractor.pth"),
        checkpoint_W=str(folder / "warping_module.pth"), checkpoint_G=str(folder / "spade_generator.pth"),
        checkpoint_S=str(folder / "stitching_retargeting_module.pth"), flag_force_cpu=True,
        flag_use_half_precision=False, flag_do_crop=False, flag_pasteback=False, input_shape=(input_size, input_size))
    pipe = object.__new__(lpp.LivePortraitPipeline)
    pipe.live_portrait_wrapper = lpp.LivePortraitWrapper(inference_cfg=cfg)
    pipe.cropper = sys.modules["src.utils.cropper"].Cropper(crop_cfg=None)
    return pipe, cfg


def compare_stages(ours: LivePortraitNetworks, up, size: int, rng) -> dict[str, float]:
    w = up.live_portrait_wrapper
    x = torch.from_numpy(rng.random((1, 3, size, size), dtype=np.float32))
    out = {}
    with torch.no_grad():
        out["F"] = (ours.appearance_feature_extractor(x) - w.appearance_feature_extractor(x)).abs().max().item()
        a, b = ours.motion_extractor(x), w.motion_extractor(x)
        out["M"] = max((a[k] - b[k]).abs().max().item() for k in b)
        f_s = w.appearance_feature_extractor(x)
        kp_s, kp_d = (torch.rand(1, 21, 3) - 0.5) * 0.6, (torch.rand(1, 21, 3) - 0.5) * 0.6
        wa, wb = ours.warping_module(f_s, kp_d, kp_s), w.warping_module(f_s, kp_source=kp_s, kp_driving=kp_d)
        out["W"] = max((wa[k] - wb[k]).abs().max().item() for k in ("out", "occlusion_map", "deformation"))
        out["G"] = (ours.spade_generator(wb["out"]) - w.spade_generator(feature=wb["out"])).abs().max().item()
        S = ours.stitching_retargeting_module
        out["S"] = (S.stitch(kp_s, kp_d) - w.stitching(kp_s, kp_d)).abs().max().item()
        ratio = torch.tensor([[0.3, 0.28, 0.1]])
        out["S_eye"] = (S.retarget_eye(kp_s, ratio) - w.retarget_eye(kp_s, ratio)).abs().max().item()
        out["S_lip"] = (S.retarget_lip(kp_s, ratio[:, :2]) - w.retarget_lip(kp_s, ratio[:, :2])).abs().max().item()
    return out


def synthetic_template(path: Path, frames: int, rng) -> Path:
    """Upstream's current layout: a head turn with expression, scale and shift changes, eye/lip lists."""
    from generator.animate.liveportrait.camera import rotation_matrix

    angles = np.stack([np.linspace(0, a, frames) for a in (8.0, 20.0, -6.0)])
    R = rotation_matrix(*torch.from_numpy(angles).float()).numpy()
    motion = [{"scale": np.array([[1.0 + 0.05 * i / frames]], np.float32), "R": R[i:i + 1],
               "exp": rng.normal(0, 0.02, (1, 21, 3)).astype(np.float32),
               "t": rng.normal(0, 0.02, (1, 3)).astype(np.float32)} for i in range(frames)]
    data = {"n_frames": frames, "output_fps": 25, "motion": motion,
            "c_eyes_lst": [rng.uniform(0.05, 0.4, (1, 2)).astype(np.float32) for _ in range(frames)],
            "c_lip_lst": [rng.uniform(0.0, 0.4, (1, 1)).astype(np.float32) for _ in range(frames)]}
    path.write_bytes(pickle.dumps(data))
    return path


SCENARIOS = {  # name: (relative, driving option, stitching, eye+lip retargeting, normalize_lip)
    "relative expression-friendly stitching": (True, "expression-friendly", True, False, False),
    "relative expression-friendly no-stitching": (True, "expression-friendly", False, False, False),
    "relative pose-friendly stitching": (True, "pose-friendly", True, False, False),
    "relative pose-friendly stitching normalize-lip": (True, "pose-friendly", True, False, True),
    "absolute pose-friendly stitching": (False, "pose-friendly", True, False, False),
    "absolute expression-friendly no-stitching": (False, "expression-friendly", False, False, False),
    "relative eye+lip retargeting stitching": (True, "expression-friendly", True, True, False),
    "absolute eye+lip retargeting no-stitching": (False, "expression-friendly", False, True, False),
}


def run_scenario(lpp, up, cfg, ours_pipe, source_path: Path, template: Path, flags, lip_array, captured, out_dir):
    relative, option, stitching, retarget, normalize = flags
    for k, v in dict(flag_relative_motion=relative, driving_option=option, flag_stitching=stitching,
                     flag_eye_retargeting=retarget, flag_lip_retargeting=retarget, flag_normalize_lip=normalize,
                     driving_multiplier=1.0, animation_region="all").items():
        setattr(cfg, k, v)
    x_d_up = []
    warp_decode = up.live_portrait_wrapper.warp_decode

    def recording(feature_3d, kp_source, kp_driving):
        x_d_up.append(kp_driving.detach().clone())
        return warp_decode(feature_3d, kp_source, kp_driving)

    up.live_portrait_wrapper.warp_decode = recording
    args = types.SimpleNamespace(source=str(source_path), driving=str(template), output_dir=str(out_dir),
                                 flag_crop_driving_video=False, audio_priority="driving")
    up.execute(args)
    up.live_portrait_wrapper.warp_decode = warp_decode
    image = cv2.cvtColor(cv2.imread(str(source_path)), cv2.COLOR_BGR2RGB)
    eye, lip = ratios_from_landmarks(source_landmarks(image.shape[0])[None])
    left, right, lip = float(eye[0, 0]), float(eye[0, 1]), float(lip[0, 0])
    motion = load_motion(template)
    opts = AnimationOptions(driving_option=option, stitching=stitching, normalize_lip=normalize,
                            eye_retargeting=retarget, lip_retargeting=retarget, relative_motion=relative,
                            source_eye_ratio=(left, right), source_lip_ratio=lip, lip_array=lip_array)
    source = ours_pipe.prepare_source(image)
    kp = ours_pipe.driving_keypoints(source, motion, opts)
    frames = np.stack(list(ours_pipe.iter_frames(source, motion, opts, keypoints=kp)))
    theirs = np.stack(captured["frames"])
    diff = np.abs(frames.astype(int) - theirs.astype(int))
    return {"x_d_max": (kp["x_d"] - torch.cat(x_d_up)).abs().max().item(), "uint8_differ": float((diff > 0).mean()),
            "uint8_max": int(diff.max()), "frames": len(frames)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, type=Path, help="a LivePortrait checkout (its src/ is imported)")
    ap.add_argument("--input-size", type=int, default=128, help="network input size (256 = published; >= 128)")
    ap.add_argument("--template", type=Path, help="an upstream .pkl with eye/lip lists (default: synthetic)")
    ap.add_argument("--frames", type=int, default=3, help="frames of the synthetic template / taken from --template")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages-only", action="store_true", help="only the per-network comparison (fast at 256)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_grad_enabled(False)
    rng = np.random.default_rng(args.seed)
    captured: dict = {}
    lpp = install_stubs(args.upstream.resolve(), captured)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nets = random_networks(args.input_size, tmp / "weights", args.seed)
        up, cfg = upstream_wrapper(lpp, tmp / "weights", args.input_size)
        stages = compare_stages(nets, up, args.input_size, rng)
        if args.stages_only:
            print(json.dumps({"input_size": args.input_size, "stages": stages,
                              "seconds": round(time.perf_counter() - t0)}))
            return
        yy, xx = np.mgrid[0:256, 0:256]
        face = (120 + 90 * np.exp(-((xx - 128) ** 2 + (yy - 120) ** 2) / 3000))[..., None] * [1.0, 0.97, 1.02]
        face = np.clip(face + rng.normal(0, 6, face.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(tmp / "source.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
        if args.template:  # its first --frames frames (any upstream layout), so a run stays minutes long
            data = safe_pickle_load(args.template)
            n = min(args.frames, len(data["motion"]))
            data = {k: (v[:n] if isinstance(v, list) else v) for k, v in data.items()} | {"n_frames": n}
            template = tmp / args.template.name
            template.write_bytes(pickle.dumps(data))
        else:
            template = synthetic_template(tmp / "template.pkl", args.frames, rng)
        single = tmp / "image.pkl"
        data = safe_pickle_load(template)
        data = {k: (v[-1:] if isinstance(v, list) else v) for k, v in data.items()} | {"n_frames": 1}
        single.write_bytes(pickle.dumps(data))
        ours_pipe = LivePortraitPipeline(nets, device="cpu", dtype="fp32", progress=False)
        lip_array = load_lip_array(args.upstream / "src/utils/resources/lip_array.pkl")
        results = {}
        for name, flags in SCENARIOS.items():
            results[name] = run_scenario(lpp, up, cfg, ours_pipe, tmp / "source.png", template, flags, lip_array,
                                         captured, tmp / "out")
        for name in ("relative expression-friendly stitching", "absolute pose-friendly stitching"):
            results["driving image, " + name] = run_scenario(lpp, up, cfg, ours_pipe, tmp / "source.png", single,
                                                             SCENARIOS[name], lip_array, captured, tmp / "out")
    print(f"input {args.input_size}x{args.input_size}, published channels, random weights, fp32, CPU "
          f"({platform.machine()}, {torch.get_num_threads()} threads), {time.perf_counter() - t0:.0f} s")
    for k, v in stages.items():
        print(f"  stage {k:6s} max |diff| {v:.2e}")
    for k, v in results.items():
        print(f"  {k:58s} x_d {v['x_d_max']:.1e}  uint8 differ {100 * v['uint8_differ']:.3f}% (max {v['uint8_max']})")
    print(json.dumps({"input_size": args.input_size, "stages": stages, "scenarios": results}))


if __name__ == "__main__":
    main()
