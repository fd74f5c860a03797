"""`thermvision-db benchmark detect`: score a face detector (.onnx YOLOv5 / YOLO5Face, dlib .svm) on a corpus or a
COCO / YOLO labelled set. Standard library only at the top, so `--help` stays fast.

The data options (`add_data_arguments`, `open_data`) are shared with `benchmark landmarks`.
"""

from __future__ import annotations

import sys
from pathlib import Path

HELP = ("score a face detector (.onnx YOLOv5/YOLO5Face or dlib .svm) on a corpus or a COCO / YOLO set: AP, AP50, "
        "recall at the best threshold, a contact sheet of missed frames")


def add_data_arguments(parser) -> None:
    """The labelled frames: a corpus folder, or --coco FILE --images DIR, or --yolo DIR; subsampling; output."""
    parser.add_argument("data_dir", nargs="?", help="a corpus folder: the released zips or their folders, the "
                        "miniature, or a generated corpus (recognised by its run.json)")
    parser.add_argument("--coco", metavar="FILE.json", help="a COCO JSON (boxes; SF-TL54 keypoints for landmarks)")
    parser.add_argument("--images", metavar="DIR", help="the folder the COCO file_names are relative to")
    parser.add_argument("--yolo", metavar="DIR", help="an ultralytics folder: images/ and labels/ (YOLO or YOLO-pose)")
    parser.add_argument("--split", help="one split only (corpus: train, validation, test; YOLO: a folder under images/)")
    parser.add_argument("--all-qc", action="store_true", help="corpus: also score frames whose QC verdict is not ok "
                        "(by default they are left out and counted: a `missing` frame still shows a face)")
    parser.add_argument("--max-frames", type=int, help="score at most this many frames, drawn with --seed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-frames draw")
    parser.add_argument("--out", required=True, help="output folder: results.json, report.md, PNG plots")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="ONNX models: onnxruntime's CUDA provider (auto: when present); dlib models run on CPU")
    parser.add_argument("--cache-dir", help="datasets cache folder (corpus input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_data_arguments(args) -> None:
    """Exactly one data source, each path checked before anything is read; the error names the option."""
    given = [name for name, value in (("DATA_DIR", args.data_dir), ("--coco", args.coco), ("--yolo", args.yolo))
             if value is not None]
    if len(given) != 1:
        raise SystemExit(f"give exactly one of DATA_DIR, --coco FILE --images DIR, --yolo DIR (got {given or 'none'})")
    if args.coco is not None and (args.images is None or not Path(args.images).is_dir()):
        raise SystemExit(f"--coco needs --images DIR, the folder its file_names are under (got {args.images})")
    for name, value in (("DATA_DIR", args.data_dir), ("--yolo", args.yolo)):
        if value is not None and not Path(value).is_dir():
            raise SystemExit(f"{name} {value} is not a folder")
    if args.coco is not None and not Path(args.coco).is_file():
        raise SystemExit(f"--coco {args.coco} does not exist")
    if args.max_frames is not None and args.max_frames < 1:
        raise SystemExit(f"--max-frames must be >= 1, got {args.max_frames}")


def open_data(args):
    """The LabelledSet the options name, subsampled by --max-frames / --seed."""
    from generator.downstream import labelled_sets

    if args.coco is not None:
        data = labelled_sets.from_coco(args.coco, args.images)
    elif args.yolo is not None:
        data = labelled_sets.from_yolo(args.yolo, split=args.split)
    else:
        data = labelled_sets.from_corpus(args.data_dir, split=args.split, cache_dir=args.cache_dir,
                                         qc_ok_only=not args.all_qc)
    return data.subsample(args.max_frames, args.seed)


def recorded_arguments(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func",) and not callable(v)}


def add_arguments(parser) -> None:
    parser.add_argument("--detector", required=True, metavar="PATH",
                        help=".onnx (YOLOv5 / YOLO5Face export) or .svm (dlib simple_object_detector, SF-TL54's)")
    add_data_arguments(parser)
    parser.add_argument("--max-sheet", type=int, default=48, help="missed frames drawn on misses.png")


def run(args) -> int:
    check_data_arguments(args)
    if not Path(args.detector).is_file():
        raise SystemExit(f"--detector {args.detector} does not exist; give an .onnx or dlib .svm face detector")
    from generator.downstream.detect import benchmark_detect

    data = open_data(args)
    results = benchmark_detect(args.detector, data, out_dir=args.out, device=args.device,
                               progress=not args.no_progress, max_sheet=args.max_sheet,
                               arguments=recorded_arguments(args))
    m = results["metrics"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    print(f"AP {fmt(m['AP'])}  AP50 {fmt(m['AP50'])}  recall {fmt(m['recall_at_best_threshold'])} at score >= "
          f"{fmt(m['best_threshold'])}  missed frames {results['counts']['frames_missed']}/{results['counts']['frames']}")
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.md'}", file=sys.stderr)
    return 0
