"""Box QC and temporal stability: missing/multiple boxes, box jumps, landmark jitter, frame change."""

from __future__ import annotations

import numpy as np

from generator.evaluate.frames import VideoFrames
from thermvision_db.tools.qc import video_qc

JUMP_THRESHOLD = 0.05  # box-centre move between consecutive frames, as a fraction of the frame side

# ---------------------------------------------------------------------------------------------- box QC
def box_qc(video: VideoFrames) -> dict:
    """Missing / multiple / out-of-bounds counts, and jumps: consecutive box-centre moves over JUMP_THRESHOLD."""
    height, width = video.frames[0].shape
    row = video_qc(video.video_id, video.qc, video.boxes, width, height)
    first = np.array([b[0] for b in video.boxes if b], dtype=np.float64).reshape(-1, 4)
    centres = first[:, :2] + first[:, 2:] / 2
    moves = np.linalg.norm(np.diff(centres, axis=0), axis=1) / max(width, height) if len(centres) > 1 else np.zeros(0)
    row["jumps"] = int((moves > JUMP_THRESHOLD).sum())
    return row


# ---------------------------------------------------------------------------------------------- temporal stability
def landmark_jitter(landmarks: list[np.ndarray | None]) -> float:
    """Mean per-point displacement (pixels) between consecutive frames that both have landmarks; 0 if none."""
    steps = [np.linalg.norm(b - a, axis=1).mean() for a, b in zip(landmarks, landmarks[1:]) if a is not None and b is not None]
    return float(np.mean(steps)) if steps else 0.0


def frame_change(frames: list[np.ndarray]) -> float:
    """Mean absolute pixel change (0-255 gray levels) between consecutive frames."""
    if len(frames) < 2:
        return 0.0
    return float(np.mean([np.abs(b.astype(np.float64) - a.astype(np.float64)).mean() for a, b in zip(frames, frames[1:])]))
