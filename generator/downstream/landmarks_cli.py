"""`thermvision-db benchmark landmarks`: score a 54-point SF-TL54 model (.onnx, dlib .dat) on a corpus or a COCO /
YOLO-pose labelled set. Standard library only at the top, so `--help` stays fast."""

from __future__ import annotations

import sys
from pathlib import Path

from generator.downstream.detect_cli import add_data_arguments, check_data_arguments, open_data, recorded_arguments

HELP = ("score a 54-point landmark model (.onnx or dlib .dat) given the true boxes: NME (inter-ocular and "
        "box-diagonal), CED plot, failure rate and AUC at 0.1, per head-pose bin")


def add_arguments(parser) -> None:
    parser.add_argument("--landmarker", required=True, metavar="PATH",
                        help=".onnx (SF-TL54-style, see docs) or .dat (dlib 54-part shape_predictor, SF-TL54's)")
    add_data_arguments(parser)
    parser.add_argument("--max-error", type=float, default=0.1,
                        help="NME threshold of the failure rate and upper limit of the CED / AUC")


def run(args) -> int:
    check_data_arguments(args)
    if not Path(args.landmarker).is_file():
        raise SystemExit(f"--landmarker {args.landmarker} does not exist; give an .onnx or dlib .dat 54-point model")
    if not 0 < args.max_error <= 10:
        raise SystemExit(f"--max-error must be in (0, 10], got {args.max_error}")
    from generator.downstream.landmarks import benchmark_landmarks

    data = open_data(args)
    results = benchmark_landmarks(args.landmarker, data, out_dir=args.out, device=args.device,
                                  progress=not args.no_progress, max_error=args.max_error,
                                  arguments=recorded_arguments(args))

    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    for name, s in results["metrics"].items():
        print(f"NME ({name}) {fmt(s['nme_mean'])}  failure rate {fmt(s['failure_rate'])}  AUC@{args.max_error:g} "
              f"{fmt(s['auc'])}  ({s['faces']} faces)")
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.md'}", file=sys.stderr)
    return 0
