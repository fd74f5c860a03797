"""`thermvision-db annotate FRAMES_OR_VIDEO --label-detector X.svm [--label-landmarker Y.dat] --out DIR`."""

from __future__ import annotations

import sys


def add_annotate_parser(sub):
    p = sub.add_parser("annotate", help="label your own thermal frames or video as the release was labelled")
    p.add_argument("source", metavar="FRAMES_OR_VIDEO", help="a folder of frames (PNG/JPEG/...) or a video file")
    p.add_argument("--label-detector", required=True,
                   help="face detector: SF-TL54's dlib .svm (width 300, one upsampling) or a YOLOv5 / YOLO5Face .onnx")
    p.add_argument("--label-landmarker", default=None,
                   help="54-point model: SF-TL54's dlib .dat shape predictor or an SF-TL54-style .onnx")
    p.add_argument("--out", required=True, help="output folder: labels/*.txt, annotations.json (and "
                                                "Extracted_frames/ for a video)")
    return p


def run_annotate(args) -> int:
    from generator.annotate.label_folder import label_frames
    from generator.annotate.models import load_detector, load_landmarker
    from thermvision_db.errors import ThermVisionError

    try:
        detector = load_detector(args.label_detector)
        landmarker = load_landmarker(args.label_landmarker) if args.label_landmarker else None
        manifest = label_frames(args.source, args.out, detector, landmarker)
    except ThermVisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"labelled {manifest['labelled']} of {manifest['frames']} frames ({len(manifest['missing'])} without a "
          f"face, {len(manifest['multiple'])} with several) -> {args.out}/labels")
    return 0
