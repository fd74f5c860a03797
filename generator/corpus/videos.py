"""One identity's videos: frames from the animator to the writer pool, labels for every frame.

`write_video` hands the frames to `generator.corpus.writers` and returns the video's record at once; the identity
waits in its temporary folder as a `PendingIdentity` until its writers have finished, and only then is its
record written and the folder renamed (corpus/pipeline.py), so a killed run still leaves no half identity.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from generator.corpus.summary import RunSummary
from generator.corpus.writers import VideoSpec
from thermvision_db.io.atomic import atomic_write_json


class PendingIdentity:
    """An animated identity in its temporary folder, waiting for its video jobs before it is renamed."""

    def __init__(self, name: str, partial: Path, final: Path, record: dict, jobs: list):
        self.name, self.partial, self.final, self.record, self.jobs = name, partial, final, record, jobs

    def done(self) -> bool:
        return all(job.done() for job in self.jobs)

    def abort(self) -> None:
        for job in self.jobs:
            job.abort()
        shutil.rmtree(self.partial, ignore_errors=True)


def write_video(pipeline, name: str, set_name: str, num_frames: int, source, still_labels, options,
                folder: Path, summary: RunSummary, jobs: list, index: int = 0) -> dict:
    """Drive the animator through one motion program, hand every frame to the pipeline's writer pool (the job
    is appended to `jobs`), label every frame, and return the video's record. The MP4 and PNG frames are complete
    only once the job's result is in (see `PendingIdentity`)."""
    from generator.animate.liveportrait.output import write_motion
    from generator.animate.liveportrait.pipeline import motion_record
    from generator.annotate.labels import compare_labels, detect_frames, frame_faces, propagate_labels
    from thermvision_db.io.encode import choose_h264_encoder

    animator = pipeline.animator()
    detector, landmarker, _ = pipeline.label_models()
    motion, template, frame_labels, motion_program, options = pipeline.motion_plan().sequence(
        index, set_name, num_frames, source, options)
    t0 = time.perf_counter()
    kp = animator.driving_keypoints(source, motion, options)
    propagated = propagate_labels(animator, source, kp, still_labels)
    summary.stage_seconds["labels"] += time.perf_counter() - t0
    png = pipeline.settings.frames == "png"
    codec = choose_h264_encoder(pipeline.settings.video_encoder)
    t = time.perf_counter()
    gop = pipeline.settings.video_gop
    job = pipeline.writer_pool.open(VideoSpec(mp4=str(folder / f"{set_name}.mp4"), fps=float(motion.fps), codec=codec,
                                    png_dir=str(folder / f"{set_name}_frames") if png else None, gop=gop,
                                    frames_in_place=True))  # `folder` is the identity's, renamed whole when done
    jobs.append(job)
    summary.stage_seconds["encode"] += time.perf_counter() - t
    detections: list = []
    produced = animator.iter_frames(source, motion, options, keypoints=kp)
    for _ in range(len(motion)):
        t = time.perf_counter()
        frame = next(produced)
        summary.stage_seconds["animate"] += time.perf_counter() - t
        t = time.perf_counter()
        job.write(frame)  # waits only when the writer processes are a full queue behind
        summary.stage_seconds["encode"] += time.perf_counter() - t
        if detector is not None:
            t = time.perf_counter()
            detections.extend(detect_frames([np.ascontiguousarray(frame)], detector, landmarker))  # gray: a view
            summary.stage_seconds["labels"] += time.perf_counter() - t
    t = time.perf_counter()
    job.close()
    write_motion(motion_record(kp), folder / f"{set_name}.motion", motion.fps, set_name)
    summary.stage_seconds["encode"] += time.perf_counter() - t
    t0 = time.perf_counter()
    disagreement = compare_labels(propagated, detections) if detector is not None else None
    rows = []
    for t in range(len(motion)):
        detection = detections[t] if detector is not None else None
        qc = "ok" if detector is None or detection is not None else "missing"
        yaw, pitch, roll = (float(v) for v in propagated.head_pose[t])
        extra = {k: frame_labels[t].get(k) for k in ("expression", "eye_open", "mouth_open")} if frame_labels \
            else {"expression": None, "eye_open": None, "mouth_open": None}
        rows.append({"faces": frame_faces(propagated, t, detection), "qc": qc,
                     "head_pose": {"yaw": yaw, "pitch": pitch, "roll": roll}, **extra})
    labels_name = f"{set_name}.labels.json"
    atomic_write_json(folder / labels_name, {"frames": rows,
                                             "disagreement": disagreement.summary if disagreement else None})
    summary.stage_seconds["labels"] += time.perf_counter() - t0
    height, width = animator.cfg.output_size, animator.cfg.output_size
    return {"set": set_name, "video_id": f"{name}_{set_name}", "driving_template": template,
            "num_frames": len(motion), "fps": float(motion.fps), "width": width, "height": height,
            "mp4": f"{set_name}.mp4", "frames": f"{set_name}_frames" if png else None, "encoder": codec,
            "gop": gop, "labels": labels_name,
            "motion": f"{set_name}.motion.npz", "motion_program": motion_program,
            "disagreement": disagreement.summary if disagreement else None}
