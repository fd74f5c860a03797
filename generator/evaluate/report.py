"""Quality report for a corpus (released or generated): box QC, temporal stability, identity, realism.

Every figure is computed from the loader's frame rows, so the released corpus and a generated one are measured
the same way. Identity is measured with a pluggable ONNX face-embedding model (image in, vector out), with the
masked-face control of the independent audit: the face box replaced by the frame median shows how much of the
"identity" a model finds is background and hair rather than the face.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from generator.evaluate.frames import EvaluationError, VideoFrames, frame_rows, read_videos
from generator.evaluate.identity import CROP_FACTOR, FRAMES_PER_TEMPLATE, OnnxEmbedder, identity_scores
from generator.evaluate.plots import bar_chart, chart_panels
from generator.evaluate.realism import RealismUnavailable, fid_kid
from generator.evaluate.stability import JUMP_THRESHOLD, box_qc, frame_change, landmark_jitter
from thermvision_db.io.atomic import atomic_write_bytes, atomic_write_text


# ---------------------------------------------------------------------------------------------- realism (extra)
def realism_against(real_dir: str | os.PathLike, videos: list[VideoFrames], max_images: int = 500,
                    feature="inception", inception_weights: str | None = None) -> dict | str:
    """FID/KID of the corpus frames against a folder of real thermal faces; the reason as text when unavailable.

    A long evaluation should not die at its last step because an optional extractor is missing, so the
    report carries the message (which says what to install or where the weights go) instead.
    """
    if feature is None:
        return "FID/KID not computed: no feature extractor requested (--fid-features none)."
    if not Path(real_dir).is_dir():
        raise EvaluationError(f"the real-image folder {real_dir} (real_dir, --real-dir) does not exist")
    real_paths = sorted(p for p in Path(real_dir).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
    if not real_paths:
        raise EvaluationError(f"no images (.png, .jpg, .bmp, .tif) under the real-image folder {real_dir} (--real-dir)")
    fakes = [f for v in videos for f in v.frames][:max_images]
    reals = [np.asarray(Image.open(p).convert("L")) for p in real_paths[:max_images]]
    try:
        result = fid_kid(reals, fakes, feature=feature, inception_weights=inception_weights)
    except RealismUnavailable as err:
        return f"FID/KID not computed: {err}"
    return {**result, "real_images": result["images_a"], "generated_images": result["images_b"]}



# ---------------------------------------------------------------------------------------------- the report
def evaluate(data_dir: str | os.PathLike, out: str | os.PathLike, embedding: str | None = None,
             real_dir: str | None = None, config: str = "frames", cache_dir: str | None = None,
             progress: bool = True, compare_dir: str | os.PathLike | None = None, compare_config: str = "frames",
             names: tuple[str, str] = ("released", "generated"), fid_features="inception",
             inception_weights: str | None = None, label_detector: str | None = None) -> dict:
    """Write `report.md` and its PNG plots under `out`; return the numbers behind them.

    With `compare_dir` (the released corpus or the miniature) the corpus at `data_dir` is also shown side by
    side with it (`generator.compare`): comparison.png/.json/.md, linked from the report. `names` are the
    names of the `compare_dir` corpus and of the `data_dir` corpus, in that order.
    """
    out = Path(out)
    fid_features = None if fid_features == "none" else fid_features  # the CLI's spelling works here too
    _check_inputs(compare_dir, real_dir, fid_features, embedding)
    videos = read_videos(data_dir, config, cache_dir, progress)
    qc = pd.DataFrame([box_qc(v) for v in videos])
    qc["landmark_jitter_px"] = [_jitter_or_nan(v.landmarks) for v in videos]
    qc["frame_change"] = [frame_change(v.frames) for v in videos]
    plots = qc_plots(qc)
    results: dict = {"qc": qc}
    if embedding:
        embed = OnnxEmbedder(embedding)
        results["identity"] = identity_scores(videos, embed)
        results["identity_masked"] = identity_scores(videos, embed, mask_face=True)
        per = results["identity"]["per_identity"]
        plots["identity.png"] = bar_chart(list(per["identity"]), {"within": list(per["within"]), "max between": list(per["max_between"])},
                                          "Identity: within vs highest between-identity cosine")
    if label_detector:  # .onnx or SF-TL54's dlib .svm: agreement of the corpus's boxes with the detector
        from generator.annotate.agreement import detector_agreement
        from generator.annotate.models import load_detector

        results["detector_agreement"] = detector_agreement(videos, load_detector(label_detector))
    if real_dir:
        results["realism"] = realism_against(real_dir, videos, feature=fid_features, inception_weights=inception_weights)
    if compare_dir is not None:
        from generator.evaluate.compare import compare_corpora

        results["comparison"] = compare_corpora(frame_rows(compare_dir, compare_config, cache_dir),
                                                frame_rows(data_dir, config, cache_dir), out, names=names,
                                                feature=fid_features, inception_weights=inception_weights, progress=progress)
    for name, data in plots.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / "report.md", render_report(results, list(plots)))
    qc_path = out / "box_qc.csv"
    atomic_write_text(qc_path, qc.to_csv(index=False))
    return results


PER_VIDEO_LIMIT = 40  # above this many videos, pictures show distributions and report.md the worst videos only
COUNT_BINS = [(0, 0), (1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, None)]


def count_distribution(counts) -> tuple[list[str], list[int]]:
    """How many videos have 0, 1, 2, 3-5, ... flagged frames: (bin labels, number of videos per bin)."""
    values = np.asarray(list(counts), dtype=float)
    labels = [f"{a}" if a == b else (f"{a}-{b}" if b is not None else f">{a - 1}") for a, b in COUNT_BINS]
    return labels, [int(((values >= a) & (values <= (np.inf if b is None else b))).sum()) for a, b in COUNT_BINS]


def value_distribution(values, bins: int = 10) -> tuple[list[str], list[int]]:
    """A histogram of the finite values in `bins` equal-width bins: (bin labels, number of videos per bin)."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if not len(finite):
        return ["n/a"], [0]
    counts, edges = np.histogram(finite, bins=bins)
    return [f"{edges[i]:.3g}" for i in range(bins)], [int(c) for c in counts]


