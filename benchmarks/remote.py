"""Remote reads at link speed: one identity read in place from zips behind a shaped loopback server (a fixed
delay per request and a bandwidth cap shared by all connections, tests/support/shaped_server.py) against
downloading the zips through the same server, same delay and cap, then reading the identity locally.

For each link it prints bytes transferred, requests, time to the first frame, total time, MB/s and MB/s over
the cap (target: in-place reading reaches >= 0.8 of the cap), with the machine and its load average. Reading is
`frame_rows` (the loader's row builder; images as PNG bytes) over every video of the identity; `--decode` also
times `load_dataset(..., streaming=True)` rows with their images decoded.

    python benchmarks/remote.py [--frames 60] [--size 512] [--others 1] [--delay 0.05] [--caps 20e6,5e6]
        [--workers 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout and its tests/support servers

IDENTITY = "F_01"


def machine() -> dict:
    load = os.getloadavg()
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "loadavg_1_5_15": [round(x, 2) for x in load]}


def corpus_at(root: Path, frames: int, size: int, others: int):
    from thermvision_db.demo.miniature import write_miniature

    identities = [IDENTITY] + [f"F_{i:02d}" for i in range(2, 2 + others)]
    return write_miniature(root, identities=identities, frames_per_video=frames, size=size, folders=False)


def _read_identity(open_source, members, started: float) -> tuple[float, int, object]:
    """(seconds from `started` to the first row, rows, the source): every frame row of the identity's videos."""
    from thermvision_db.sources.released import frame_rows

    source = open_source()
    first, count = None, 0
    for member in members:
        for _key, row in frame_rows(source, member):
            count += 1
            if first is None:
                first = time.perf_counter() - started
    return first, count, source


def in_place(url: str, members, cache: Path, keep_cache: bool = False) -> dict:
    from thermvision_db.sources.remote import RemoteReleaseSource

    if not keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    os.environ["THERMVISION_DB_REMOTE_CACHE"] = str(cache)  # a cold central-directory cache: it is fetched too
    started = time.perf_counter()
    first, rows, source = _read_identity(lambda: RemoteReleaseSource(url), members, started)
    total = time.perf_counter() - started
    peak = max([a._ahead.peak for found in source.archives.values() for a in found
                if getattr(a, "_ahead", None) is not None] or [None])  # None: a reader without read-ahead
    return {"rows": rows, "first_frame_s": first, "total_s": total, "peak_buffered": peak}


def download_then_read(url: str, members, out: Path) -> dict:
    from thermvision_db.sources.download import download_release
    from thermvision_db.sources.local import ReleaseSource

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    download_release(url, out, progress=False)
    downloaded = time.perf_counter() - started
    first, rows, _ = _read_identity(lambda: ReleaseSource(out), members, started)
    return {"rows": rows, "download_s": downloaded, "first_frame_s": first, "total_s": time.perf_counter() - started}


def decoded_rows(url: str, cache: Path) -> dict:
    from thermvision_db import load_dataset
    import numpy as np

    shutil.rmtree(cache, ignore_errors=True)
    os.environ["THERMVISION_DB_REMOTE_CACHE"] = str(cache)
    started = time.perf_counter()
    first, rows = None, 0
    for row in load_dataset("thermvision_db", "frames", data_dir=url, split="train", split_by="none",
                            identities=[IDENTITY], streaming=True):
        np.asarray(row["image"])
        rows += 1
        first = time.perf_counter() - started if first is None else first
    return {"rows": rows, "first_frame_s": first, "total_s": time.perf_counter() - started}


