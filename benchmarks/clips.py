"""Random clips: what one costs against decoding its frames, from PNG frames and from MP4s of several GOPs.

A 302-frame 512x512 gray video (a warm face-like blob moving and turning, sensor noise, as the generator's
frames look to an encoder) is written by the project's video writer once per GOP, and its frames as the
generator's PNGs. For each, in one run:

- the baseline: decoding 8 frames (the video's first 8, one sequential pass; for PNGs, PIL opening the 8 files
  of a random clip)
- a random 8-frame clip through `ClipSampler` (`source="mp4"`: keyframe seeks; `"png"`: the frame rows' decoder)
- for the longest GOP also the old way (one pass from the start up to the last picked frame)
- file size and encode CPU-seconds (the writer's cost per video)

Target: a random clip costs at most 2x the decode of its 8 frames, from PNGs and from a generated MP4.

    python benchmarks/clips.py [--frames 302] [--size 512] [--clips 40] [--gops 250,8,4,3,2,1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_frames(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth warm ellipse with features, translated and rotated a little each frame, plus sensor noise."""
    import cv2

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(np.float32) / size
    face = 70 + 110 * np.exp(-(((x - 0.5) / 0.22) ** 2 + ((y - 0.5) / 0.3) ** 2))
    for cx, cy, r, v in ((0.42, 0.42, 0.03, 40), (0.58, 0.42, 0.03, 40), (0.5, 0.62, 0.05, 25)):
        face += v * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / r**2))
    frames = []
    for t in range(count):
        angle = 12 * np.sin(t / 25)
        shift = (size * 0.04 * np.sin(t / 17), size * 0.03 * np.cos(t / 23))
        m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
        m[:, 2] += shift
        moved = cv2.warpAffine(face, m, (size, size), borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(moved + rng.normal(0, 2.0, moved.shape), 0, 255).astype(np.uint8))
    return frames


def _median_ms(fn, repeats: int) -> float:
    times = []
    for k in range(repeats):
        t = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=302)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--gops", default="250,8,4,3,2,1")
    args = parser.parse_args()

    from PIL import Image

    from thermvision_db.io import decode
    from thermvision_db.io.encode import write_png
    from thermvision_db.io.video_writer import VideoFileWriter, VideoSpec
    from thermvision_db.tools.pytorch import ClipSampler

    load = os.getloadavg()
    frames = synthetic_frames(args.frames, args.size)
    work = Path(tempfile.mkdtemp(prefix="clips-bench-"))
    pngs = [str(write_png(work / f"{i:05d}.png", f)) for i, f in enumerate(frames)]
    sampler = ClipSampler(8, mode="random", source="auto")
    rows = [{"video_id": f"v{k}", "num_frames": args.frames, "boxes": [[]] * args.frames} for k in range(args.clips)]

    def png_baseline(k):
        for i in sampler.indices(args.frames, f"v{k}"):
            with Image.open(pngs[i]) as image:
                np.asarray(image.convert("RGB"))

    base_png = _median_ms(png_baseline, args.clips)
    png_clip = _median_ms(lambda k: sampler({**rows[k], "frame_files": pngs, "video": {"path": None}}), args.clips)
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores, load average {load[0]:.2f} at start")
    print(f"{args.frames} frames {args.size}x{args.size}, {args.clips} random 8-frame clips, medians\n")
    print("| source | file MB | encode CPU-s | 8 frames decoded, ms | random clip, ms | clip / decode |")
    print("|---|---|---|---|---|---|")
    png_mb = sum(os.path.getsize(p) for p in pngs) / 1e6
    print(f"| PNG frames | {png_mb:.2f} | - | {base_png:.1f} | {png_clip:.1f} | x{png_clip / base_png:.2f} |")
    for gop in [int(g) for g in args.gops.split(",")]:
        mp4 = work / f"gop{gop}.mp4"
        start = time.process_time()
        writer = VideoFileWriter(VideoSpec(mp4=str(mp4), fps=30.0, gop=None if gop >= 250 else gop))
        for frame in frames:
            writer.write(frame)
        writer.close()
        encode = time.process_time() - start
        decode._INDEX_CACHE.clear()
        decode.read_frames(mp4, [0])  # index the file once, as a training loop does on its first clip

        def first8(k):
            it = decode.iter_frames(mp4)
            for _ in range(8):
                next(it)
            it.close()

        base = _median_ms(first8, args.clips)
        clip = _median_ms(lambda k: sampler({**rows[k], "video": {"path": str(mp4)}}), args.clips)
        label = "x264 default (250)" if gop >= 250 else str(gop)
        print(f"| MP4, GOP {label} | {mp4.stat().st_size / 1e6:.2f} | {encode:.2f} | {base:.1f} | {clip:.1f} "
              f"| x{clip / base:.2f} |")
        if gop >= 250:
            def sequential(k):
                picks = set(sampler.indices(args.frames, f"v{k}").tolist())
                decode._sequential(decode.iter_frames(mp4), picks)

            old = _median_ms(sequential, max(5, args.clips // 4))
            print(f"| MP4, GOP {label}, one pass up to the last pick (before) | - | - | {base:.1f} | {old:.1f} "
                  f"| x{old / base:.2f} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
