"""Where torchcodec works (a CUDA machine): `video_decoder="torchcodec"` rows give the project decoder's frames.

    python ci_checks/torchcodec_parity.py        # prints one line per video and exits 1 on any difference

Writes the miniature corpus and a generated-style 512x512 MP4 (the project's writer, GOP 2), then compares every
frame torchcodec's `VideoDecoder` returns through `datasets.Video` with `thermvision_db.video.read_frames`.
The pytest suite cannot run this: the torchcodec wheels reachable from CI need CUDA libraries (libnvrtc).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from thermvision_db import load_dataset
    from thermvision_db.io.decode import read_frames, torchcodec_problem
    from thermvision_db.miniature import write_miniature

    problem = torchcodec_problem()
    if problem:
        print(f"torchcodec does not work here ({problem}): nothing compared")
        return 2
    root = Path(tempfile.mkdtemp(prefix="torchcodec-parity-"))
    corpus = write_miniature(root / "mini")
    rows = load_dataset("thermvision_db", "videos", data_dir=corpus.root, split_by="none", split="train",
                        cache_dir=str(root / "cache"), video_decoder="torchcodec")
    worst = 0
    plain = load_dataset("thermvision_db", "videos", data_dir=corpus.root, split_by="none", split="train",
                         cache_dir=str(root / "cache"))
    for hub, stored in zip(rows, plain):
        ours = read_frames(stored["video"]["bytes"] or stored["video"]["path"])
        theirs = np.stack([hub["video"][i].permute(1, 2, 0).cpu().numpy() for i in range(len(ours))])
        diff = int(np.abs(theirs.astype(int) - ours.astype(int)).max())
        worst = max(worst, diff)
        print(f"{stored['video_id']}: {len(ours)} frames, max difference {diff}")
    print("same frames" if worst == 0 else f"DIFFERENT: max difference {worst}")
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
