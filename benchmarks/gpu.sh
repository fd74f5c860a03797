#!/usr/bin/env bash
# Every full-size GPU benchmark in one go (under 8 minutes on one H100/H200), written to one JSON file.
#
#   benchmarks/gpu.sh [OUT.json]            # full size, CUDA: stills (eager / compiled / first-block cache,
#                                           # batch 1 and 4), LivePortrait W+G bf16 batched, the whole pipeline
#   benchmarks/gpu.sh --smoke [OUT.json]    # the same steps at tiny sizes on the CPU (1+1 FLUX blocks, tiny
#                                           # LivePortrait, tiny-preset pipeline): checks the script, not speed
#
# Each step runs under its own time limit (the sum stays under 8 minutes); a step that fails or runs out of time
# is recorded in the JSON with its exit code and the tail of its log, and the others still run. Random weights
# throughout (speed does not depend on weight values). Aims (issue 14): LivePortrait <= 3 ms/frame, stills
# >= 2x eager diffusers, >= 1,000 identities per GPU-hour at the paper's settings.
set -u
cd "$(dirname "$0")/.."
MODE=full
if [ "${1:-}" = "--smoke" ]; then MODE=smoke; shift; fi
OUT="${1:-gpu_benchmarks.json}"
WORK="$(mktemp -d -t thermvision-gpu-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python}"

if [ "$MODE" = full ]; then
  STILLS=(--full --device cuda --size 512 --steps 40 --batch-sizes 1 4 --repeats 2)
  ANIMATE=(--full --device cuda --dtype bf16 --batch 16 --frames 64 --repeats 3)
  PIPELINE=(--full --device cuda --motion paper -n 8 --still-batch 8 --chunk-size 16 --skip-baseline --quiet)
  # seconds per step, 450 in all (+ Python start-up inside each): the whole script stays under 8 minutes
  L_EAGER=60 L_FBC=50 L_COMPILED=115 L_ANIMATE=35 L_ANIMATE_COMPILED=60 L_PIPELINE=120 L_TORCHCODEC=20
else
  STILLS=(--full --device cpu --layers 1 1 --size 64 --steps 4 --batch-sizes 1 2 --repeats 1 --threads 1)
  ANIMATE=(--device cpu --frames 8 --batch 4 --repeats 1)
  PIPELINE=(--device cpu --motion short -n 2 --still-batch 2 --steps 4 --skip-baseline --quiet)  # tiny preset
  L_EAGER=300 L_FBC=300 L_COMPILED=0 L_ANIMATE=120 L_ANIMATE_COMPILED=300 L_PIPELINE=300 L_TORCHCODEC=60  # 0: skipped
fi

START=$SECONDS
step() {  # name, limit, command...: one benchmark under its own time limit, its log and status kept
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  if [ "$limit" = 0 ]; then
    echo '{"rc": null, "skipped": true}' >"$WORK/$name.status"
    echo "[$((SECONDS - START)) s] $name: skipped"
    return
  fi
  timeout --signal=INT --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  echo "{\"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"limit_s\": $limit}" >"$WORK/$name.status"
  echo "[$((SECONDS - START)) s] $name: exit $rc after $((SECONDS - t0)) s"
}

# one variant per step, so a slow compile costs only its own row
step stills_eager "$L_EAGER" "$PY" benchmarks/stills.py "${STILLS[@]}" --variants eager \
  --json "$WORK/stills_eager.json"
step stills_first_block_cache "$L_FBC" "$PY" benchmarks/stills.py "${STILLS[@]}" --variants first-block \
  --json "$WORK/stills_first_block_cache.json"
step stills_compiled "$L_COMPILED" "$PY" benchmarks/stills.py "${STILLS[@]}" --variants "compiled (" \
  --json "$WORK/stills_compiled.json"
step animate "$L_ANIMATE" "$PY" benchmarks/animate.py "${ANIMATE[@]}"
step animate_compiled "$L_ANIMATE_COMPILED" "$PY" benchmarks/animate.py "${ANIMATE[@]}" --compile
step pipeline "$L_PIPELINE" "$PY" benchmarks/generate.py "${PIPELINE[@]}" --json "$WORK/pipeline.json"
# not a speed figure: torchcodec (where its CUDA libraries load) against the project's decoder, frame for frame
step torchcodec_parity "$L_TORCHCODEC" "$PY" ci_checks/torchcodec_parity.py

"$PY" - "$WORK" "$OUT" "$MODE" "$((SECONDS - START))" <<'EOF'
import json, platform, sys
from pathlib import Path

work, out, mode, elapsed = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
STEPS = ("stills_eager", "stills_first_block_cache", "stills_compiled", "animate", "animate_compiled", "pipeline",
         "torchcodec_parity")

def status(name):
    s = json.loads((work / f"{name}.status").read_text())
    if s["rc"] not in (0, None):
        s["log_tail"] = (work / f"{name}.log").read_text(errors="replace")[-2000:]
    return s

def last_json_line(name):
    for line in reversed((work / f"{name}.log").read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None

def load(name):
    path = work / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None

try:
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.machine()} CPU, no GPU"
    versions = {"torch": torch.__version__}
except Exception as err:  # the JSON is still written
    device, versions = f"unknown ({err})", {}
result = {"mode": mode, "device": device, "versions": versions, "elapsed_s": elapsed,
          "steps": {n: status(n) for n in STEPS}}
rows = [row for n in STEPS if n.startswith("stills") and load(n) for row in load(n)["rows"]]
if rows:
    result["stills"] = rows
    eager = next((r["s_per_image"] for r in rows if r["variant"] == "eager" and r["batch"] == 1), None)
    if eager:
        best = min(rows, key=lambda r: r["s_per_image"])
        result["stills_best"] = {**best, "speedup_vs_eager_batch1": round(eager / best["s_per_image"], 2),
                                 "aim_speedup": 2.0}
for name in ("animate", "animate_compiled"):
    row = last_json_line(name)
    if row:
        result[name] = {**row, "aim_ms_per_frame": 3.0}
pipeline = load("pipeline")
if pipeline:
    row = pipeline["rows"][0]
    result["pipeline"] = {"identities_per_hour": row["identities_per_hour"], "stage_share": row["stage_share"],
                          "writer_cpu_seconds": row.get("writer_cpu_seconds"), "wall_seconds": row["wall_seconds"],
                          "generated": row["generated"], "args": pipeline["args"], "aim_identities_per_hour": 1000}
parity = (work / "torchcodec_parity.log")
if parity.is_file():
    result["torchcodec_parity"] = (parity.read_text(errors="replace").strip().splitlines() or [""])[-1]
out.write_text(json.dumps(result, indent=2))
print(json.dumps({k: result.get(k) for k in ("device", "elapsed_s", "stills_best", "animate", "pipeline",
                                              "torchcodec_parity")},
                 indent=1, default=str)[:3000])
print(f"wrote {out}")
EOF
