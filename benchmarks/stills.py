"""Stills throughput: tiny preset on CPU (default) or the full-size FLUX.1-dev transformer on a GPU (--full).

Every figure is printed next to a baseline measured in the same run (eager, batch 1), so ratios mean
something across machines. Usage:

    python benchmarks/stills.py                       # tiny preset, CPU, paper sampler at --size
    python benchmarks/stills.py --full                # FLUX.1-dev-sized transformer, random bf16 weights, CUDA
    python benchmarks/stills.py --full --layers 1 1 --device cpu --size 64 --steps 4 --eager-only  # smoke test

--full skips the text encoders (random 256-token T5 / pooled CLIP embeddings, same shapes as the real ones) and
uses a random VAE with FLUX.1's config; it times `StillsGenerator.sample`, the production sampler (steps 0-2
without CFG, true CFG after, cut after 35 of 40 steps: 67 transformer passes) plus the VAE decode. Random
weights make the first-block cache's hit rate unrepresentative: its figures show the mechanism's cost/benefit,
not the quality trade-off on real thermal faces.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.stills.sampler import SamplerSettings
from generator.stills.flux import SpeedOptions, apply_speed_options
from generator.stills.generate import StillsGenerator


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench_tiny(args) -> list[dict]:
    rows = []
    variants = [("eager", SpeedOptions(offload="none")),
                ("first-block cache 0.1", SpeedOptions(offload="none", first_block_cache=0.1))]
    if args.compile:
        variants.append(("compiled (regional)", SpeedOptions(offload="none", compile=True)))
    for name, speed in variants:
        gen = StillsGenerator.from_preset("tiny", device=args.device or "cpu", dtype=args.dtype, speed=speed,
                                          height=args.size, width=args.size, num_steps=args.steps)
        for batch in args.batch_sizes:
            seconds = timed(lambda: gen.generate(range(batch), batch_size=batch, progress=False), args.repeats)
            rows.append({"variant": name, "batch": batch, "s_per_image": seconds / batch})
    return rows


def full_size_pipeline(args, speed: SpeedOptions):
    """FluxPipeline with FLUX.1-dev's transformer and VAE architectures, random weights, no text encoders."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    device, dtype = torch.device(args.device or "cuda"), torch.bfloat16 if args.dtype == "auto" else _dtype(args)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            layers = {} if args.layers is None else {"num_layers": args.layers[0], "num_single_layers": args.layers[1]}
            transformer = FluxTransformer2DModel(guidance_embeds=True, **layers).eval()   # FLUX.1-dev defaults
            vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                                use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159,
                                scaling_factor=0.3611).eval()
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256,
                                                max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
    pipe = FluxPipeline(scheduler, vae, None, None, None, None, transformer)
    pipe.set_progress_bar_config(disable=True)
    apply_speed_options(pipe, speed, device)
    return pipe, device, dtype


def sample_once(gen: StillsGenerator, embeds: torch.Tensor, pooled: torch.Tensor) -> None:
    """The production sampler: no CFG for steps 0-2, CFG after, cut after 35 of 40 steps, VAE decode."""
    gen.sample(embeds, pooled, [torch.Generator("cpu").manual_seed(i) for i in range(embeds.shape[0])])


