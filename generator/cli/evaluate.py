"""`thermvision-db evaluate`: the quality report and the side-by-side comparison from a shell."""

from __future__ import annotations

import sys
from pathlib import Path

FRAME_CONFIGS = ("frames", "synthetic")  # configurations whose rows are frames
# generator.evaluate.realism.INCEPTION_FILE, spelled out so `--help` does not import torch (a test keeps them equal)
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def add_evaluate_parser(sub) -> None:
    """`thermvision-db evaluate`: registered by `thermvision_db.cli.main`."""
    p = sub.add_parser("evaluate", help="quality report: box QC, temporal stability, identity, FID/KID")
    p.add_argument("data_dir", help="the corpus folder")
    p.add_argument("--out", required=True, help="report folder (report.md, PNG plots, box_qc.csv)")
    p.add_argument("--embedding", help="ONNX face-embedding model (image in, vector out)")
    p.add_argument("--label-detector", help="face detector (.onnx, or SF-TL54's dlib .svm): the report states the "
                   "agreement (IoU distribution) of the corpus's boxes with it")
    p.add_argument("--real-dir", help="folder of real thermal face images for FID/KID (needs torchmetrics)")
    p.add_argument("--compare", metavar="REFERENCE_DIR",
                   help="a second corpus (the released one, or the miniature) shown side by side with DATA_DIR")
    p.add_argument("--names", nargs=2, default=("released", "generated"), metavar=("REFERENCE", "CORPUS"),
                   help="names of the --compare corpus and of DATA_DIR in the comparison")
    p.add_argument("--compare-config", default="frames", choices=FRAME_CONFIGS,
                   help="loader configuration of the --compare corpus")
    p.add_argument("--fid-features", default="inception",
                   help="FID/KID feature extractor: 'inception' (torchmetrics + torch-fidelity), 'none', or an .onnx model")
    p.add_argument("--inception-weights", help=f"local {INCEPTION_FILE} (otherwise the torch hub cache or $THERMVISION_INCEPTION_WEIGHTS)")
    p.add_argument("--config", default="frames", choices=FRAME_CONFIGS,
                   help="frames (released layout; a generated corpus folder is recognised by its run.json) or synthetic")
    p.add_argument("--cache-dir", help="datasets cache folder")
    p.set_defaults(func=run_evaluate)


def check_arguments(args) -> None:
    """Every path the report needs, checked before the corpus is read, each error naming its option."""
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"DATA_DIR {args.data_dir} is not a folder; give the corpus folder (the released zips "
                         "or their folders, or a generated corpus)")
    if args.compare is not None and not Path(args.compare).is_dir():
        raise SystemExit(f"--compare {args.compare} is not a folder; give the reference corpus folder "
                         "(the released corpus or the miniature)")
    if args.real_dir is not None and not Path(args.real_dir).is_dir():
        raise SystemExit(f"--real-dir {args.real_dir} is not a folder; give the folder of real thermal face images "
                         "used for FID/KID")
    if args.embedding is not None and not Path(args.embedding).is_file():
        raise SystemExit(f"--embedding {args.embedding} does not exist; give an ONNX face-embedding model file")
    if args.fid_features not in ("inception", "none") and not Path(args.fid_features).is_file():
        raise SystemExit(f"--fid-features {args.fid_features} is neither 'inception', 'none' nor an existing .onnx "
                         "feature model file")
    if args.label_detector is not None and not Path(args.label_detector).is_file():
        raise SystemExit(f"--label-detector {args.label_detector} does not exist; give an .onnx or dlib .svm face detector")
    if args.inception_weights is not None and not Path(args.inception_weights).is_file():
        raise SystemExit(f"--inception-weights {args.inception_weights} does not exist; give the local {INCEPTION_FILE}")


def run_evaluate(args) -> int:
    from generator.vision_check import note_once

    check_arguments(args)
    note = note_once()  # before torchmetrics/transformers: a broken torchvision is marked absent and named
    if note:
        print(f"note: {note}", file=sys.stderr)
    from generator.evaluate.report import evaluate

    features = None if args.fid_features == "none" else args.fid_features
    results = evaluate(args.data_dir, args.out, embedding=args.embedding, real_dir=args.real_dir,
                       config=args.config, cache_dir=args.cache_dir, compare_dir=args.compare,
                       compare_config=args.compare_config, names=tuple(args.names), fid_features=features,
                       inception_weights=args.inception_weights, label_detector=args.label_detector)
    skipped = [results["realism"]] if isinstance(results.get("realism"), str) else []
    skipped += [results["comparison"]["realism"]["skipped"]] if "skipped" in results.get("comparison", {}).get("realism", {}) else []
    for message in skipped if features is not None else []:
        print(f"warning: {message}", file=sys.stderr)
    summary = f"wrote {Path(args.out) / 'report.md'}"
    if "comparison" in results:
        summary += f" and {Path(args.out) / 'comparison.png'}"
    if "identity" in results:
        summary += f" (identities distinct: {'yes' if results['identity']['distinct'] else 'NO'})"
    print(summary)
    return 0
