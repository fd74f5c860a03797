"""A corpus in memory for evaluation: each video's gray frames, boxes, landmarks and QC from the loader's rows."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from thermvision_db.errors import ThermVisionError
from thermvision_db.tools.label_names import label_names, named_frame_row


class EvaluationError(ThermVisionError, ValueError):
    """Bad evaluation input: missing folder, unreadable model, empty corpus."""


# ---------------------------------------------------------------------------------------------- corpus in memory
@dataclass
class VideoFrames:
    """One video's frames (H, W) gray uint8, per-frame boxes (COCO pixels), landmarks (54, 2) or None, QC flags."""

    video_id: str
    identity: str
    frames: list[np.ndarray] = field(default_factory=list)
    boxes: list[list[list[float]]] = field(default_factory=list)
    landmarks: list[np.ndarray | None] = field(default_factory=list)
    qc: list[str] = field(default_factory=list)


def frame_rows(data_dir: str | os.PathLike, config: str = "frames", cache_dir: str | None = None):
    """Every frame row of a corpus folder as one `Dataset`, in video and frame order (identity split ignored)."""
    if not Path(data_dir).exists():
        raise EvaluationError(f"corpus folder {data_dir} does not exist")
    from thermvision_db.hf.api import load_dataset
    from thermvision_db.hf.builder import SYNTHETIC_CONFIGS
    from thermvision_db.schema.generated_corpus import RUN_FILE

    if config == "frames" and (Path(data_dir) / RUN_FILE).is_file():
        config = "synthetic"  # a folder written by the generator: same frame schema, its own reader
    if config in SYNTHETIC_CONFIGS:  # a generated corpus folder, read as it is
        return load_dataset("thermvision_db", config, output_dir=str(data_dir), cache_dir=cache_dir,
                            split_by="none")["train"]
    return load_dataset("thermvision_db", config, data_dir=data_dir, cache_dir=cache_dir, split_by="none")["train"]


def read_videos(data_dir: str | os.PathLike, config: str = "frames", cache_dir: str | None = None,
                progress: bool = True) -> list[VideoFrames]:
    """All frame rows of a corpus grouped by video, in frame order (identity split ignored)."""
    dataset = frame_rows(data_dir, config, cache_dir)
    names = label_names(dataset.features)
    videos: dict[str, VideoFrames] = {}
    for row in tqdm(dataset, desc="reading frames", total=len(dataset), disable=not progress):
        row = named_frame_row(row, names=names)
        video = videos.setdefault(row["video_id"], VideoFrames(row["video_id"], str(row["identity"])))
        video.frames.append(np.asarray(row["image"].convert("L")))
        video.boxes.append([list(map(float, face["bbox"])) for face in row["faces"]])
        first = row["faces"][0]["landmarks"] if row["faces"] else None
        video.landmarks.append(None if first is None else np.asarray(first, dtype=np.float64))
        video.qc.append(row["qc"])
    if not videos:
        raise EvaluationError(f"no frames found in {data_dir}")
    return list(videos.values())
