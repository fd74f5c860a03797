"""--engine ray: identities/hour with 1, 2 and 4 local workers, and Ray's overhead against one process.

    python benchmarks/ray_scaling.py -n 8 --gpu-ms 40          # tiny preset, CPU, a sleep per frame for the GPU

The GPU stand-in is the one of benchmarks/postprocess.py: every animated frame also sleeps `--gpu-ms` (the GPU
works, the CPU is free), so workers scale as separate GPUs would until the CPU (tiny networks, PNG/H.264
writing) runs out. The stills are made once beforehand and copied into every run: the runs time the identities
stage (animation, labels, files) on the same work. Baseline: the single-process pipeline (`--engine local`)
on the same stills; ratios are printed against it.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.corpus.models import load_animator  # noqa: E402
from generator.corpus.pipeline import GenerationPipeline  # noqa: E402
from generator.corpus.settings import GenerationSettings  # noqa: E402
from generator.ray.engine import RayOptions, generate_on_ray  # noqa: E402
from generator.ray.workers import IdentityWorker  # noqa: E402

GPU_MS = float(os.environ.get("THERMVISION_BENCH_GPU_MS", "40"))


class PacedAnimator:
    """The tiny animator, plus a fixed sleep per frame standing in for the GPU's time."""

    def __init__(self, animator, gpu_ms: float):
        self._animator, self.gpu_ms = animator, gpu_ms

    def __getattr__(self, name):
        return getattr(self._animator, name)

    def iter_frames(self, *args, **kwargs):
        for frame in self._animator.iter_frames(*args, **kwargs):
            time.sleep(self.gpu_ms / 1000)
            yield frame


class PacedIdentityWorker(IdentityWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pipeline = self.pipeline
        pipeline._animator = PacedAnimator(load_animator(pipeline.settings, pipeline.device), GPU_MS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--gpu-ms", type=float, default=GPU_MS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    os.environ["THERMVISION_BENCH_GPU_MS"] = str(args.gpu_ms)  # Ray workers inherit it (local instance)
    import ray
    import torch

    settings = GenerationSettings(motion="head_pose=12,expression=12", still_batch=2)
    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    try:
        template = work / "stills-only"
        GenerationPipeline(settings, template, device="cpu", progress=False, writers=0).run(1)  # folder + run.json
        shutil.rmtree(template / "identities")
        pipe = GenerationPipeline(settings, template, device="cpu", progress=False, writers=0)
        pipe.device = torch.device("cpu")
        from generator.corpus.summary import RunSummary
        from generator.corpus.workers import Worker

        pipe._make_stills(list(range(args.n)), RunSummary(Worker(), args.n))

        def fresh(name):
            out = work / name
            shutil.copytree(template, out, ignore=shutil.ignore_patterns("summary.json", "manifest.parquet"))
            return out

        rows = {}
        single = GenerationPipeline(settings, fresh("single"), device="cpu", progress=False, writers=1)
        single._animator = PacedAnimator(load_animator(settings, torch.device("cpu")), args.gpu_ms)
        t0 = time.perf_counter()
        single.run(args.n)
        rows["single process"] = time.perf_counter() - t0
        ray.init(num_cpus=max(args.workers) * 2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"THERMVISION_BENCH_GPU_MS": str(args.gpu_ms)}})
        try:
            for count in args.workers:
                t0 = time.perf_counter()
                summary = generate_on_ray(settings, fresh(f"ray{count}"), args.n,
                                          RayOptions(workers=count, cpus_per_worker=1, writers=1), device="cpu",
                                          progress=False, identity_worker=PacedIdentityWorker)
                assert not summary.failures, summary.failures
                rows[f"ray, {count} worker(s)"] = time.perf_counter() - t0
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows["single process"]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{args.n} identities x 24 frames, GPU stand-in {args.gpu_ms:g} ms/frame")
    result = {}
    for label, seconds in rows.items():
        ips = args.n * 3600 / seconds
        result[label] = {"seconds": round(seconds, 2), "identities_per_hour": round(ips, 1),
                         "vs_single_process": round(base / seconds, 3)}
        print(f"  {label:22s} {seconds:7.1f} s  {ips:8.0f} identities/hour  x{base / seconds:.2f} vs single process")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
