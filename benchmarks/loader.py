"""Loader speed and memory, as ratios measured in one run on miniature corpora.

1. Streaming `frames` throughput against the raw decoders reading the same files (PNG via PIL; frames whose
   PNG is missing via PyAV from the MP4). Target: the loader reaches at least 0.95 of raw.
2. Peak memory (RSS) of a full pass over `frames` (prepare the Arrow cache, then read every row with its
   image) for corpora of 4, 8 and 16 identities, each pass in a fresh process. Target: flat.
3. Remote: one identity streamed from zips served on a loopback HTTP server (Range requests) against the
   whole-archive download then a local read: bytes read and time to the first frame, as ratios.
4. Cost of the cache key (size + mtime of every file the rows come from) on a full-size extracted layout:
   the 100 member videos, 30,200 PNG frames and 30,200 label files. Baseline: the label pass every load makes
   on a cold cache (list, read and parse all 30,200 label files). Target: well under that pass.

    python benchmarks/loader.py [--frames 60] [--size 512] [--only local|remote|key|throughput]

`--frames 354` gives every video at least its released length (302 frames on average): per-video costs (opening
the video record, the first row) then weigh as much as in the real corpus; `--frames 40` makes them 8x heavier.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout (and its tests/support servers)


def _rgb(image) -> np.ndarray:
    """Pixels as a hand-written reader takes them: no conversion when the PNG is already RGB (the release's are)."""
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _raw_video(corpus, member) -> int:
    """What a hand-written reader does for one video: open every PNG, decode the MP4 where a PNG is missing, read
    the labels. Returns its count of frames."""
    from thermvision_db.io.decode import read_frames

    count = 0
    decoded = None
    for i in range(min(corpus.frames_per_video, member.num_frames)):  # the frames the loader's rows hold
        path = Path(corpus.root) / member.frame_png(i)
        if path.exists():
            with Image.open(path) as image:
                pixels = _rgb(image)
        else:
            decoded = read_frames(Path(corpus.root) / member.video_member) if decoded is None else decoded
            pixels = decoded[i]
        label = Path(corpus.root) / member.label_txt(i)
        if label.exists():
            label.read_text()
        count += pixels.shape[0] > 0
    return count


def _decodes_mp4(corpus, member) -> bool:
    """Whether some frame of the video has no PNG, so both readers decode its MP4."""
    frames = range(min(corpus.frames_per_video, member.num_frames))
    return not all((Path(corpus.root) / member.frame_png(i)).exists() for i in frames)


def _stream(corpus, **options):
    from thermvision_db import load_dataset

    return load_dataset("thermvision_db", "frames", data_dir=corpus.root, split="train", split_by="none",
                        streaming=True, **options)


def _take(rows, n: int) -> int:
    count = 0
    for _ in range(n):
        count += np.asarray(next(rows)["image"]).shape[0] > 0
    return count


def throughput(corpus, repeats: int = 5) -> dict:
    """The loader's stream and the raw reader interleaved video by video, CPU seconds of this process and wall.

    One stream per pass (its start-up counted in the first video); after each video's rows the raw reader reads
    the same video, the two taking turns going first. On this VM the same work's CPU time drifts by 20-30 %
    within seconds; interleaving at the video (0.1-1 s) rather than the pass makes both see the same drift. The
    ratio is the median over passes of (raw CPU / loader CPU) summed over the pass."""
    order: list[list] = []  # [video_id, rows] in the order the stream yields them (a warm, untimed pass)
    for row in _stream(corpus):
        if not order or order[-1][0] != row["video_id"]:
            order.append([row["video_id"], 0])
        order[-1][1] += 1
    members = {member.video_id: member for member in corpus.members}
    mp4_videos = sorted(v for v, member in members.items() if _decodes_mp4(corpus, member))
    n = sum(count for _, count in order)
    passes, per_video, png_only = [], [], {"raw": 0.0, "loader": 0.0}
    totals = {"raw_cpu": 0.0, "loader_cpu": 0.0, "raw_wall": 0.0, "loader_wall": 0.0}
    for rep in range(repeats):
        times = dict.fromkeys(totals, 0.0)
        wall, cpu = time.perf_counter(), time.process_time()
        rows = iter(_stream(corpus))
        times["loader_cpu"], times["loader_wall"] = time.process_time() - cpu, time.perf_counter() - wall
        for k, (video_id, count) in enumerate(order):
            steps = [("raw", lambda: _raw_video(corpus, members[video_id])), ("loader", lambda: _take(rows, count))]
            spent = {}
            for name, run in steps if (k + rep) % 2 == 0 else steps[::-1]:
                wall, cpu = time.perf_counter(), time.process_time()
                got = run()
                spent[name] = time.process_time() - cpu
                times[f"{name}_cpu"] += spent[name]
                times[f"{name}_wall"] += time.perf_counter() - wall
                assert got == count, (name, video_id, got, count)
            per_video.append(spent["raw"] / max(spent["loader"], 1e-9))
            if video_id not in mp4_videos:
                png_only["raw"] += spent["raw"]
                png_only["loader"] += spent["loader"]
        assert next(rows, None) is None, "the stream holds more rows than the warm pass"
        passes.append(times["raw_cpu"] / times["loader_cpu"])
        totals = {key: value + times[key] for key, value in totals.items()}
    passes.sort()
    per_video.sort()
    quartiles = [per_video[len(per_video) // 4], per_video[(3 * len(per_video)) // 4]]
    return {"frames": n, "videos": len(order), "raw_fps": n * repeats / totals["raw_cpu"],
            "loader_fps": n * repeats / totals["loader_cpu"], "raw_fps_wall": n * repeats / totals["raw_wall"],
            "loader_fps_wall": n * repeats / totals["loader_wall"], "ratio": passes[len(passes) // 2],
            "ratio_total": totals["raw_cpu"] / totals["loader_cpu"], "pairs": passes,
            "ratio_png_only_videos": png_only["raw"] / max(png_only["loader"], 1e-9),
            "videos_decoding_mp4": mp4_videos,
            "per_video_quartiles": quartiles}


def where_time_goes(corpus, repeats: int = 3) -> dict:
    """ms per row of each step of a streamed `frames` row, best of `repeats` (CPU time):

    rows: the project's row building (listing, label parsing, PNG checks); mp4: decoding the videos of frames whose
    PNG is missing; encode/decode: `datasets`' per-example
    `Features.encode_example` and the non-image part of `decode_example`, which every GeneratorBasedBuilder pays;
    png: PIL decoding the image (what the raw pass also does)."""
    from thermvision_db.io import decode as video_io

    stream = _stream(corpus)
    features = stream.features
    generate, kwargs = stream._ex_iterable.generate_examples_fn, stream._ex_iterable.kwargs
    best = {"rows": 1e9, "mp4": 1e9, "encode": 1e9, "decode": 1e9, "png": 1e9}
    read_frames, mp4 = video_io.read_frames, [0.0]

    def timed_read_frames(*args, **kwargs):  # the MP4 decodes for missing PNGs: the raw pass pays them too
        t = time.process_time()
        try:
            return read_frames(*args, **kwargs)
        finally:
            mp4[0] += time.process_time() - t

    for _ in range(repeats):
        mp4[0] = 0.0
        video_io.read_frames = timed_read_frames
        try:
            t = time.process_time()
            rows = [row for _, row in generate(**kwargs)]
            spent = {"rows": time.process_time() - t - mp4[0], "mp4": mp4[0]}
        finally:
            video_io.read_frames = read_frames
        t = time.process_time()
        encoded = [features.encode_example(row) for row in rows]
        spent["encode"] = time.process_time() - t
        images = [row.pop("image") for row in encoded]
        t = time.process_time()
        for row in encoded:
            features.decode_example({**row, "image": None})
        spent["decode"] = time.process_time() - t
        t = time.process_time()
        for image in images:
            np.asarray(features["image"].decode_example(image))
        spent["png"] = time.process_time() - t
        best = {k: min(v, spent[k] / len(rows) * 1e3) for k, v in best.items()}
    return best


def _memory_child(data_dir: str, cache_dir: str) -> None:
    from thermvision_db import load_dataset

    ds = load_dataset("thermvision_db", "frames", data_dir=data_dir, cache_dir=cache_dir, split="train", split_by="none")
    total = 0
    for row in ds:
        total += int(np.asarray(row["image"]).mean() > 0)
    # VmHWM is this process's own high-water mark; ru_maxrss would carry the parent's across fork+exec
    status = Path("/proc/self/status").read_text().splitlines()
    peak_mib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    print(json.dumps({"rows": ds.num_rows, "peak_rss_mib": peak_mib}))


def memory(sizes, frames: int, size: int, tmp: Path) -> list[dict]:
    from thermvision_db.demo.miniature import write_miniature

    results = []
    for identities in sizes:
        corpus = write_miniature(tmp / f"mem{identities}", identities=identities, frames_per_video=frames, size=size, zips=False)
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(corpus.root), str(tmp / f"cache{identities}")],
                             check=True, capture_output=True, text=True)
        results.append({"identities": identities, **json.loads(out.stdout.strip().splitlines()[-1])})
    return results


def full_layout(root: Path) -> int:
    """Every member's folders and files at release count; PNGs are a valid 8x8 image, MP4s a few bytes
    (the key never opens a file, it reads the listings)."""
    import io as _io

    from thermvision_db.schema.labels import coco_to_yolo
    from thermvision_db.demo.miniature import face_box
    from thermvision_db.schema.members import MEMBERS

    buffer = _io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    files = 0
    for member in MEMBERS:
        for folder in (member.frames_dir, member.labels_dir):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / member.video_member).write_bytes(b"\x00" * 64)
        for i in range(member.num_frames):
            (root / member.frame_png(i)).write_bytes(png)
            box = face_box(i, member.num_frames, 512, member.set, member.subject)
            (root / member.label_txt(i)).write_text("0 " + " ".join(f"{v:g}" for v in coco_to_yolo(box, 512, 512)) + "\n")
            files += 2
    return files


def cache_key_cost(tmp: Path, repeats: int = 3) -> dict:
    from thermvision_db.hf.cache_key import released_fingerprint
    from thermvision_db.sources.local import ReleaseSource
    from thermvision_db.sources.released import read_video_record

    root = tmp / "full"
    files = full_layout(root)
    key_times, label_times = [], []
    for _ in range(repeats):  # interleaved; fresh sources, so no listing is reused between the two
        t = time.perf_counter()
        released_fingerprint("frames", root)
        key_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        source = ReleaseSource(root)
        frames = sum(read_video_record(source, m).num_frames for m in source.present_members())
        label_times.append(time.perf_counter() - t)
    return {"files": files, "frames": frames, "key_s": min(key_times), "labels_s": min(label_times),
            "ratio": min(key_times) / min(label_times)}


def remote(identities: int, frames: int, size: int, tmp: Path) -> dict:
    """One identity's frames read in place from a URL vs downloading both zips first (loopback server)."""
    from thermvision_db import load_dataset
    from tests.support.loopback import LoopbackServer
    from thermvision_db.demo.miniature import write_miniature
    from thermvision_db.sources.download import download_release

    corpus = write_miniature(tmp / "remote", identities=identities, frames_per_video=frames, size=size, folders=False)
    identity = corpus.identities[0]
    warm = write_miniature(tmp / "warm", identities=1, frames_per_video=2, size=64, folders=False)
    next(iter(load_dataset("thermvision_db", "frames", data_dir=str(warm.root), split="train", split_by="none",
                           streaming=True)))  # imports and first-use costs paid before either timing
    os.environ["THERMVISION_DB_REMOTE_CACHE"] = str(tmp / "zipdirs")  # cold: the central directory is fetched too
    with LoopbackServer(corpus.root, lifetime=1800) as server:
        start = time.perf_counter()
        stream = load_dataset("thermvision_db", "frames", data_dir=server.url, split="train", split_by="none",
                              identities=[identity], streaming=True)
        rows = iter(stream)
        np.asarray(next(rows)["image"])
        first_streamed = time.perf_counter() - start
        count = 1 + sum(1 for _ in rows)
        streamed_bytes = server.traffic.bytes_sent
        server.traffic.reset()
        start = time.perf_counter()
        folder = download_release(server.url, tmp / "download", progress=False)
        stream = load_dataset("thermvision_db", "frames", data_dir=str(folder), split="train", split_by="none",
                              identities=[identity], streaming=True)
        np.asarray(next(iter(stream))["image"])
        first_downloaded = time.perf_counter() - start
        downloaded_bytes = server.traffic.bytes_sent
    return {"identity": identity, "identities": identities, "rows": count, "streamed_bytes": streamed_bytes,
            "downloaded_bytes": downloaded_bytes, "first_streamed_s": first_streamed,
            "first_downloaded_s": first_downloaded}


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg()) + f" (1/5/15 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames per video")
    parser.add_argument("--size", type=int, default=512, help="frame size (the release is 512)")
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--remote-identities", type=int, default=10, help="identities in the served archives")
    parser.add_argument("--passes", type=int, default=7, help="throughput: interleaved passes (median taken)")
    parser.add_argument("--only", choices=["local", "remote", "key", "throughput"], help="run one part")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child)
        return
    from thermvision_db.demo.miniature import write_miniature

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    print(f"machine: {os.cpu_count()} CPU cores; {sys.version.split()[0]}; datasets {datasets.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "key"):
            key = cache_key_cost(tmp)
            print(f"cache key on the full-size layout ({key['frames']:,} frames, {key['files']:,} PNG + label files): "
                  f"{key['key_s']:.2f} s; the cold-cache label pass {key['labels_s']:.2f} s -> ratio {key['ratio']:.2f}")
            if args.only == "key":
                return
        if args.only not in ("local", "throughput"):
            r = remote(args.remote_identities, args.frames, args.size, tmp)
            print(f"remote, one identity ({r['identity']}, {r['rows']} frames) of {r['identities']} from a loopback HTTP server: "
                  f"read {r['streamed_bytes'] / 2**20:.1f} MiB in place vs {r['downloaded_bytes'] / 2**20:.1f} MiB for the "
                  f"whole-archive download -> bytes ratio {r['streamed_bytes'] / r['downloaded_bytes']:.3f}; time to first frame "
                  f"{r['first_streamed_s']:.2f} s vs {r['first_downloaded_s']:.2f} s -> ratio "
                  f"{r['first_streamed_s'] / r['first_downloaded_s']:.2f} (loopback: no latency, ~GB/s; a real link favours "
                  f"streaming more)")
        if args.only == "remote":
            return
        corpus = write_miniature(tmp / "speed", identities=args.identities, frames_per_video=args.frames, size=args.size,
                                 zips=False, missing_png={f"{m}_S1": (1, 2) for m in ("F_01", "M_01")})
        result = throughput(corpus, args.passes)
        print(f"streaming frames: loader {result['loader_fps']:.0f} frames/s, raw PIL+PyAV {result['raw_fps']:.0f} frames/s "
              f"(CPU time; wall {result['loader_fps_wall']:.0f} vs {result['raw_fps_wall']:.0f}) -> ratio "
              f"{result['ratio']:.3f} (median of {len(result['pairs'])} passes {[round(p, 3) for p in result['pairs']]}, "
              f"interleaved video by video; all passes together {result['ratio_total']:.3f}; per-video quartiles "
              f"{[round(q, 3) for q in result['per_video_quartiles']]}; the videos whose frames are all PNGs "
              f"{result['ratio_png_only_videos']:.3f}, the rest decode their MP4 for missing PNGs in both readers: "
              f"{', '.join(result['videos_decoding_mp4'])}; target >= 0.95) over {result['frames']} frames "
              f"of {args.size}x{args.size} in {result['videos']} videos, {args.frames} frames per video; load {_load()}")
        split = where_time_goes(corpus)
        print("  where a streamed row's time goes (ms/row, CPU): " + ", ".join(f"{k} {v:.3f}" for k, v in split.items())
              + f" -> rows + encode + decode = {sum(split[k] for k in ('rows', 'encode', 'decode')) / (split['png'] + split['mp4']):.1%}"
              " of the decoding (png + mp4)")
        if args.only == "throughput":
            return
        rows = memory([4, 8, 16], args.frames, args.size, tmp)
        base = rows[0]["peak_rss_mib"]
        for row in rows:
            print(f"full pass, {row['identities']:2d} identities ({row['rows']:5d} frames): peak RSS {row['peak_rss_mib']:.0f} MiB "
                  f"-> {row['peak_rss_mib'] / base:.2f}x the 4-identity pass")


if __name__ == "__main__":
    main()
