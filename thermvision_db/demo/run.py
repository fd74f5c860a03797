"""`thermvision-db demo`: the main job end to end on embedded defaults, with no data, download or GPU.

A miniature corpus in the released layout -> `load_dataset` (frames and videos) -> a summary -> a contact
sheet with boxes and QC; then a tiny generator run (random weights) -> its own contact sheet.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path


def _loader_part(out: Path) -> Path:
    from thermvision_db import load_dataset
    from thermvision_db.demo.miniature import write_miniature
    from thermvision_db.tools.label_names import label_names, named_frame_row
    from thermvision_db.tools.pictures import contact_sheet, draw_annotations, with_legend

    corpus = write_miniature(out / "corpus", frames_per_video=12, size=128, landmarks=True)
    print(f"[1/3] miniature corpus: {len(corpus.identities)} identities, {len(corpus.members)} videos in {out / 'corpus'} "
          "(the two zips and their folders, released layout and quirks)")
    frames = load_dataset("thermvision_db", "frames", data_dir=corpus.root, cache_dir=str(out / "hf_cache"), repair_boxes=True)
    videos = load_dataset("thermvision_db", "videos", data_dir=corpus.root, cache_dir=str(out / "hf_cache"))
    names = label_names(frames["train"].features)
    print("[2/3] load_dataset('thermvision_db', 'frames' | 'videos'):")
    for split, ds in frames.items():
        qc = Counter(names["qc"][q] for q in ds["qc"])
        ids = sorted(set(names["identity"][i] for i in ds["identity"]))
        print(f"      {split:<10} {ds.num_rows:4d} frames, {videos[split].num_rows} videos, identities {', '.join(ids)}; qc {dict(qc)}")
    train = frames["train"]
    picks = list(range(0, train.num_rows, max(1, train.num_rows // 16)))[:16]
    flagged = [i for q in ("multiple", "missing") for i, c in enumerate(train["qc"]) if names["qc"][c] == q][:1]
    if flagged and flagged[0] not in picks:  # the sheet shows a frame of every kind the summary counts
        picks[-1] = flagged[0]
        picks.sort()
    pictures, captions = [], []
    for i in picks:
        row = named_frame_row(train[i], names=names)
        pictures.append(draw_annotations(row["image"], row["faces"], row["qc"]))
        captions.append(f"{row['video_id']}/{row['frame_index']}")
    sheet = out / "demo_frames.png"
    with_legend(contact_sheet(pictures, captions, columns=4, tile=192), sources=["detector", "interpolated"]).save(sheet)
    return sheet


def run_demo(out: Path) -> None:
    """Write everything under `out` (created); a file there is refused before anything is written."""
    from thermvision_db.errors import ThermVisionError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ThermVisionError(f"demo --out {out} is a file; give a folder (it is created), e.g. --out thermvision_demo")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise ThermVisionError(f"demo --out {out}: {err.filename} is a file, not a folder; give another path") from None
    start = time.perf_counter()
    sheet = _loader_part(out)
    print(f"      picture: {sheet}")
    import torch

    from thermvision_db.demo import synthetic as demo_generator
    from thermvision_db.hf.door import torchvision_note_once

    note = torchvision_note_once()  # a torchvision that cannot import is marked absent: the generator runs without it
    if note:
        print(f"      note: {note}")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks gain nothing from threads, and on busy shared cores threads spin (2x slower)
    try:
        generated = demo_generator.run(out)
    finally:
        torch.set_num_threads(threads)
    print(f"[3/3] tiny generator run: {generated}")
    print(f"done in {time.perf_counter() - start:.1f} s; open {sheet}, {out / 'demo_generated.png'} and "
          f"{out / 'demo_generated.gif'}")
