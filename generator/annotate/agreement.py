"""Agreement between a corpus's labelled boxes and a face detector run on its frames (the `evaluate` report's
"detector agreement" section): per-frame IoU of the first labelled face against the detector's best face."""

from __future__ import annotations

import numpy as np

from generator.annotate.labels import detect_frames, iou_distribution
from generator.annotate.models import model_record
from thermvision_db.schema.labels import iou


def detector_agreement(videos, detector) -> dict:
    """`videos`: objects with `.video_id`, `.frames` and `.boxes` (per frame, a list of COCO boxes).

    Returns per-video and overall IoU statistics (nan frames: the detector or the labels have no face), the
    IoU distribution (quantiles, histogram) and the detector's record (path, sha256, settings)."""
    per_video, every = [], []
    for video in videos:
        detections = detect_frames(video.frames, detector)
        values = np.array([iou(boxes[0], d.box_xywh.tolist()) if boxes and d is not None else np.nan
                           for boxes, d in zip(video.boxes, detections)], np.float64)
        every.append(values)
        finite = values[np.isfinite(values)]
        per_video.append({"video_id": video.video_id, "frames": len(values), "compared": len(finite),
                          "mean_iou": float(finite.mean()) if len(finite) else None})
    values = np.concatenate(every) if every else np.zeros(0)
    finite = values[np.isfinite(values)]
    return {"detector": model_record(detector), "frames": len(values), "compared": len(finite),
            "mean_iou": float(finite.mean()) if len(finite) else None, **iou_distribution(values),
            "per_video": per_video}


def agreement_markdown(result: dict) -> list[str]:
    q = result["iou_quantiles"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    return ["## Agreement with a face detector", "",
            f"Detector {result['detector']['path']} (sha256 {result['detector']['sha256'][:12]}..., "
            f"{result['detector'].get('kind', '')} {result['detector'].get('settings', '')}): "
            f"{result['compared']} of {result['frames']} frames compared (both the labels and the detector have a face); "
            f"IoU of the labelled box against the detector's: mean {fmt(result['mean_iou'])}, "
            + ", ".join(f"{k} {fmt(v)}" for k, v in q.items()) + ".", "",
            "IoU histogram (bins of 0.1 on [0, 1]): " + " ".join(str(c) for c in result["iou_histogram"]["counts"]), ""]