def bench_full(args) -> list[dict]:
    sampler = SamplerSettings(height=args.size, width=args.size, num_steps=args.steps)
    variants = [("eager", SpeedOptions(offload="none")),
                ("compiled (regional)", SpeedOptions(offload="none", compile=True)),
                ("first-block cache 0.08", SpeedOptions(offload="none", first_block_cache=0.08)),
                ("compiled + first-block cache 0.08", SpeedOptions(offload="none", compile=True,
                                                                    first_block_cache=0.08))]
    if args.fp8:
        variants.append(("compiled + fp8 (torchao)", SpeedOptions(offload="none", compile=True, fp8=True)))
    if args.eager_only:
        variants = variants[:1] + [v for v in variants if v[0].startswith("first")][:1]
    if args.variants:  # e.g. --variants eager compiled first-block (prefixes of the names above)
        variants = [v for v in variants if any(v[0].startswith(prefix) for prefix in args.variants)]
    rows = []
    for name, speed in variants:
        pipe, device, dtype = full_size_pipeline(args, speed)
        gen = StillsGenerator(pipe, sampler=sampler, preset="full-size random", device=device, dtype=dtype,
                              speed=speed)
        config = pipe.transformer.config
        text_dim, pooled_dim = config.joint_attention_dim, config.pooled_projection_dim
        gen.set_negative_embeddings(torch.zeros(1, sampler.max_sequence_length, text_dim, device=device, dtype=dtype),
                                    torch.zeros(1, pooled_dim, device=device, dtype=dtype))
        for batch in args.batch_sizes:
            g = torch.Generator("cpu").manual_seed(0)
            embeds = torch.randn(batch, sampler.max_sequence_length, text_dim, generator=g).to(device, dtype)
            pooled = torch.randn(batch, pooled_dim, generator=g).to(device, dtype)

            seconds = timed(functools.partial(sample_once, gen, embeds, pooled), args.repeats)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
            rows.append({"variant": name, "batch": batch, "s_per_image": seconds / batch, "peak_gib": peak})
        del gen, pipe
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return rows


def _dtype(args):
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]


def report(rows: list[dict], args) -> None:
    base = next((r["s_per_image"] for r in rows if r["variant"] == "eager" and r["batch"] == rows[0]["batch"]),
                rows[0]["s_per_image"])  # one variant alone (benchmarks/gpu.sh): ratios against its first row
    machine = torch.cuda.get_device_name() if (args.full and torch.cuda.is_available()) else platform.processor() \
        or platform.machine()
    kind = "tiny preset"
    if args.full:
        kind = "FLUX.1-dev transformer" + (f" with {args.layers} blocks (smoke test)" if args.layers else ", full size")
    print(f"\n{kind}, {args.dtype} dtype, {args.size}x{args.size}, "
          f"{args.steps}-step schedule run for {SamplerSettings(num_steps=args.steps).steps_run} steps, true CFG, "
          f"{torch.get_num_threads()} CPU thread(s), torch {torch.__version__}, machine: {machine}")
    print("| variant | batch | s/image | images/s | speed-up vs eager batch 1 |" + (" peak GiB |" if args.full else ""))
    print("|---|---|---|---|---|" + ("---|" if args.full else ""))
    for r in rows:
        line = (f"| {r['variant']} | {r['batch']} | {r['s_per_image']:.4f} | {1 / r['s_per_image']:.2f} | "
                f"{base / r['s_per_image']:.2f}x |")
        if args.full:
            line += f" {r['peak_gib']:.1f} |" if r.get("peak_gib") is not None else " - |"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="full-size FLUX.1-dev transformer on a GPU")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--size", type=int, default=None, help="image size (default 512 with --full, 256 tiny)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 3 full, 2 tiny)")
    p.add_argument("--compile", action="store_true", help="tiny: also time torch.compile (slow to compile on CPU)")
    p.add_argument("--fp8", action="store_true", help="full: also time torchao fp8 (needs torchao)")
    p.add_argument("--layers", type=int, nargs=2, default=None, metavar=("DOUBLE", "SINGLE"),
                   help="full: override the 19/38 block counts (smoke tests on small machines)")
    p.add_argument("--eager-only", action="store_true", help="full: skip the compiled variants (CPU smoke tests)")
    p.add_argument("--variants", nargs="+", default=None, metavar="PREFIX",
                   help="full: only the variants whose names start with these (eager, compiled, first-block)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--json", default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.size = args.size or (512 if args.full else 256)
    args.repeats = args.repeats or (3 if args.full else 2)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    rows = bench_full(args) if args.full else bench_tiny(args)
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