def qc_plots(qc: pd.DataFrame) -> dict[str, bytes]:
    """box_qc.png and temporal.png: one bar per video up to PER_VIDEO_LIMIT videos, distributions beyond."""
    if len(qc) <= PER_VIDEO_LIMIT:
        labels = list(qc["video_id"])
        return {
            "box_qc.png": bar_chart(labels, {"missing": list(qc["missing"]), "multiple": list(qc["multiple"]),
                                             "jumps": list(qc["jumps"])}, "Box QC per video (frames)"),
            "temporal.png": chart_panels([  # two units, two axes
                bar_chart(labels, {"landmark jitter": list(qc["landmark_jitter_px"])},
                          "Landmark jitter per video", unit="px per frame; n/a: no landmarks", height=240),
                bar_chart(labels, {"frame change": list(qc["frame_change"])},
                          "Frame change per video", unit="mean |gray-level change| per frame, 0-255", height=240)]),
        }
    bins = count_distribution(qc["missing"])[0]
    jitter_bins, jitter = value_distribution(qc["landmark_jitter_px"])
    change_bins, change = value_distribution(qc["frame_change"])
    return {
        "box_qc.png": bar_chart(bins, {k: count_distribution(qc[k])[1] for k in ("missing", "multiple", "jumps")},
                                f"Box QC: videos by flagged frames per video ({len(qc)} videos)", unit="videos"),
        "temporal.png": chart_panels([
            bar_chart(jitter_bins, {"landmark jitter": jitter}, f"Landmark jitter, {len(qc)} videos",
                      unit="videos per bin; bins: px per frame from", height=240),
            bar_chart(change_bins, {"frame change": change}, f"Frame change, {len(qc)} videos",
                      unit="videos per bin; bins: mean |gray-level change| from", height=240)]),
    }


def _jitter_or_nan(landmarks: list) -> float:
    """Landmark jitter, or NaN (shown as n/a) where no two consecutive frames have landmarks: nothing was measured."""
    pairs = any(a is not None and b is not None for a, b in zip(landmarks, landmarks[1:]))
    return landmark_jitter(landmarks) if pairs else float("nan")


