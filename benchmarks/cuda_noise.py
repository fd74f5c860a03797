"""Check the CPU emulation of torch's CUDA randn/rand against the GPU it runs on, and time it.

    python benchmarks/cuda_noise.py                  # on a CUDA machine: exact-match counts per draw + timing
    python benchmarks/cuda_noise.py --cpu-only       # anywhere: emulation timing only

Prints, for each draw (the paper's workflow latent, a draw beyond the GPU's resident-block cap, fp16 uniforms as
ComfyUI's fp8 rounding draws them), how many values the emulation gets bit-exact and the largest difference,
plus the emulation's time per million values against torch's own CPU randn in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch

from generator.stills.cuda_noise import CudaGeneratorEmulation, launch_threads
from generator.stills.sampler import WORKFLOW_SEED


def gpu_properties() -> tuple[int, int]:
    props = torch.cuda.get_device_properties(0)
    return props.multi_processor_count, props.max_threads_per_multi_processor


def compare(name: str, gpu_values: torch.Tensor, emulated: torch.Tensor) -> None:
    a, b = gpu_values.float().flatten(), emulated.float().flatten()
    exact = int((a == b).sum())
    print(f"{name:<44} {exact:>10,}/{a.numel():<10,} exact  max |diff| {float((a - b).abs().max()):.3g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cpu-only", action="store_true")
    args = p.parse_args()
    draws = [("workflow latent 2x16x64x64 bf16", (2, 16, 64, 64), torch.bfloat16, WORKFLOW_SEED),
             ("workflow latent fp32", (2, 16, 64, 64), torch.float32, WORKFLOW_SEED),
             ("9.5 M values (pytorch#143086), seed 1", (1, 49 * 12 * 112 * 144), torch.float32, 1)]
    if not args.cpu_only and torch.cuda.is_available():
        caps = gpu_properties()
        print(f"{torch.cuda.get_device_name(0)}: {caps[0]} SMs x {caps[1]} threads; torch {torch.__version__}")
        for name, shape, dtype, seed in draws:
            real = torch.randn(shape, dtype=dtype, device="cuda",
                               generator=torch.Generator("cuda").manual_seed(seed)).cpu()
            compare(name, real, CudaGeneratorEmulation(seed, caps).randn(shape, dtype=dtype))
        g, emulation = torch.Generator("cuda").manual_seed(123), CudaGeneratorEmulation(123, caps)
        for rows in (5461, 5461):  # two slices in a row, as ComfyUI rounds a 21504x3072 linear1
            real = torch.rand((rows, 3072), dtype=torch.float16, device="cuda", generator=g).cpu()
            compare(f"fp16 rand slice {rows}x3072 (offset carried)", real, emulation.rand(rows, 3072, dtype=torch.float16))
    n = 2 * 16 * 64 * 64
    t0 = time.perf_counter()
    CudaGeneratorEmulation(WORKFLOW_SEED).randn(n)
    emulated = time.perf_counter() - t0
    t0 = time.perf_counter()
    torch.randn(n, generator=torch.Generator().manual_seed(0))
    baseline = time.perf_counter() - t0
    print(f"emulation: {emulated * 1e6 / n:.3f} s per million values, {emulated / baseline:.0f}x torch's CPU randn "
          f"({launch_threads(n)} threads emulated)")


if __name__ == "__main__":
    main()
