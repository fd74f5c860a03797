"""Whole-pipeline throughput: identities per hour, with each stage's share, against a baseline in the same run.

    python benchmarks/generate.py -n 100                     # tiny preset, CPU, short motion (12 + 12 frames)
    python benchmarks/generate.py -n 500 --via-load-dataset  # the issue's "500 tiny identities in minutes",
                                                             # through load_dataset(..., "synthetic") end to end
    python benchmarks/generate.py --full -n 16 --motion varied:paper --device cuda   # full-size random weights, GPU
    python benchmarks/generate.py --full --layers 1 1 --size 64 --steps 4 -n 2 --motion short --device cpu  # smoke
    python benchmarks/generate.py --paper-scale --json paper_scale.json  # CPU post-processing per identity at the
                                                   # paper's size, new writers vs naive, and the writer pool's overlap

The baseline is the same pipeline run the way the upstream tools run it: one still per FLUX call and one frame per
LivePortrait W+G call (`still_batch=1, chunk_size=1`). The published anchor for the paper's workflow (ComfyUI
stills + upstream LivePortrait) is about 30 s per identity on a high-end GPU, i.e. ~120 identities/hour.

--full builds FLUX.1-dev's transformer and VAE and the published LivePortrait networks with random weights (speed
does not depend on weight values); the text encoders are skipped (random prompt embeddings of the real shapes),
so the stills stage is the transformer + VAE cost. Aim: at least 1,000 identities/hour on one H100 with the
paper's settings (one 512x512 still, 354 + 250 frames).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import postprocess  # noqa: E402  (benchmarks/postprocess.py)

from generator.corpus.pipeline import GenerationPipeline
from generator.corpus.workers import Worker
from generator.corpus.settings import GenerationSettings


class RandomEmbeddingStills:
    """A StillsGenerator whose prompts are random embeddings of the real shapes (no text encoders loaded)."""

    def __init__(self, generator):
        self.inner = generator

    def identities(self, indices, run_seed):
        return self.inner.identities(indices, run_seed)

    def generate_batch(self, identities):
        from generator.stills.prompts import image_seed

        gen = self.inner
        cfg = gen.pipe.transformer.config
        g = torch.Generator("cpu").manual_seed(0)
        n = len(identities)
        embeds = torch.randn(n, gen.sampler.max_sequence_length, cfg.joint_attention_dim, generator=g)
        pooled = torch.randn(n, cfg.pooled_projection_dim, generator=g)
        seeds = [image_seed(i.run_seed, i.index) for i in identities]
        images = gen.sample(embeds.to(gen.device, gen.dtype), pooled.to(gen.device, gen.dtype),
                            [torch.Generator("cpu").manual_seed(s) for s in seeds])
        return [gen._make_still(i, s, im) for i, s, im in zip(identities, seeds, images)]


def _full_components(args, settings: GenerationSettings, device: torch.device):
    """Random full-size FLUX.1-dev (transformer + VAE) and LivePortrait networks on `device`."""
    from generator.animate.liveportrait import LivePortraitConfig, LivePortraitNetworks, LivePortraitPipeline
    from generator.stills.sampler import SamplerSettings
    from generator.stills.flux import SpeedOptions
    from generator.stills.generate import StillsGenerator

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import stills as stills_bench

    speed = SpeedOptions(offload="none", compile=args.compile)
    bench_args = argparse.Namespace(device=str(device), dtype=args.dtype, layers=args.layers)
    pipe, device, dtype = stills_bench.full_size_pipeline(bench_args, speed)
    sampler = SamplerSettings(height=settings.still_size, width=settings.still_size, num_steps=settings.still_steps)
    gen = StillsGenerator(pipe, sampler=sampler, preset="full-size random", device=device, dtype=dtype, speed=speed)
    cfg = pipe.transformer.config
    gen.set_negative_embeddings(torch.zeros(1, sampler.max_sequence_length, cfg.joint_attention_dim, device=device,
                                            dtype=dtype), torch.zeros(1, cfg.pooled_projection_dim, device=device,
                                                                      dtype=dtype))
    nets = LivePortraitNetworks.from_config(LivePortraitConfig(), seed=0)
    animator = LivePortraitPipeline(nets, device=device, dtype=args.dtype, compile=args.compile,
                                    chunk_size=settings.chunk_size, progress=False,
                                    grayscale_output=True)  # white-hot gray frames, as load_animator makes them
    return RandomEmbeddingStills(gen), animator


def run_once(args, settings: GenerationSettings, label: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix="thermvision-bench-"))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        stills = animator = None
        if args.full:
            stills, animator = _full_components(args, settings, device)
        pipeline = GenerationPipeline(settings, out, device=str(device), progress=not args.quiet,
                                      stills_generator=stills, animator=animator)
        if args.warmup:  # model loading, first-call kernel selection and compilation are not throughput
            pipeline.run(1, worker=Worker())
            shutil.rmtree(out / "identities")
            shutil.rmtree(out / "stills")
        summary = pipeline.run(args.num_identities, worker=Worker())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    d = summary.to_dict()
    d["label"] = label
    return d


def via_load_dataset(args) -> int:
    """Time `load_dataset("thermvision_db", "synthetic", num_identities=N)` end to end (generation + Arrow)."""
    from thermvision_db import load_dataset

    out = Path(tempfile.mkdtemp(prefix="thermvision-bench-"))
    try:
        load = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        ds = load_dataset("thermvision_db", "synthetic", num_identities=args.num_identities,
                          motion=args.motion or "short", output_dir=str(out / "corpus"), cache_dir=str(out / "cache"))
        total, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        pipeline = json.loads((out / "corpus" / "summary.json").read_text())["wall_seconds"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rows = sum(split.num_rows for split in ds.values())
    print(f"\nload_dataset('thermvision_db', 'synthetic', num_identities={args.num_identities}), tiny preset, "
          f"motion {args.motion or 'short'}, torch {torch.__version__}, machine: {platform.processor() or platform.machine()} "
          f"CPU, {torch.get_num_threads()} threads")
    print(f"{total:.1f} s end to end for {rows} frame rows; generation {pipeline:.1f} s "
          f"({pipeline / total:.0%}, model loading included), Arrow preparation the rest")
    print(f"{cpu:.0f} CPU-s in all ({cpu / args.num_identities:.2f} per identity; this process and its writer "
          f"processes, user + system): wall time depends on how busy the machine is, CPU-seconds much less; "
          f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    return 0


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the writer processes)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--num-identities", type=int, default=100)
    p.add_argument("--motion", default=None, help="default: short (tiny) / varied:paper (--full)")
    p.add_argument("--full", action="store_true", help="full-size networks with random weights (for a GPU)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--size", type=int, default=None, help="still size (default 64 tiny, 512 full)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--layers", type=int, nargs=2, default=None, help="full: FLUX block counts (smoke tests)")
    p.add_argument("--still-batch", type=int, default=8)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--via-load-dataset", action="store_true", help="time load_dataset(..., 'synthetic') end to end")
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--paper-scale", action="store_true",
                   help="post-processing (PNG + H.264) CPU-seconds per identity at 604 frames of 512 px, on the CPU; "
                        "see benchmarks/postprocess.py")
    postprocess.add_arguments(p)
    args = p.parse_args(argv)
    if args.paper_scale:
        result = postprocess.run(args)
        print(postprocess.report(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    if args.via_load_dataset:
        return via_load_dataset(args)
    motion = args.motion or ("varied:paper" if args.full else "short")
    common = dict(preset="tiny", motion=motion, still_size=args.size or (512 if args.full else None),
                  still_steps=args.steps, dtype=args.dtype)
    rows = [run_once(args, GenerationSettings(**common, still_batch=args.still_batch, chunk_size=args.chunk_size),
                     f"batched (stills x{args.still_batch}, W+G x{args.chunk_size})")]
    if not args.skip_baseline:
        rows.append(run_once(args, GenerationSettings(**common, still_batch=1, chunk_size=1),
                             "baseline (1 still, 1 frame per call)"))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    machine = torch.cuda.get_device_name() if device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"\n{'full-size random weights' if args.full else 'tiny preset'}, motion {motion}, "
          f"{args.num_identities} identities, torch {torch.__version__}, machine: {machine}")
    print("| run | identities/hour | s/identity | stills | animate | encode | labels | vs baseline |")
    print("|---|---|---|---|---|---|---|---|")
    base = rows[-1]["identities_per_hour"] if not args.skip_baseline else None
    for r in rows:
        share = r["stage_share"]
        ratio = f"{r['identities_per_hour'] / base:.2f}x" if base else "-"
        print(f"| {r['label']} | {r['identities_per_hour']:.0f} | {3600 / max(r['identities_per_hour'], 1e-9):.3f} | "
              f"{share['stills']:.0%} | {share['animate']:.0%} | {share['encode']:.0%} | {share['labels']:.0%} | {ratio} |")
    print("anchor: the paper's workflow, about 30 s/identity (~120 identities/hour) on a high-end GPU")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
