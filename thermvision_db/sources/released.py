"""Rows of the released corpus: one video's labels read once, then frame rows or a video row.

Kept apart from the builder so `verify`, `preview` and the benchmarks read the corpus exactly as the
`datasets` configs do.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from thermvision_db.io import decode as video_io
from thermvision_db.io.png import IEND as PNG_END
from thermvision_db.io.png import SIGNATURE as PNG_SIGNATURE
from thermvision_db.io.png import stored_png
from thermvision_db.schema import rows
from thermvision_db.schema.labels import FrameLabels, parse_landmark_text, parse_yolo_text, repair_track
from thermvision_db.schema.members import Member
from thermvision_db.sources.base import SourceError
from thermvision_db.sources.local import ReleaseSource

logger = logging.getLogger(__name__)


@dataclass
class VideoRecord:
    """What one released video holds: geometry, and labels for every frame."""

    member: Member
    num_frames: int
    fps: float | None  # None when the MP4 was not needed (every PNG present)
    width: int
    height: int
    labels: list[FrameLabels]
    has_video: bool
    video: video_io.VideoInfo | None = None




def png_problem(head: bytes, tail: bytes) -> str | None:
    """Why a frame file is not a complete PNG (from its first 8 and last 12 bytes), else None."""
    if not head:
        return "empty file"
    if head[:8] != PNG_SIGNATURE:
        return "not a PNG (wrong signature)"
    if tail[-12:] != PNG_END:
        return "truncated PNG (no IEND chunk at the end)"
    return None


def _local_png_problem(path: str) -> str | None:
    """`png_problem` of a file on disk: two positioned reads on a raw descriptor (half the cost of a file object,
    paid on every streamed frame)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            return png_problem(os.pread(fd, 8, 0), os.pread(fd, 12, max(0, size - 12)))
        finally:
            os.close(fd)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"


def video_name(source: ReleaseSource, member: Member) -> str:
    """How errors name a video: its file, or `zip:member`."""
    return source.describe(member.gender, member.video_member)


def probe_video(source: ReleaseSource, member: Member) -> video_io.VideoInfo:
    try:
        return video_io.probe(_video_input(source, member), name=video_name(source, member))
    except video_io.VideoError as err:
        raise SourceError(f"{member.video_id}: {err}") from err


def read_video_record(source: ReleaseSource, member: Member, repair_boxes: bool = False,
                      need_video: bool = False) -> VideoRecord:
    """Frame count, size and every frame's labels, opening the MP4 only when PNG frames are not enough.

    Frames whose PNGs exist never need the MP4 (a zero-byte or truncated one is then only warned about). The
    count is the PNG count when every member frame has its PNG, else the video's decodable frames (edit-listed
    frames do not count) and any PNGs beyond them; with `need_video` it is the video's.
    """
    has_video = source.exists(member.gender, member.video_member)
    frames = range(member.num_frames)
    present = [i for i, hit in zip(frames, source.present(member.gender, [member.frame_png(i) for i in frames])) if hit]
    contiguous = bool(present) and present[-1] == len(present) - 1
    video_needed = has_video and (need_video or len(present) < member.num_frames)
    prefetch = getattr(source, "prefetch", None)  # one round trip for the three runs a remote zip serves
    if prefetch is not None:
        prefetch(member.gender, [member.video_member] * video_needed + [member.frame_png(i) for i in present[:1]]
                 + [member.label_txt(0)])
    info = None
    if has_video and (need_video or len(present) < member.num_frames):
        try:
            info = probe_video(source, member)
        except SourceError:
            if need_video or not contiguous:
                raise
            logger.warning("%s: the MP4 is unreadable; its %d PNG frames are used", member.video_id, len(present))
    if info is not None and not need_video:  # a frame with a label counts too: it never disappears silently
        labelled = [i for i, hit in zip(frames, source.present(member.gender, [member.label_txt(i) for i in frames]))
                    if hit]
        last = max(present[-1] + 1 if present else 0, labelled[-1] + 1 if labelled else 0)
        num_frames = max(info.num_frames, last)
    elif info is not None:
        num_frames = info.num_frames
    elif present:
        num_frames = present[-1] + 1
    else:
        raise SourceError(f"{member.video_id}: neither {member.video_member!r} nor its PNG frames are in {source.data_dir}")
    size = _png_size(source, member, present)
    if size is None:
        if info is None and has_video:
            info = probe_video(source, member)
        if info is None:
            raise SourceError(f"{member.video_id}: none of its PNG frames is readable and its MP4 is missing")
        size = (info.width, info.height)
    width, height = size
    if num_frames != member.num_frames:
        logger.info("%s: %d frames (the released video has %d)", member.video_id, num_frames, member.num_frames)
    labels = []
    landmark_folder = _landmark_folder(source, member)
    names = [member.label_txt(i) for i in range(num_frames)]
    for i, (name, has_label) in enumerate(zip(names, source.present(member.gender, names))):
        if has_label:
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
    return VideoRecord(member, num_frames, info.fps if info else None, width, height, labels, has_video, info)


