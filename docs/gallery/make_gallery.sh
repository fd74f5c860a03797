#!/usr/bin/env bash
# Rebuild the README gallery from the demo's miniature corpus and tiny generator run (CPU, offline, about a minute).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tv() { PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python -m thermvision_db "$@"; }
tv demo --out "$work/demo"
tv preview "$work/demo/corpus" --out docs/gallery/preview_sheet.png
tv preview "$work/demo/corpus" --video F_01_S1 --out docs/gallery/preview_F_01_S1.gif
cp "$work/demo/demo_generated.png" docs/gallery/generated_sheet.png
cp "$work/demo/demo_generated.gif" docs/gallery/generated_head_pose.gif
tv evaluate "$work/demo/generated" --out "$work/report" --compare "$work/demo/corpus" --fid-features none \
    --cache-dir "$work/hf_cache"
cp "$work/report/comparison.png" docs/gallery/comparison.png
cp "$work/report/temporal.png" docs/gallery/report_temporal.png
# The downstream benchmarks' pictures, with planted tiny ONNX models (tests/support/tiny_onnx.py): a detector with
# one fixed box, a landmarker with one fixed face; gender from random weights on the miniature (chance by design).
PYTHONPATH="$PWD" python - "$work" <<'PY'
import sys
from tests.support.tiny_onnx import write_landmarker54, write_yolo_detector
from thermvision_db.demo.miniature import canonical_landmarks
write_yolo_detector(f"{sys.argv[1]}/det.onnx", [[32, 31, 22, 27, 0.9]])
write_landmarker54(f"{sys.argv[1]}/lm.onnx", canonical_landmarks()[:, ::-1] * 0.9 + 0.05)
PY
tv benchmark detect "$work/demo/corpus" --detector "$work/det.onnx" --out "$work/detect" --max-sheet 12 --no-progress
cp "$work/detect/misses.png" docs/gallery/benchmark_misses.png
tv benchmark landmarks "$work/demo/corpus" --landmarker "$work/lm.onnx" --out "$work/landmarks" --no-progress
cp "$work/landmarks/ced.png" docs/gallery/benchmark_ced.png
tv benchmark gender --synthetic "$work/demo/corpus" --out "$work/gender" --models resnet18 mobilenet_v2 --seeds 0 \
    --epochs 1 --image-size 32 --frames-per-subject 4 --test-subjects-per-class 1 --val-subjects-per-class 0 --no-progress
cp "$work/gender/gender_accuracy.png" docs/gallery/benchmark_gender.png
