"""Rows of the released corpus: one video's labels read once, then frame rows or a video row.

Kept apart from the builder so `verify`, `preview` and the benchmarks read the corpus exactly as the
`datasets` configs do.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from thermvision_db import video as video_io
from thermvision_db.labels import FrameLabels, parse_landmark_text, parse_yolo_text, repair_track
from thermvision_db.release import Member, ReleaseSource, SourceError

logger = logging.getLogger(__name__)


@dataclass
class VideoRecord:
    """What one released video holds: geometry, and labels for every frame."""

    member: Member
    num_frames: int
    fps: float
    width: int
    height: int
    labels: list[FrameLabels]
    has_video: bool


def read_video_record(source: ReleaseSource, member: Member, repair_boxes: bool = False) -> VideoRecord:
    """Probe the MP4 (or the PNGs when the MP4 is absent) and parse every frame's labels."""
    has_video = source.exists(member.gender, member.video_member)
    if has_video:
        info = video_io.probe(_video_input(source, member))
        num_frames, fps, width, height = info.num_frames, info.fps, info.width, info.height
    else:
        present = [i for i in range(member.num_frames) if source.exists(member.gender, member.frame_png(i))]
        if not present:
            raise SourceError(f"{member.video_id}: neither {member.video_member!r} nor its PNG frames are in {source.data_dir}")
        num_frames, fps = present[-1] + 1, 30.0
        with Image.open(io.BytesIO(source.read(member.gender, member.frame_png(present[0])))) as first:
            width, height = first.size
    if num_frames != member.num_frames:
        logger.info("%s: %d frames (the released video has %d)", member.video_id, num_frames, member.num_frames)
    labels = []
    landmark_folder = _landmark_folder(source, member)
    for i in range(num_frames):
        name = member.label_txt(i)
        if source.exists(member.gender, name):
            frame = parse_yolo_text(source.read(member.gender, name).decode("utf-8", "replace"), width, height, name)
        else:
            frame = FrameLabels([], "missing")
        if landmark_folder is not None and len(frame.faces) == 1 and frame.faces[0].landmarks is None:
            path = f"{landmark_folder}/frame_{i:04d}.txt"
            if source.exists(member.gender, path):
                text = source.read(member.gender, path).decode("utf-8", "replace")
                frame.faces[0].landmarks = parse_landmark_text(text, width, height, path)
        labels.append(frame)
    if repair_boxes:
        labels = repair_track(labels)
    return VideoRecord(member, num_frames, fps, width, height, labels, has_video)


def _landmark_folder(source: ReleaseSource, member: Member) -> str | None:
    """The release does not document landmark storage: probe the likely sibling folders once per video."""
    for candidate in member.landmark_candidates(0):
        if source.exists(member.gender, candidate):
            return candidate.rsplit("/", 1)[0]
    return None


def _video_input(source: ReleaseSource, member: Member):
    return source.local_path(member.gender, member.video_member) or source.read(member.gender, member.video_member)


def frame_rows(source: ReleaseSource, member: Member, repair_boxes: bool = False, backend: str = "pyav") -> Iterator[tuple[str, dict]]:
    """(key, row) for every frame; a frame whose PNG is missing is decoded from the MP4 instead."""
    record = read_video_record(source, member, repair_boxes)
    decoded: np.ndarray | None = None
    for i, frame in enumerate(record.labels):
        png = member.frame_png(i)
        local = source.local_path(member.gender, png)  # None when absent or inside a zip
        if local is not None:
            image = {"path": local, "bytes": None}
        elif source.exists(member.gender, png):
            image = {"path": png.rsplit("/", 1)[-1], "bytes": source.read(member.gender, png)}
        else:
            if not record.has_video:
                raise SourceError(f"{member.video_id}: frame {i} has no PNG and the video {member.video_member!r} is missing")
            if decoded is None:
                decoded = video_io.read_frames(_video_input(source, member), backend=backend)
            buffer = io.BytesIO()
            Image.fromarray(decoded[i]).save(buffer, format="PNG", compress_level=1)  # fast: decoded right after
            image = {"path": f"frame_{i:04d}.png", "bytes": buffer.getvalue()}
        yield f"{member.video_id}/{i:04d}", {
            "image": image,
            **identity_columns(member),
            "frame_index": i,
            "faces": [face.as_row() for face in frame.faces],
            "qc": frame.qc,
            "head_pose": None,
            "seed": None,
            "prompt": None,
            "expression": None,
            "eye_open": None,
            "mouth_open": None,
        }


def video_row(source: ReleaseSource, member: Member, repair_boxes: bool = False) -> tuple[str, dict]:
    """(key, row) for one video: the MP4 (a path when extracted, bytes from a zip) and per-frame labels."""
    record = read_video_record(source, member, repair_boxes)
    if not record.has_video:
        raise SourceError(f"{member.video_id}: the video {member.video_member!r} is not in {source.data_dir}")
    local = source.local_path(member.gender, member.video_member)
    video = {"path": local, "bytes": None} if local else {
        "path": member.video_member.rsplit("/", 1)[-1], "bytes": source.read(member.gender, member.video_member)}
    return member.video_id, {
        "video": video,
        **identity_columns(member),
        "num_frames": record.num_frames,
        "fps": record.fps,
        "width": record.width,
        "height": record.height,
        "boxes": [[face.bbox for face in frame.faces] for frame in record.labels],
        "landmarks": [frame.faces[0].landmarks if frame.faces else None for frame in record.labels],
        "qc": [frame.qc for frame in record.labels],
        "head_pose": None,
        "seed": None,
        "prompt": None,
        "expression": None,
        "eye_open": None,
        "mouth_open": None,
    }


def identity_columns(member: Member) -> dict:
    return {
        "video_id": member.video_id,
        "identity": member.identity,
        "gender": member.gender_name,
        "set": member.set_name,
        "driving_template": member.driving_template,
    }
