"""The one row builder: frame rows and video rows of the released and the generated corpora, in one schema.

Both corpora give the same columns (`features.frame_features` / `video_features`). The released corpus has no
head pose, seed, prompt or motion labels: those columns are null there. The readers (`sources/released.py`,
`schema/generated_corpus.py`) gather the values; only these functions put them into rows, so the two corpora
cannot drift apart column by column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MOTION_LABELS = ("expression", "eye_open", "mouth_open")  # per-frame labels of the motion program
GENERATED_COLUMNS = ("head_pose", "seed", "prompt", *MOTION_LABELS)  # null for the released corpus


def identity_columns(video_id: str, identity: str, gender: str, set_name: str, driving_template: str) -> dict:
    """The columns every row of one video shares."""
    return {"video_id": video_id, "identity": identity, "gender": gender, "set": set_name,
            "driving_template": driving_template}


def _generated(values: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(GENERATED_COLUMNS))
    if unknown:
        raise TypeError(f"not columns of the shared schema: {unknown}")
    return {name: values.get(name) for name in GENERATED_COLUMNS}


def frame_row(image: dict, identity: dict, frame_index: int, faces: list[dict], qc: str, **generated: Any) -> dict:
    """One frame: its image ({path, bytes}), the video's identity columns, faces, QC, and the generated labels."""
    return {"image": image, **identity, "frame_index": frame_index, "faces": faces, "qc": qc, **_generated(generated)}


def video_row(video: dict, identity: dict, *, num_frames: int, fps: float, width: int, height: int,
              boxes: Sequence, landmarks: Sequence, qc: Sequence[str], frame_files: Sequence[str | None] | None = None,
              **generated: Any) -> dict:
    """One video: the MP4 ({path, bytes}), the identity columns, per-frame boxes, landmarks, QC and generated labels.

    `frame_files`: per frame, its lossless PNG as a local file, or None where the frame rows decode the MP4
    instead; None for the whole video when no frame is a local file (frames inside a zip, an MP4-only corpus).
    Clips read the PNGs (random access for free) and seek in the MP4 for the rest."""
    if frame_files is not None and len(frame_files) != num_frames:
        raise ValueError(f"{len(frame_files)} frame files for {num_frames} frames")
    return {"video": video, **identity, "num_frames": num_frames, "fps": fps, "width": width, "height": height,
            "boxes": list(boxes), "landmarks": list(landmarks), "qc": list(qc),
            "frame_files": list(frame_files) if frame_files is not None else None, **_generated(generated)}
