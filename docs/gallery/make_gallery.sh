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