def _check_inputs(compare_dir, real_dir, fid_features, embedding) -> None:
    """Name the argument a missing path came from before minutes of reading frames."""
    if compare_dir is not None and not Path(compare_dir).is_dir():
        raise EvaluationError(f"the reference corpus folder {compare_dir} (compare_dir, --compare) does not exist")
    if real_dir is not None and not Path(real_dir).is_dir():
        raise EvaluationError(f"the real-image folder {real_dir} (real_dir, --real-dir) does not exist")
    if isinstance(fid_features, (str, os.PathLike)) and fid_features != "inception" and not Path(fid_features).is_file():
        raise EvaluationError(f"the FID/KID feature model {fid_features} (fid_features, --fid-features) does not exist; "
                              "give an .onnx file, 'inception' or 'none'")
    if embedding is not None and not Path(embedding).is_file():
        raise EvaluationError(f"the face-embedding model {embedding} (embedding, --embedding) does not exist")


def render_report(results: dict, plots: list[str]) -> str:
    qc = results["qc"]
    lines = ["# ThermVision corpus quality report", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    shown = qc[["video_id", "frames", "missing", "multiple", "jumps", "max_centre_jump", "landmark_jitter_px", "frame_change"]].copy()
    note = ""
    if len(shown) > PER_VIDEO_LIMIT:  # a summary stays readable at thousands of videos: every video is in the CSV
        flagged = shown["missing"] + shown["multiple"] + shown["jumps"]
        shown = shown.loc[flagged.sort_values(ascending=False, kind="stable").index[:20]]
        note = (f"The 20 videos (of {len(qc)}) with the most flagged frames; every video is in "
                "[box_qc.csv](box_qc.csv).")
    shown["landmark_jitter_px"] = [f"{v:.4g}" if np.isfinite(v) else "n/a" for v in shown["landmark_jitter_px"]]
    lines += ["## Box QC and temporal stability", "",
              f"{int(qc['frames'].sum())} frames in {len(qc)} videos: {int(qc['missing'].sum())} without a box, "
              f"{int(qc['multiple'].sum())} with several, {int(qc['jumps'].sum())} box-centre jumps over "
              f"{JUMP_THRESHOLD:.0%} of the frame. Landmark jitter: mean per-point move between consecutive frames (px); "
              "frame change: mean absolute gray-level change between consecutive frames.", "",
              *([note, ""] if note else []),
              shown.to_markdown(index=False, floatfmt=".4g") if _has_tabulate() else f"```\n{shown.to_string(index=False)}\n```", ""]
    if "identity" in results:
        lines += ["## Identity consistency and distinctness", "",
                  "Cosine similarity of per-video templates (mean embedding of up to "
                  f"{FRAMES_PER_TEMPLATE} face crops, crop factor {CROP_FACTOR}). Masked: the face box replaced by the "
                  "frame median before cropping; scores that stay high there come from context (background, hair), not the face.", "",
                  "| condition | within-identity mean | between-identity mean | between max | Rank-1 | all identities distinct |",
                  "|---|---|---|---|---|---|"]
        for name, key in (("face", "identity"), ("face masked", "identity_masked")):
            s = results[key]
            lines.append(f"| {name} | {s['within_mean']:.4f} | {s['between_mean']:.4f} | {s['between_max']:.4f} | "
                         f"{s['rank1']:.2%} | {'yes' if s['distinct'] else 'NO'} |")
        lines.append("")
    else:
        lines += ["Identity scores skipped: give `--embedding model.onnx` (an ArcFace-style face embedding model).", ""]
    if "detector_agreement" in results:
        from generator.annotate.agreement import agreement_markdown

        lines += agreement_markdown(results["detector_agreement"])
    if "comparison" in results:
        names = results["comparison"]["names"]
        lines += [f"## {names[1]} side by side with {names[0]}", "", "![comparison](comparison.png)", "",
                  "Numbers in comparison.json, headline table in [comparison.md](comparison.md).", ""]
    if "realism" in results:
        realism = results["realism"]
        lines += ["## Realism against real thermal faces", ""]
        lines += [realism if isinstance(realism, str) else
                  f"FID {realism['fid']:.2f}; KID {realism['kid_mean']:.4f} ± {realism['kid_std']:.4f} "
                  f"({realism['generated_images']} generated vs {realism['real_images']} real images)", ""]
    return "\n".join(lines)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401  (pandas.to_markdown needs it)
    except ImportError:
        return False
    return True
