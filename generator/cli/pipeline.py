"""`thermvision-db generate -n N`: the whole pipeline (stills -> animation -> labels -> corpus folder).

    thermvision-db generate -n 500 --preset tiny --motion short --out corpus/            # CPU, offline, minutes
    thermvision-db generate -n 1000 --preset thermvision --lora thermal.safetensors \\
        --liveportrait-dir weights/liveportrait --motion paper --out corpus/
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
                   help="motion program: 'paper' (354 head-pose + 250 expression frames), 'short' (12 + 12), or "
                        "'head_pose=N,expression=M' (default: paper for --preset thermvision, short for tiny)")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="do only shard I of N (Slurm arrays); combines with torchrun/accelerate ranks")
    g.add_argument("--distinct", type=float, default=None, metavar="COSINE",
                   help="reject a still whose embedding is closer than this cosine similarity to an accepted one")
    g.add_argument("--label-detector", default=None,
                   help="YOLOv5 / YOLO5Face ONNX face detector: labels the still and checks every frame")
    g.add_argument("--label-landmarker", default=None, help="SF-TL54-style 54-point ONNX model for the still")
    g.add_argument("--eye-lip-model", default=None,
                   help="LivePortrait 203-point ONNX (landmark.onnx): measures the still's eye and lip opening, "
                        "the starting point of the expression retargeting")
    g.add_argument("--no-png", action="store_true", help="write MP4s only (frames are decoded when loading)")


def settings_from_args(args: argparse.Namespace):
    from generator.corpus.settings import GenerationSettings

    preset = args.preset
    return GenerationSettings(
        preset=preset, seed=args.seed, motion=args.motion or ("paper" if preset == "thermvision" else "short"),
        still_size=args.stills_size,
        still_steps=args.stills_steps, still_batch=args.batch_size or 8, dtype=args.dtype,
        chunk_size=args.chunk_size or 16, flux=args.flux, flux_base=args.flux_base, lora=args.lora,
        lora_scale=args.lora_scale, liveportrait_dir=args.liveportrait_dir, prompt_template=args.prompt_template,
        driving_option=args.driving_option, stitching=not args.animate_no_stitching,
        label_detector=args.label_detector, label_landmarker=args.label_landmarker,
        eye_lip_model=args.eye_lip_model, distinct=args.distinct,
        write_png=not args.no_png)


def run(args: argparse.Namespace) -> int:
    from generator.corpus.pipeline import GenerationPipeline
    from generator.weights import UnsafeWeightsError, WeightsNotFoundError
    from thermvision_db.errors import ThermVisionError

    if args.liveportrait_dir:
        from generator.cli.animate import check_weights_folder

        check_weights_folder(args.liveportrait_dir)
    try:
        settings = settings_from_args(args)
        summary = GenerationPipeline(settings, args.out, device=args.device).run(args.num_identities, shard=args.shard)
    except (ThermVisionError, WeightsNotFoundError, UnsafeWeightsError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 1 if summary.failures else 0
