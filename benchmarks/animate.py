"""W+G speed: batched (optionally bf16/fp16, compiled) vs frame-by-frame fp32 eager, measured in the same run.

    python benchmarks/animate.py                    # tiny config on CPU (the default)
    python benchmarks/animate.py --full --device cuda --batch 16 --dtype bf16 [--compile]

`--full` builds the published networks with random weights (speed does not depend on the values). Public
anchor: 12.8 ms/frame for W+G on an RTX 4090 (torch.compile + fp16, batch 1). Prints ms/frame, frames/s and
the ratio baseline/batched, plus one JSON line for records.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one
from generator.animate.liveportrait.config import LivePortraitConfig
from generator.animate.liveportrait.model import LivePortraitNetworks
from generator.animate.liveportrait.pipeline import LivePortraitPipeline
from generator.animate.motion import head_pose_sweep


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_render(pipe: LivePortraitPipeline, source, x_d: torch.Tensor, batch: int, repeats: int) -> float:
    """Best-of-`repeats` milliseconds per frame for W+G over all of x_d in chunks of `batch`."""
    def once():
        for start in range(0, len(x_d), batch):
            pipe.render(source.feature, source.info.x_s, x_d[start:start + batch])

    once()  # warm-up: kernel selection, compile, allocator
    best = float("inf")
    for _ in range(repeats):
        _sync(pipe.device)
        t0 = time.perf_counter()
        once()
        _sync(pipe.device)
        best = min(best, time.perf_counter() - t0)
    return best / len(x_d) * 1000


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="published config (for a GPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=None, help="driving frames (default 32 tiny, 64 full)")
    ap.add_argument("--batch", type=int, default=16, help="frames per W+G batch in the batched run")
    ap.add_argument("--dtype", default="auto", help="batched run dtype: auto (fp16 on CUDA, as upstream), fp32, bf16, fp16")
    ap.add_argument("--compile", action="store_true", help="torch.compile W and G in the batched run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    cfg = LivePortraitConfig() if args.full else LivePortraitConfig.tiny()
    frames = args.frames or (64 if args.full else 32)
    nets = LivePortraitNetworks.from_config(cfg, seed=0)
    baseline = LivePortraitPipeline(nets, device=device, dtype="fp32", progress=False)
    fast = LivePortraitPipeline(nets, device=device, dtype=args.dtype, compile=args.compile, progress=False)
    rng = np.random.default_rng(0)
    still = (rng.random((512, 512)) * 255).astype(np.uint8)
    with torch.no_grad():
        source = baseline.prepare_source(still)
        x_d = baseline.driving_keypoints(source, head_pose_sweep(max(frames, 3)))["x_d"][:frames]

    base_ms = time_render(baseline, source, x_d, 1, args.repeats)
    fast_ms = time_render(fast, source, x_d, args.batch, args.repeats)
    result = {
        "config": "full" if args.full else "tiny", "device": device_name(device), "torch": torch.__version__,
        "frames": frames, "baseline": "batch 1, fp32, eager", "baseline_ms_per_frame": round(base_ms, 3),
        "batched": f"batch {args.batch}, {str(fast.dtype).replace('torch.', '')}, {'compiled' if args.compile else 'eager'}",
        "batched_ms_per_frame": round(fast_ms, 3), "speedup": round(base_ms / fast_ms, 2),
        "baseline_fps": round(1000 / base_ms, 1), "batched_fps": round(1000 / fast_ms, 1),
    }
    print(f"W+G on {result['device']} ({result['config']} config, {frames} frames)")
    print(f"  {result['baseline']:<28} {base_ms:9.2f} ms/frame  {1000 / base_ms:8.1f} frames/s")
    print(f"  {result['batched']:<28} {fast_ms:9.2f} ms/frame  {1000 / fast_ms:8.1f} frames/s")
    print(f"  speed-up batched / frame-by-frame: {result['speedup']:.2f}x")
    if args.full:
        print("  public anchor: 12.8 ms/frame W+G, RTX 4090, compile + fp16, batch 1; aim <= 3 ms/frame on one H100")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