def _png_size(source: ReleaseSource, member: Member, present: list[int]) -> tuple[int, int] | None:
    """The size of the first readable PNG frame (its header only), or None."""
    for i in present[:3]:
        try:
            local = source.local_path(member.gender, member.frame_png(i))
            with Image.open(local or io.BytesIO(source.read(member.gender, member.frame_png(i)))) as first:
                return first.size
        except (OSError, SyntaxError, ValueError):  # PIL raises UnidentifiedImageError (an OSError) on non-images
            continue
    return None


def _landmark_folder(source: ReleaseSource, member: Member) -> str | None:
    """The release does not document landmark storage: probe the likely sibling folders once per video."""
    for candidate in member.landmark_candidates(0):
        if source.exists(member.gender, candidate):
            return candidate.rsplit("/", 1)[0]
    return None


def _video_input(source: ReleaseSource, member: Member):
    return source.local_path(member.gender, member.video_member) or source.read(member.gender, member.video_member)


def frame_rows(source: ReleaseSource, member: Member, repair_boxes: bool = False, backend: str = "pyav") -> Iterator[tuple[str, dict]]:
    """(key, row) for every frame; a frame whose PNG is missing or broken is decoded from the MP4 instead."""
    record = read_video_record(source, member, repair_boxes)
    frames = _MP4Frames(source, member, backend)
    identity = identity_columns(member)
    for i, frame in enumerate(record.labels):
        png = member.frame_png(i)
        image, problem = _png_image(source, member, png)
        if image is None:
            image = {"path": png, "bytes": stored_png(frames.get(i, problem))}  # decoded right after: not compressed
        yield f"{member.video_id}/{i:04d}", rows.frame_row(image, identity, i, [face.as_row() for face in frame.faces],
                                                           frame.qc)


def _png_image(source: ReleaseSource, member: Member, png: str) -> tuple[dict | None, str]:
    """The row's image for a PNG member (a path when extracted, else bytes), or None and why it is unusable.

    The member path (unique per frame) names in-archive images, so exports never see two frames with one name.
    """
    if not source.exists(member.gender, png):
        return None, f"frame {png!r} has no PNG"
    local = source.local_path(member.gender, png)
    if local is not None:
        problem = _local_png_problem(local)
        image = {"path": local, "bytes": None}
    else:
        data = source.read(member.gender, png)
        problem = png_problem(data[:8], data[-12:])
        image = {"path": png, "bytes": data}
    if problem is None:
        return image, ""
    logger.warning("%s: %s; the frame is decoded from the MP4 instead", local or png, problem)
    return None, f"{local or png}: {problem}"


class _MP4Frames:
    """The video's frames, decoded once on the first frame that needs them; errors name the video."""

    def __init__(self, source: ReleaseSource, member: Member, backend: str):
        self.source, self.member, self.backend = source, member, backend
        self.decoded: np.ndarray | None = None

    def get(self, index: int, why: str) -> np.ndarray:
        member = self.member
        if not self.source.exists(member.gender, member.video_member):
            raise SourceError(f"{member.video_id}: {why} and the video {member.video_member!r} is missing")
        name = video_name(self.source, member)
        if self.decoded is None:
            try:
                self.decoded = video_io.read_frames(_video_input(self.source, member), backend=self.backend, name=name)
            except video_io.VideoError as err:
                raise SourceError(f"{member.video_id}: {why}, and the video cannot replace it: {err}") from err
        if index >= len(self.decoded):
            raise SourceError(f"{member.video_id}: {why}, and frame {index} cannot be decoded from {name} "
                              f"(it decodes {len(self.decoded)} frames)")
        return self.decoded[index]


def video_row(source: ReleaseSource, member: Member, repair_boxes: bool = False) -> tuple[str, dict]:
    """(key, row) for one video: the MP4 (a path when extracted, bytes from a zip) and per-frame labels."""
    if not source.exists(member.gender, member.video_member):
        raise SourceError(f"{member.video_id}: the video {member.video_member!r} is not in {source.data_dir}")
    record = read_video_record(source, member, repair_boxes, need_video=True)
    local = source.local_path(member.gender, member.video_member)
    video = {"path": local, "bytes": None} if local else {
        "path": member.video_member, "bytes": source.read(member.gender, member.video_member)}
    return member.video_id, rows.video_row(
        video, identity_columns(member), num_frames=record.num_frames, fps=record.fps, width=record.width,
        height=record.height, boxes=[[face.bbox for face in frame.faces] for frame in record.labels],
        landmarks=[frame.faces[0].landmarks if frame.faces else None for frame in record.labels],
        qc=[frame.qc for frame in record.labels], frame_files=_local_frame_files(source, member, record.num_frames))


def _local_frame_files(source: ReleaseSource, member: Member, count: int) -> list[str | None] | None:
    """Per frame, its PNG as a local file, or None where the frame rows would decode the MP4 instead (no PNG, or
    one that fails their check); None for the whole video when no frame is a local file (frames inside a zip)."""
    files: list[str | None] = []
    for i in range(count):
        local = source.local_path(member.gender, member.frame_png(i))
        files.append(local if local is not None and _local_png_problem(local) is None else None)
    return files if any(files) else None


def identity_columns(member: Member) -> dict:
    return rows.identity_columns(member.video_id, member.identity, member.gender_name, member.set_name,
                                 member.driving_template)
