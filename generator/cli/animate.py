"""`thermvision-db generate --stage animate`: animate stills with the thermal LivePortrait.

    thermvision-db generate --stage animate --source still.png --driving head_pose --liveportrait-dir weights/
    thermvision-db generate --stage animate --source still.png --driving video --driving-path talk.mp4
    thermvision-db generate --stage animate --source stills/ --driving expression --preset tiny   # offline demo
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from thermvision_db.errors import InputError
from thermvision_db.io.atomic import atomic_write_json

log = logging.getLogger(__name__)
DRIVING = ("head_pose", "expression", "video", "template", "image")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("animate stage")
    g.add_argument("--source", help="a still image, or a folder of stills (one identity each)")
    g.add_argument("--driving", choices=DRIVING, default="head_pose",
                   help="motion: procedural head_pose sweep / expression set, a driving video or a template file")
    g.add_argument("--driving-path", help="driving video (.mp4...), template (.pkl, .npz, .safetensors) or image")
    g.add_argument("--frames", type=int, default=None,
                   help="frames of a procedural program (default 354 head_pose / 250 expression) or max video frames")
    g.add_argument("--chunk-size", type=int, default=None, help="driving frames per W+G batch (default --batch-size or 16)")
    g.add_argument("--liveportrait-dir", help="weights folder (upstream .pth, ComfyUI or ThermVision safetensors)")
    g.add_argument("--driving-motion-extractor", help="separate motion extractor for the driving frames (e.g. RGB)")
    g.add_argument("--detector", help="ONNX face detector to crop a non-aligned driving video")
    g.add_argument("--source-box", help="x1,y1,x2,y2 face box: crop the source there and paste the result back")
    g.add_argument("--preprocess", default="", help="thermal preprocessing of the source: comma list of "
                   "minmax,bilateral,equalize (applied in that order)")
    g.add_argument("--driving-option", choices=("expression-friendly", "pose-friendly"), default="expression-friendly",
                   help="LivePortrait's driving option: how expression and pose of the driving motion are combined")
    g.add_argument("--animate-no-stitching", action="store_true", help="disable the stitching MLP")
    g.add_argument("--animate-no-png", action="store_true", help="write only the MP4 and motion, not PNG frames")
    g.add_argument("--animate-gray", action="store_true",
                   help="grayscale frames (channel mean, replicated) instead of the decoder's 3 channels")
    g.add_argument("--absolute-motion", action="store_true", help="upstream's --no_flag_relative_motion")
    g.add_argument("--eye-retargeting", action="store_true",
                   help="upstream's flag_eye_retargeting (needs eye ratios)")
    g.add_argument("--lip-retargeting", action="store_true", help="upstream's flag_lip_retargeting (needs lip ratios)")
    g.add_argument("--normalize-lip", action="store_true", help="upstream's flag_normalize_lip (relative motion)")
    g.add_argument("--lip-array", help="upstream's src/utils/resources/lip_array.pkl (needed by --driving image)")


def _sources(path: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"--source {p} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a still or a folder of stills")
        return files
    if not p.is_file():
        raise SystemExit(f"--source {p} does not exist; give a still image or a folder of stills")
    return [p]


def check_weights_folder(folder: str) -> None:
    """Name the option before any work starts: the folder is read only after the stills are made."""
    if not Path(folder).expanduser().is_dir():
        raise SystemExit(f"--liveportrait-dir {folder} is not a folder; give the folder holding the LivePortrait weights "
                         "(upstream .pth, ComfyUI or ThermVision .safetensors files)")


def _networks(args):
    import torch

    from generator.animate.liveportrait.config import LivePortraitConfig
    from generator.animate.liveportrait.model import LivePortraitNetworks

    if args.liveportrait_dir:
        check_weights_folder(args.liveportrait_dir)
        return LivePortraitNetworks.from_pretrained(args.liveportrait_dir,
                                                    driving_motion_extractor=args.driving_motion_extractor)
    if args.preset == "tiny":
        log.warning("no --liveportrait-dir: using tiny random networks (offline demo; output is not a face)")
        torch.manual_seed(args.seed)
        return LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=args.seed)
    if args.preset != "thermvision":
        raise SystemExit(f"unknown preset {args.preset!r}; choose one of tiny, thermvision")
    raise SystemExit(f"--preset {args.preset} needs --liveportrait-dir pointing at the LivePortrait weights")


def _motion(args, pipeline):
    from generator.animate import motion as motions

    if args.driving == "head_pose":
        return motions.head_pose_sweep(args.frames or 354)
    if args.driving == "expression":
        return motions.expression_set(args.frames or 250)
    if not args.driving_path:
        raise SystemExit(f"--driving {args.driving} needs --driving-path")
    if args.driving == "template":
        motion = motions.load_motion(args.driving_path)
        problem = motion.fit_problem(pipeline.cfg.num_kp)
        if problem:  # before any frame is animated, naming the file
            raise InputError(f"{args.driving_path}: {problem}")
        return motion
    if args.driving == "image":
        return motions.motion_from_image(args.driving_path, pipeline)
    detector = motions.OnnxFaceDetector(args.detector) if args.detector else None
    return motions.motion_from_video(args.driving_path, pipeline, detector=detector,
                                     batch_size=args.batch_size or 32, max_frames=args.frames)


def motions_lip_array(path: str):
    from generator.animate.motion import load_lip_array

    return load_lip_array(path)


def pad_to_even(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """H.264 (yuv420p) needs even sizes: an odd-sized source gets one edge-replicated row/column at the bottom/right
    before animating (box coordinates are unchanged), and the padding is reported; None when nothing was added."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image, None
    padded = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return padded, f"padded {w}x{h} -> {padded.shape[1]}x{padded.shape[0]} at the bottom/right (H.264 needs even sizes)"


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from generator.animate.liveportrait.algorithm import AnimationOptions
    from generator.animate.liveportrait.crop import crop_from_box
    from generator.animate.liveportrait.output import write_animation
    from generator.animate.liveportrait.pipeline import LivePortraitPipeline
    from generator.preprocess import preprocess, scale_rule, to_gray

    if not args.source:
        raise SystemExit("--stage animate needs --source (a still image or a folder of stills)")
    sources = _sources(args.source)
    steps = [s.strip() for s in args.preprocess.split(",") if s.strip()]
    # --eye-lip-model (shared with the corpus stage): the source's eye/lip opening, as upstream measures it
    if args.eye_lip_model and not args.source_box:
        raise SystemExit("--eye-lip-model needs --source-box (the face box its 224 crop is cut around)")
    pipeline = LivePortraitPipeline(_networks(args), device=args.device, dtype=args.dtype, compile=args.compile,
                                    chunk_size=args.chunk_size or args.batch_size or 16,
                                    grayscale_output=args.animate_gray)
    motion = _motion(args, pipeline)
    options = AnimationOptions(driving_option=args.driving_option, stitching=not args.animate_no_stitching,
                               eye_retargeting=True if args.eye_retargeting else None,
                               lip_retargeting=True if args.lip_retargeting else None,
                               relative_motion=False if args.absolute_motion else None,
                               normalize_lip=args.normalize_lip,
                               lip_array=motions_lip_array(args.lip_array) if args.lip_array else None)
    eye_lip = None
    if args.eye_lip_model:
        from generator.annotate.onnx_models import Landmarker203

        eye_lip = Landmarker203(args.eye_lip_model)
    out_root = Path(args.out) / "animate"
    for path in sources:
        raw = np.asarray(Image.open(path))
        image = preprocess(raw, steps, source=str(path))
        rule = scale_rule(to_gray(raw))
        if rule:
            print(f"{path.name}: {rule}")
        image, padded = pad_to_even(image)
        if padded:
            print(f"{path.name}: {padded}")
        crop = None
        if args.source_box:
            box = [float(v) for v in args.source_box.split(",")]
            if len(box) != 4:
                raise SystemExit("--source-box takes x1,y1,x2,y2")
            crop = crop_from_box(box, image.shape[:2], crop_size=512, scale=1.6)
            if eye_lip is not None:
                left, right, lip = eye_lip.eye_lip_ratios(eye_lip(image, [box[0], box[1], box[2] - box[0],
                                                                          box[3] - box[1]]))
                options.source_eye_ratio, options.source_lip_ratio = (left, right), lip
        source = pipeline.prepare_source(image, crop)
        paths = write_animation(pipeline, source, motion, out_root / path.stem, motion.name, options,
                                png=not args.animate_no_png)
        atomic_write_json(out_root / path.stem / "source.json", {  # what was done to the source, beside its frames
            "source": str(path), "size": [int(raw.shape[1]), int(raw.shape[0])],
            "animated_size": [int(image.shape[1]), int(image.shape[0])], "padding": padded, "scale_rule": rule,
            "source_box": args.source_box})
        print(f"{path.name}: {len(motion)} frames -> {paths['mp4']}")
    return 0
