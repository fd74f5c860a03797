"""Post-processing at the paper's size: CPU-seconds per identity to store its frames, new writers vs the naive ones.

    python benchmarks/generate.py --paper-scale --json paper_scale.json     # the entry point (this module's main)
    python benchmarks/postprocess.py --frames 60 --overlap-identities 1      # quick look

An identity of the paper has 604 frames of 512x512 (354 head-pose + 250 expression). Frames come from the
project's thermal-face renderer (`thermvision_db.demo.miniature.render_thermal_face`: white-hot face, hot canthi, cold
nose, sensor noise, swaying like the head-pose video), rendered before any timing. Measured, each as the best
of `--repeats` (other processes share this machine):

- naive: the writers before the pool, inline: PIL 3-channel PNG at compress level 6 + x264 crf 18 preset medium;
- pool: what each writer process spends (`VideoFileWriter`: 1-channel PNG from raw chunks + x264 crf 18, fast settings),
  plus what the loop feeding the GPU spends handing frames over (`handoff_main_cpu_s_per_identity`);
- the same without PNG frames (`frames='none'`), and file sizes and PSNR of each MP4 against its frames;
- before/after issue 25: today's writer against the one before it (`writer_stages.LegacyVideoFileWriter`: NumPy gray
  check, OpenCV PNG, libswscale gray conversion), `--pairs` alternated pairs, whether both wrote the same files, and
  CPU-s by stage (benchmarks/writer_stages.py);
- overlap: the corpus pipeline's wall time with the writer pool and inline (`writers=0`), tiny preset with a
  tiny LivePortrait whose output is 512 px; and a GPU-paced loop (a sleep of `--gpu-ms` per frame stands in for
  LivePortrait on a GPU) feeding 604 frames to the writers, inline vs the pool.
NVENC is not measured here (no GPU): with it the H.264 share leaves the CPU.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.corpus.settings import DEFAULT_GOP  # noqa: E402
from generator.corpus.writers import VideoFileWriter, VideoSpec, WriterPool  # noqa: E402
from thermvision_db.demo.miniature import face_box, render_thermal_face  # noqa: E402
from thermvision_db.io.decode import read_frames  # noqa: E402
from thermvision_db.io.encode import write_mp4  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import writer_stages  # noqa: E402  (benchmarks/writer_stages.py)

import cv2  # noqa: E402

# One OpenCV thread, as every writer process runs (generator/corpus/frame_writer.py): with OpenCV's default pool,
# the per-frame look-up table that turns gray frames into yuv420p spends about 0.3 CPU-s per identity in the
# kernel on thread hand-offs, which no writer process pays.
cv2.setNumThreads(1)

PAPER_SETS = {"head_pose": 354, "expression": 250}
SIZE = 512


def paper_frames(total: int | None = None, size: int = SIZE) -> dict[str, list[np.ndarray]]:
    """Gray (H, W) frames per set: the head-pose set sways, the expression set barely moves."""
    sets = dict(PAPER_SETS)
    if total is not None:  # a shorter run keeps the paper's proportions
        sets = {"head_pose": max(3, round(total * 354 / 604)), "expression": max(3, round(total * 250 / 604))}
    out = {}
    for number, (name, count) in enumerate(sets.items(), start=1):
        out[name] = [render_thermal_face(size, face_box(i, count, size, number, 7), 7)[..., 0].copy()
                     for i in range(count)]
    return out


def _rgb(frame: np.ndarray) -> np.ndarray:
    """A 3-channel array of the gray frame, as the writers before the pool took them."""
    return np.repeat(frame[..., None], 3, axis=2)


def _animator_frame(frame: np.ndarray) -> np.ndarray:
    """The gray frame as the animator hands it over (`grayscale_output`): an (H, W, 3) view of one plane."""
    return np.broadcast_to(frame[..., None], frame.shape + (3,))


def _psnr(path: Path, frames: list[np.ndarray]) -> float:
    decoded = read_frames(path)[..., 0].astype(np.float64)
    mse = float(np.mean((decoded - np.stack(frames)) ** 2))
    return round(float(10 * np.log10(255**2 / max(mse, 1e-12))), 2)


def naive_cost(sets: dict, folder: Path) -> dict:
    """CPU-seconds of the old inline writers: PIL RGB PNG level 6, then x264 crf 18 medium fed RGB frames."""
    from PIL import Image

    cpu = png_cpu = 0.0
    size = 0
    psnr = {}
    for name, frames in sets.items():
        png_dir = folder / f"{name}_frames"
        png_dir.mkdir(parents=True)
        rgb = [_rgb(f) for f in frames]  # the frames as the animator hands them over (not timed)
        start = time.process_time()
        for i, frame in enumerate(rgb):
            Image.fromarray(frame).save(png_dir / f"{i:05d}.png", compress_level=6)
        png_cpu += time.process_time() - start
        start = time.process_time()
        write_mp4(folder / f"{name}.mp4", rgb, fps=30.0, crf=18, preset="medium")
        cpu += time.process_time() - start
        psnr[name] = _psnr(folder / f"{name}.mp4", frames)
        size += sum(p.stat().st_size for p in png_dir.iterdir()) + (folder / f"{name}.mp4").stat().st_size
    return {"cpu_s": png_cpu + cpu, "png_cpu_s": png_cpu, "h264_cpu_s": cpu, "bytes": size, "psnr_db": psnr}


def writer_cost(sets: dict, folder: Path, png: bool = True, gop: int | None = DEFAULT_GOP) -> dict:
    """CPU-seconds of the pool's per-video writer, run in this process (what one writer process spends), at the
    corpus pipeline's keyframe interval unless `gop` says otherwise."""
    cpu = 0.0
    psnr = {}
    for name, frames in sets.items():
        spec = VideoSpec(mp4=str(folder / f"{name}.mp4"), fps=30.0,
                         png_dir=str(folder / f"{name}_frames") if png else None, gop=gop,
                         frames_in_place=True)  # the corpus's frames go into an identity folder renamed whole
        writer = VideoFileWriter(spec)
        for frame in (_animator_frame(f) for f in frames):  # gray views, as the animator hands them over
            writer.write(frame)
        cpu += writer.close()["cpu_seconds"]
        psnr[name] = _psnr(folder / f"{name}.mp4", frames)
    return {"cpu_s": cpu, "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()), "psnr_db": psnr}


def handoff_cost(sets: dict, folder: Path, hand=_animator_frame) -> dict:
    """The feeding loop's own CPU time per identity: handing frames to one writer process (and its wall);
    `hand`: how each gray frame is handed over (the animator's one-plane view, or a full 3-channel array)."""
    main_cpu = 0.0
    wall = time.perf_counter()
    with WriterPool(1, queue_frames=32) as pool:
        jobs = []
        for name, frames in sets.items():
            job = pool.open(VideoSpec(mp4=str(folder / f"{name}.mp4"), fps=30.0, png_dir=str(folder / f"{name}_frames"),
                                      gop=DEFAULT_GOP, frames_in_place=True))
            for frame in (hand(f) for f in frames):
                start = time.process_time()
                job.write(frame)
                main_cpu += time.process_time() - start
            job.close()
            jobs.append(job)
        for job in jobs:
            job.result()
        writer_cpu = pool.cpu_seconds
    return {"main_cpu_s": main_cpu, "writer_cpu_s": writer_cpu, "wall_s": time.perf_counter() - wall}


def best_of(repeats: int, fn, *args, **kwargs) -> dict:
    """Run `fn(..., folder)` `repeats` times in fresh folders; keep the run with the least CPU time."""
    runs = []
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="thermvision-post-"))
        try:
            runs.append(fn(*args, folder, **kwargs))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    key = "cpu_s" if "cpu_s" in runs[0] else "main_cpu_s"
    best = min(runs, key=lambda r: r[key])
    best["all_runs_cpu_s"] = [round(r[key], 3) for r in runs]
    return best


