"""`thermvision-db generate -n N`: the whole pipeline (stills -> animation -> labels -> corpus folder).

    thermvision-db generate -n 500 --preset tiny --motion short --out corpus/            # CPU, offline, minutes
    thermvision-db generate -n 1000 --preset thermvision --lora thermal.safetensors \\
        --liveportrait-dir weights/liveportrait --out corpus/                 # varied motion per identity
    thermvision-db generate -n 50 --preset thermvision ... --motion paper --driving-clips LivePortrait/  # as the paper
    torchrun --nproc_per_node 8 -m thermvision_db generate -n 10000 ... --out corpus/  # data parallel
    thermvision-db generate -n 10000 ... --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT

Options shared with the stills and animate stages (--flux, --lora, --liveportrait-dir, --stills-size, ...) keep
their meaning; the ones below belong to the whole pipeline.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("whole pipeline (--stage all, the default)")
    g.add_argument("--motion", default=None,
                   help="PROGRAM[:FRAMES]. PROGRAM: 'varied' (default; each identity its own seeded pose trajectory "
                        "and expressions), 'paper' (LivePortrait's d3.mp4/d19.mp4 clips, needs --driving-clips), "
                        "'procedural' (the same sweep + blinks/mouth for everyone). FRAMES: 'paper' (354 + 250), "
                        "'short' (12 + 12) or 'head_pose=N,expression=M' (default: paper for --preset thermvision, "
                        "short for tiny)")
    g.add_argument("--driving-clips", default=None,
                   help="--motion paper: a LivePortrait checkout (assets/examples/driving/d3.mp4, d19.mp4), that "
                        "folder, or 'head_pose=d3.mp4,expression=d19.mp4'")
    g.add_argument("--expression-library", default=None,
                   help="--motion varied: tagged expression sources 'smile=a.pkl,frown=b.mp4,surprise=c.npz'")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="do only shard I of N (Slurm arrays); combines with torchrun/accelerate ranks")
    g.add_argument("--barrier-timeout", type=float, default=30.0, metavar="MINUTES",
                   help="how long a worker waits for the other workers' stills/identities before failing (it logs "
                        "the missing workers every minute); default 30")
    g.add_argument("--distinct", type=float, default=None, metavar="COSINE",
                   help="reject a still whose embedding is closer than this cosine similarity to an accepted one")
    g.add_argument("--label-detector", default=None,
                   help="face detector, YOLOv5 / YOLO5Face .onnx or SF-TL54's dlib .svm (needs the dlib extra): "
                        "labels the still and checks every frame")
    g.add_argument("--label-landmarker", default=None,
                   help="54-point model for the still: SF-TL54-style .onnx or SF-TL54's dlib .dat shape predictor")
    g.add_argument("--eye-lip-model", default=None,
                   help="LivePortrait 203-point ONNX (landmark.onnx): measures the still's eye and lip opening, "
                        "the starting point of the expression retargeting")
    # `--frames N` is the animate stage's frame count, hence `--frame-files` (settings / generator_options: frames)
    g.add_argument("--frame-files", choices=["png", "none"], default=None,
                   help="png (default): lossless PNG frames beside each MP4 (one channel when gray); none: the MP4 "
                        "alone, several times less disk (frames are decoded from it when loading)")
    g.add_argument("--no-png", action="store_true", help="same as --frame-files none")
    g.add_argument("--video-encoder", choices=["auto", "x264", "nvenc"], default="auto",
                   help="H.264 encoder: auto = NVENC (h264_nvenc) when the GPU and PyAV build offer it, else x264")
    from generator.corpus.settings import DEFAULT_GOP

    g.add_argument("--video-gop", type=int, default=DEFAULT_GOP, metavar="N",
                   help=f"at most N frames between keyframes of each MP4 (default {DEFAULT_GOP}: a random clip read "
                        "from the MP4 costs about its own frames; 250 = x264's default, smallest files)")
    g.add_argument("--writers", type=int, default=None, metavar="N",
                   help="PNG/H.264 writer processes beside the GPU loop (default: from the cores; 0 = inline)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default): this process (torchrun ranks x --shard); ray: Ray actors on a local "
                        "instance or the cluster at --ray-address / $RAY_ADDRESS (pip install 'thermvision-db[ray]', "
                        "docs/ray.md)")
    g.add_argument("--ray-address", default=None, help="--engine ray: the cluster to join (default: $RAY_ADDRESS, "
                                                       "else a local instance started and stopped here)")
    g.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="--engine ray: actors per stage (default: the cluster's GPUs, else 1)")
    g.add_argument("--max-retries", type=int, default=2, metavar="N",
                   help="--engine ray: retries of an identity whose actor failed or died, then it is reported failed")


def settings_from_args(args: argparse.Namespace):
    from generator.corpus.settings import GenerationSettings, default_motion

    preset = args.preset
    return GenerationSettings(
        preset=preset, seed=args.seed,
        motion=args.motion or default_motion(preset),
        driving_clips=args.driving_clips, expression_library=args.expression_library,
        prompt_template_t5=args.prompt_template_t5, still_noise=args.stills_noise,
        still_size=args.stills_size,
        still_steps=args.stills_steps, still_batch=args.batch_size or 8, dtype=args.dtype,
        chunk_size=args.chunk_size or 16, flux=args.flux, flux_base=args.flux_base, lora=args.lora,
        lora_scale=args.lora_scale, lora_allow_ignored_keys=args.lora_allow_ignored_keys,
        liveportrait_dir=args.liveportrait_dir, prompt_template=args.prompt_template,
        driving_option=args.driving_option, stitching=not args.animate_no_stitching,
        label_detector=args.label_detector, label_landmarker=args.label_landmarker,
        eye_lip_model=args.eye_lip_model, distinct=args.distinct,
        frames=args.frame_files or ("none" if args.no_png else "png"), video_encoder=args.video_encoder,
        video_gop=args.video_gop)


def run(args: argparse.Namespace) -> int:
    from generator.corpus.pipeline import GenerationPipeline
    from thermvision_db.errors import ThermVisionError

    if args.liveportrait_dir:
        from generator.cli.animate import check_weights_folder

        check_weights_folder(args.liveportrait_dir)
    try:
        settings = settings_from_args(args)
        if getattr(args, "engine", "local") == "ray":
            summary = _run_on_ray(settings, args)
        else:
            pipeline = GenerationPipeline(settings, args.out, device=args.device, writers=args.writers,
                                          barrier_timeout=args.barrier_timeout * 60)
            summary = pipeline.run(args.num_identities, shard=args.shard)
    except ThermVisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 1 if summary.failures else 0


def _run_on_ray(settings, args: argparse.Namespace):
    from generator.ray.engine import RayOptions, generate_on_ray
    from thermvision_db.errors import InputError

    if args.shard:
        raise InputError("--shard is for --engine local; with --engine ray the cluster shares the work")
    options = RayOptions(address=args.ray_address, workers=args.ray_workers, max_retries=args.max_retries,
                         writers=1 if args.writers is None else args.writers,
                         stall_timeout=args.barrier_timeout * 60)
    return generate_on_ray(settings, args.out, args.num_identities, options, device=args.device)