class _Server:
    """The shaped server in its own process: the client's threads and the server's do not share one GIL."""

    def __init__(self, root: Path, delay: float, cap: float):
        repo = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.shaped_server", str(root), "--delay",
                                      str(delay), "--rate", str(cap)], cwd=repo, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()

    def counters(self, reset: bool = False) -> dict:
        with urllib.request.urlopen(self.url + ("/_reset" if reset else "/_counters"), timeout=30) as answer:
            return json.loads(answer.read())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _median(runs: list[dict], by: str) -> dict:
    runs = sorted(runs, key=lambda r: r[by])
    return {**runs[len(runs) // 2], "runs_" + by: [round(r[by], 3) for r in runs]}


def run_link(root: Path, members, delay: float, cap: float, work: Path, decode: bool, repeat: int) -> dict:
    """Each way `repeat` times; the run of median total time is reported (all totals listed beside it)."""
    import fsspec

    out = {"delay_s": delay, "cap_MBps": cap / 1e6}
    server = _Server(root, delay, cap)
    try:
        fsspec.filesystem("http").info(server.url + "/MINIATURE.json")  # the HTTP library's one-time start-up
        server.counters(reset=True)
        places = []
        for _ in range(repeat):
            place = in_place(server.url, members, work / "zipdirs")
            c = server.counters(reset=True)
            place.update(bytes=c["bytes_sent"], requests=c["requests"], max_in_flight=c["max_in_flight"],
                         MBps=c["bytes_sent"] / place["total_s"] / 1e6,
                         ratio_to_cap=c["bytes_sent"] / place["total_s"] / cap)
            warm = in_place(server.url, members, work / "zipdirs", keep_cache=True)
            server.counters(reset=True)
            place["first_frame_warm_directory_s"] = warm["first_frame_s"]
            places.append(place)
        out["in_place"] = _median(places, "total_s")
        downs = []
        for _ in range(repeat):
            down = download_then_read(server.url, members, work / "copy")
            c = server.counters(reset=True)
            down.update(bytes=c["bytes_sent"], requests=c["requests"], MBps=c["bytes_sent"] / down["download_s"] / 1e6,
                        ratio_to_cap=c["bytes_sent"] / down["download_s"] / cap)
            downs.append(down)
        out["download"] = _median(downs, "total_s")
        if decode:  # the whole loader, images decoded; its CPU ceiling is the same read from the local copy
            rows = decoded_rows(server.url, work / "zipdirs2")
            c = server.counters(reset=True)
            rows.update(bytes=c["bytes_sent"], MBps=c["bytes_sent"] / rows["total_s"] / 1e6)
            local = decoded_rows(str(work / "copy"), work / "zipdirs3")
            rows.update(local_total_s=local["total_s"], local_first_frame_s=local["first_frame_s"],
                        of_local=local["total_s"] / rows["total_s"])
            out["load_dataset_decoded"] = rows
    finally:
        server.close()
    return out


def table(results: list[dict], info: dict, corpus_bytes: int, identity_bytes: int) -> str:
    lines = [f"Machine: {info['host']}, {info['cores']} cores ({info['cpu']}), Python {info['python']}; load average "
             f"(1/5/15 min) {info['load_before']} before, {info['load_after']} after.",
             f"Corpus: identity {IDENTITY} of {identity_bytes / 1e6:.1f} MB in a zip of {corpus_bytes / 1e6:.1f} MB.", "",
             f"Each row: the median of {len(results[0]['in_place']['runs_total_s'])} runs by total time; first frame "
             f"with a cold central-directory cache (in brackets: cached, as on a second load).", "",
             "| link | how | bytes | requests | first frame | total | MB/s | of cap |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        link = f"{r['delay_s'] * 1000:.0f} ms, {r['cap_MBps']:g} MB/s"
        for how, key, time_key in (("in place", "in_place", "total_s"), ("download zips", "download", "download_s")):
            x = r[key]
            warm = f" ({x['first_frame_warm_directory_s']:.2f} s cached directory)" if key == "in_place" else ""
            lines.append(f"| {link} | {how} | {x['bytes'] / 1e6:.1f} MB | {x['requests']} | {x['first_frame_s']:.2f} s{warm} "
                         f"| {x['total_s']:.2f} s | {x['MBps']:.1f} | {x['ratio_to_cap']:.2f} |")
        if "load_dataset_decoded" in r:
            x = r["load_dataset_decoded"]
            lines.append(f"| {link} | load_dataset, decoded | {x['bytes'] / 1e6:.1f} MB | | {x['first_frame_s']:.2f} s "
                         f"| {x['total_s']:.2f} s | {x['MBps']:.1f} | {x['MBps'] / r['cap_MBps']:.2f} |")
            lines.append(f"| (no link) | load_dataset, decoded, local zip | | | {x['local_first_frame_s']:.2f} s "
                         f"| {x['local_total_s']:.2f} s | {x['bytes'] / 1e6 / x['local_total_s']:.1f} | "
                         f"in place = {x['of_local']:.2f} of local |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--others", type=int, default=1, help="other identities in the same zip")
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--caps", default="20e6,5e6")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--decode", action="store_true")
    parser.add_argument("--corpus", default=None, help="reuse (or write) the corpus in this folder")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.workers:
        os.environ["THERMVISION_DB_REMOTE_WORKERS"] = str(args.workers)
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="tvdb-remote-bench-"))
    root = Path(args.corpus) if args.corpus else work / "corpus"
    marker = root / f".bench-{args.frames}-{args.size}-{args.others}"
    if not marker.exists():
        corpus_at(root, args.frames, args.size, args.others)
        marker.write_text("")
    from thermvision_db.schema.members import MEMBERS

    members = [m for m in MEMBERS if m.identity == IDENTITY]
    import zipfile

    zip_path = root / "Female Subjects.zip"
    with zipfile.ZipFile(zip_path) as archive:
        identity_bytes = sum(i.compress_size for i in archive.infolist() if "/Subject-1/" in i.filename)
    from thermvision_db.sources.local import ReleaseSource

    _read_identity(lambda: ReleaseSource(root), members[:1], time.perf_counter())  # imports, codecs: not timed
    if args.decode:  # the builder's one-time start-up (module import, config, features): not timed either
        next(iter(__import__("thermvision_db").load_dataset("thermvision_db", "frames", data_dir=str(root),
                                                             split="train", split_by="none", identities=[IDENTITY],
                                                             streaming=True)))
    info["load_before"] = [round(x, 2) for x in os.getloadavg()]
    results = [run_link(root, members, args.delay, float(cap), work, args.decode, args.repeat)
               for cap in args.caps.split(",")]
    info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    text = table(results, info, zip_path.stat().st_size, identity_bytes)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
