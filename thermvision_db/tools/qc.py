"""Label QC of a corpus: per video, how many frames have no box, two boxes, a clipped box, and box statistics.

The released corpus has 77 frames without a box and 2 with two boxes; `verify` prints this table so a user
sees whether their copy matches, and `evaluate` reuses it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from thermvision_db.errors import InputError
from thermvision_db.schema.members import Member
from thermvision_db.sources.local import ReleaseSource
from thermvision_db.sources.released import read_video_record

RELEASED_MISSING = 77
RELEASED_MULTIPLE = 2


def video_qc(video_id: str, qc: list[str], boxes: list[list[list[float]]], width: int, height: int) -> dict:
    """One video's QC row from per-frame QC flags and boxes (COCO pixels)."""
    first = np.array([b[0] for b in boxes if b], dtype=np.float64).reshape(-1, 4)
    centres = first[:, :2] + first[:, 2:] / 2
    jumps = np.linalg.norm(np.diff(centres, axis=0), axis=1) / max(width, height) if len(centres) > 1 else np.zeros(0)
    return {
        "video_id": video_id,
        "frames": len(qc),
        "labelled": sum(bool(b) for b in boxes),
        "missing": sum(q == "missing" for q in qc),
        "multiple": sum(q == "multiple" for q in qc),
        "out_of_bounds": sum(q == "out_of_bounds" for q in qc),
        "other_class": sum(q == "other_class" for q in qc),
        "outside_image": sum(q == "outside_image" for q in qc),
        "mean_box_w": float(first[:, 2].mean() / width) if len(first) else float("nan"),
        "mean_box_h": float(first[:, 3].mean() / height) if len(first) else float("nan"),
        "max_centre_jump": float(jumps.max()) if len(jumps) else 0.0,
    }


def release_qc(source: ReleaseSource, members: list[Member], progress: bool = True) -> pd.DataFrame:
    rows = []
    for member in tqdm(members, desc="label QC", disable=not progress):
        record = read_video_record(source, member)
        rows.append(video_qc(member.video_id, [f.qc for f in record.labels],
                             [[face.bbox for face in f.faces] for f in record.labels], record.width, record.height))
    return pd.DataFrame(rows)


def deep_check(source: ReleaseSource, members: list[Member], progress: bool = True) -> list[tuple[str, str]]:
    """Decode every PNG frame and every MP4 in full: (file, problem) for each one that fails.

    The load itself only checks a PNG's signature and end chunk and never decodes an MP4 it does not need;
    this is the slow, complete check behind `thermvision-db verify --deep`.
    """
    import io

    from PIL import Image

    from thermvision_db.io import decode as video_io
    from thermvision_db.sources.released import _video_input, video_name

    problems = []
    for member in tqdm(members, desc="decoding", disable=not progress):
        for i in range(member.num_frames):
            png = member.frame_png(i)
            if not source.exists(member.gender, png):
                continue
            name = source.local_path(member.gender, png) or png
            try:
                with Image.open(io.BytesIO(source.read(member.gender, png))) as image:
                    if image.format != "PNG":
                        raise InputError(f"a {image.format} image, not a PNG")
                    image.load()
            except Exception as err:  # noqa: BLE001 - PIL raises many types on damaged files; each is reported, none stops the run
                problems.append((name, f"{type(err).__name__}: {err}"))
        if source.exists(member.gender, member.video_member):
            name = video_name(source, member)
            try:
                info = video_io.probe(_video_input(source, member), name=name)
                decoded = sum(1 for _ in video_io.iter_frames(_video_input(source, member), name=name))
                if decoded != info.num_frames:
                    problems.append((name, f"decodes {decoded} frames, its packets promise {info.num_frames}"))
            except Exception as err:  # noqa: BLE001 - every failure is reported by name
                problems.append((name, f"{type(err).__name__}: {err}"))
    return problems