def before_after(sets: dict, repeats: int, pairs: int = 5, gop: int | None = DEFAULT_GOP) -> dict:
    """Today's writer against the one before it (`writer_stages.LegacyVideoFileWriter`), alternated, best of
    `repeats` each; the first pair's files compared byte for byte and pixel for pixel; then the stages alone."""
    runs = {"legacy": [], "new": []}
    same = None
    pair = (("legacy", writer_stages.LegacyVideoFileWriter), ("new", VideoFileWriter))
    for k in range(pairs):  # cheap next to the naive writers: pairs, each writer going first in turn
        root = Path(tempfile.mkdtemp(prefix="thermvision-before-after-"))
        try:
            for label, cls in pair if k % 2 == 0 else pair[::-1]:
                (root / label).mkdir()
                runs[label].append(writer_stages.write_sets(cls, sets, root / label, gop=gop))
            if same is None:
                same = writer_stages.same_files(root / "new", root / "legacy")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    stages = None
    for k in range(max(repeats, 3)):
        folder = Path(tempfile.mkdtemp(prefix="thermvision-stages-"))
        try:
            run = writer_stages.stage_costs(sets, folder, new_first=k % 2 == 1, gop=gop)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        stages = run if stages is None else {k: min(v, run[k]) if isinstance(v, float) else v
                                             for k, v in stages.items()}
    ratios = sorted(new / old for new, old in zip(runs["new"], runs["legacy"]))
    return {"legacy_cpu_s": min(runs["legacy"]), "new_cpu_s": min(runs["new"]),
            "pair_ratio_median": ratios[len(ratios) // 2], "pair_ratios": [round(r, 3) for r in ratios],
            "runs_cpu_s": {k: [round(v, 3) for v in r] for k, r in runs.items()}, "same_files": same,
            "stages_cpu_s": stages}


def gpu_paced_overlap(sets: dict, gpu_ms: float, writers: int, repeats: int) -> dict:
    """Wall time of a loop that 'computes' each frame for gpu_ms (a sleep: the GPU works, the CPU is free) and
    hands it to the writers: inline (writers=0) vs a pool; alternated, best of `repeats` each."""
    result = {}
    for _ in range(repeats):
        for label, processes in (("inline", 0), ("pool", writers)):
            folder = Path(tempfile.mkdtemp(prefix="thermvision-paced-"))
            try:
                with WriterPool(processes) as pool:  # started once per run in the pipeline: not timed
                    start = time.perf_counter()
                    jobs = []
                    for name, frames in sets.items():
                        job = pool.open(VideoSpec(mp4=str(folder / f"{name}.mp4"), fps=30.0, gop=DEFAULT_GOP,
                                                  png_dir=str(folder / f"{name}_frames")))
                        for frame in frames:
                            time.sleep(gpu_ms / 1000)
                            job.write(_animator_frame(frame))
                        job.close()
                        jobs.append(job)
                    for job in jobs:
                        job.result()
                    wall = time.perf_counter() - start
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            result[f"{label}_wall_s"] = min(wall, result.get(f"{label}_wall_s", float("inf")))
    gpu_only = gpu_ms / 1000 * sum(len(f) for f in sets.values())
    result.update(gpu_only_wall_s=gpu_only, writers=writers, gpu_ms_per_frame=gpu_ms, repeats=repeats,
                  hidden_share=(result["inline_wall_s"] - result["pool_wall_s"])
                  / max(result["inline_wall_s"] - gpu_only, 1e-9))
    return result


def pipeline_overlap(identities: int, motion: str, writers: int, repeats: int) -> dict:
    """The corpus pipeline, tiny preset, with a tiny LivePortrait whose frames are 512 px: pool vs inline,
    alternated, best of `repeats` each."""
    import dataclasses

    from generator.animate.liveportrait import LivePortraitConfig, LivePortraitNetworks, LivePortraitPipeline
    from generator.corpus.pipeline import GenerationPipeline
    from generator.corpus.settings import GenerationSettings
    from generator.corpus.workers import Worker

    cfg = LivePortraitConfig.tiny(input_size=256)
    cfg.spade = dataclasses.replace(cfg.spade, upscale=2)
    assert cfg.output_size == SIZE
    animator = LivePortraitPipeline(LivePortraitNetworks.from_config(cfg, seed=0), device="cpu", chunk_size=16,
                                    progress=False, grayscale_output=True)  # white-hot gray, as the corpus
    settings = GenerationSettings(preset="tiny", motion=motion, still_batch=identities)
    result = {"identities": identities, "motion": settings.motion, "output_px": SIZE, "writers": writers,
              "repeats": repeats}
    root = Path(tempfile.mkdtemp(prefix="thermvision-overlap-"))
    try:
        pipelines = {label: GenerationPipeline(settings, root / label, device="cpu", progress=False,
                                               animator=animator, writers=processes)
                     for label, processes in (("inline", 0), ("pool", writers))}
        for pipeline in pipelines.values():
            pipeline.run(1, worker=Worker())  # stills of the block, first calls: not part of the comparison
        for _ in range(repeats):
            for label, pipeline in pipelines.items():
                shutil.rmtree(root / label / "identities")
                summary = pipeline.run(identities, worker=Worker()).to_dict()
                if summary["wall_seconds"] < result.get(f"{label}_wall_s", float("inf")):
                    result[f"{label}_wall_s"] = summary["wall_seconds"]
                    result[f"{label}_stage_seconds"] = summary["stage_seconds"]
                    result[f"{label}_writer_cpu_s"] = summary["writer_cpu_seconds"]
        result["wall_ratio_inline_over_pool"] = result["inline_wall_s"] / result["pool_wall_s"]
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args) -> dict:
    import torch

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    sets = paper_frames(args.frames)
    n = sum(len(f) for f in sets.values())
    render_s = time.perf_counter() - t0
    naive = best_of(args.repeats, naive_cost, sets)
    pool = best_of(args.repeats, writer_cost, sets)
    pool_long_gop = best_of(args.repeats, writer_cost, sets, gop=None)
    mp4_only = best_of(args.repeats, writer_cost, sets, png=False)
    handoff = best_of(args.repeats, handoff_cost, sets)
    handoff_full = best_of(args.repeats, handoff_cost, sets, hand=_rgb)
    scale = 604 / n  # per identity of the paper
    compared = before_after(sets, args.repeats, args.pairs)
    result = {
        "machine": f"{platform.machine()} CPU, {len(os.sched_getaffinity(0))} cores (shared), no GPU",
        "frames_per_identity": n, "size": SIZE, "frame_source": "thermvision_db.demo.miniature.render_thermal_face",
        "frames_render_s": round(render_s, 1), "repeats": args.repeats,
        "postprocess_cpu_s_per_identity": round(pool["cpu_s"] * scale, 3),
        "postprocess_cpu_s_per_identity_mp4_only": round(mp4_only["cpu_s"] * scale, 3),
        "gop": DEFAULT_GOP,
        "postprocess_cpu_s_per_identity_x264_default_gop": round(pool_long_gop["cpu_s"] * scale, 3),
        "bytes_per_identity_x264_default_gop": round(pool_long_gop["bytes"] * scale),
        "baseline_naive_cpu_s_per_identity": round(naive["cpu_s"] * scale, 3),
        "baseline_naive_png_cpu_s": round(naive["png_cpu_s"] * scale, 3),
        "baseline_naive_h264_cpu_s": round(naive["h264_cpu_s"] * scale, 3),
        "speedup_vs_naive": round(naive["cpu_s"] / pool["cpu_s"], 2),
        "handoff_main_cpu_s_per_identity": round(handoff["main_cpu_s"] * scale, 3),
        "handoff_main_cpu_s_per_identity_3_channel_arrays": round(handoff_full["main_cpu_s"] * scale, 3),
        "bytes_per_identity": {"pool": round(pool["bytes"] * scale), "naive": round(naive["bytes"] * scale),
                               "mp4_only": round(mp4_only["bytes"] * scale)},
        "psnr_db": {"pool_x264": pool["psnr_db"], "naive_x264_medium": naive["psnr_db"]},
        "runs_cpu_s": {"pool": pool["all_runs_cpu_s"], "naive": naive["all_runs_cpu_s"],
                       "pool_x264_default_gop": pool_long_gop["all_runs_cpu_s"],
                       "mp4_only": mp4_only["all_runs_cpu_s"]},
        "aim_cpu_s_per_identity": 3.0,
        "before_issue_25_cpu_s_per_identity": round(compared["legacy_cpu_s"] * scale, 3),
        "after_issue_25_cpu_s_per_identity": round(compared["new_cpu_s"] * scale, 3),
        "after_over_before": round(compared["new_cpu_s"] / compared["legacy_cpu_s"], 3),
        "after_over_before_pair_median": round(compared["pair_ratio_median"], 3),
        "after_over_before_pairs": compared["pair_ratios"],
        "before_after_runs_cpu_s": compared["runs_cpu_s"],
        "same_files_as_before": compared["same_files"],
        "stages_cpu_s_per_identity": {k: round(v * scale, 3) if isinstance(v, float) else v
                                      for k, v in compared["stages_cpu_s"].items()},
        "settings": {"pool": f"1-channel PNG (raw chunks, {writer_stages.default_backend()}, level 1, Huffman, up "
                             f"filter) + x264 crf 18 {VideoSpec.preset} "
                             f"{VideoSpec.x264_params}, keyframe every {DEFAULT_GOP} frames (the pipeline's), 1 thread",
                     "naive": "PIL 3-channel PNG level 6 + x264 crf 18 medium, 1 thread"},
        "torch_threads": torch.get_num_threads(),
        "load_average_before": [round(v, 2) for v in load_before],
    }
    if args.gpu_ms > 0:
        result["gpu_paced_overlap"] = gpu_paced_overlap(sets, args.gpu_ms, args.writers, args.repeats)
    if args.overlap_identities > 0:
        result["pipeline_overlap_tiny_512px"] = pipeline_overlap(args.overlap_identities, args.overlap_motion,
                                                                 args.writers, args.repeats)
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--paper-scale (post-processing at the paper's size, CPU)")
    g.add_argument("--paper-frames", dest="frames", type=int, default=None,
                   help="frames per identity (default 604, the paper's); fewer for a quick look, scaled to 604")
    g.add_argument("--repeats", type=int, default=2, help="best of N (the machine is shared)")
    g.add_argument("--pairs", type=int, default=5, help="before/after pairs (today's writer vs the one before)")
    g.add_argument("--writers", type=int, default=1, help="writer processes in the overlap runs")
    g.add_argument("--gpu-ms", type=float, default=3.0, help="GPU-paced loop: ms per frame standing in for the GPU "
                                                             "(0: skip); 3 ms/frame is LivePortrait's aim on one GPU")
    g.add_argument("--overlap-identities", type=int, default=2, help="identities per pipeline overlap run (0: skip)")
    g.add_argument("--overlap-motion", default="short", help="motion of the pipeline overlap runs")


def report(result: dict) -> str:
    r = result
    lines = [f"post-processing per identity ({r['frames_per_identity']} frames of {r['size']}x{r['size']}), "
             f"{r['machine']}, best of {r['repeats']}",
             f"  pool writers   {r['postprocess_cpu_s_per_identity']:7.2f} CPU-s at GOP {r['gop']} (MP4 only: "
             f"{r['postprocess_cpu_s_per_identity_mp4_only']:.2f}; x264's default GOP: "
             f"{r['postprocess_cpu_s_per_identity_x264_default_gop']:.2f})  aim <= {r['aim_cpu_s_per_identity']}",
             f"  naive writers  {r['baseline_naive_cpu_s_per_identity']:7.2f} CPU-s  (PNG "
             f"{r['baseline_naive_png_cpu_s']:.2f} + H.264 {r['baseline_naive_h264_cpu_s']:.2f})",
             f"  speed-up {r['speedup_vs_naive']:.1f}x; the feeding loop's own hand-off: "
             f"{r['handoff_main_cpu_s_per_identity']:.2f} CPU-s per identity (one-plane views; "
             f"{r['handoff_main_cpu_s_per_identity_3_channel_arrays']:.2f} for full 3-channel arrays)",
             f"  bytes/identity: {r['bytes_per_identity']}; PSNR dB: {r['psnr_db']}",
             f"  before/after issue 25 (same run, alternated): {r['before_issue_25_cpu_s_per_identity']:.2f} -> "
             f"{r['after_issue_25_cpu_s_per_identity']:.2f} CPU-s per identity, best of "
             f"{len(r['after_over_before_pairs'])} each ({r['after_over_before']:.2f}x; median of the pairs' ratios "
             f"{r['after_over_before_pair_median']:.2f}x); same files: {r['same_files_as_before']}",
             "  CPU-s per identity by stage (each stage alone):",
             *writer_stages.stage_table(r["stages_cpu_s_per_identity"], 1.0),
             f"  load average {r['load_average_before']} before, {r.get('load_average_after')} after"]
    if "gpu_paced_overlap" in r:
        o = r["gpu_paced_overlap"]
        lines.append(f"  GPU-paced loop ({o['gpu_ms_per_frame']} ms/frame): inline {o['inline_wall_s']:.1f} s, pool "
                     f"{o['pool_wall_s']:.1f} s, GPU alone {o['gpu_only_wall_s']:.1f} s "
                     f"({o['hidden_share']:.0%} of the writing hidden)")
    if "pipeline_overlap_tiny_512px" in r:
        o = r["pipeline_overlap_tiny_512px"]
        lines.append(f"  pipeline, tiny preset, 512 px frames, {o['identities']} identities: inline "
                     f"{o['inline_wall_s']:.1f} s, pool {o['pool_wall_s']:.1f} s "
                     f"({o['wall_ratio_inline_over_pool']:.2f}x)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = run(args)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
