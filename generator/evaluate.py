"""Quality report for a corpus (released or generated): box QC, temporal stability, identity, realism.

Every figure is computed from the loader's frame rows, so the released corpus and a generated one are measured
the same way. Identity is measured with a pluggable ONNX face-embedding model (image in, vector out), with the
masked-face control of the independent audit: the face box replaced by the frame median shows how much of the
"identity" a model finds is background and hair rather than the face.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from generator.realism import INCEPTION_FILE, RealismUnavailable, fid_kid
from thermvision_db.errors import ThermVisionError
from thermvision_db.atomic import atomic_write_bytes, atomic_write_text
from thermvision_db.qc import video_qc
from thermvision_db.rows import label_names, named_frame_row

JUMP_THRESHOLD = 0.05  # box-centre move between consecutive frames, as a fraction of the frame side
CROP_FACTOR = 1.2  # face crop around the box, as the audit used
FRAMES_PER_TEMPLATE = 16


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
    from thermvision_db.api import load_dataset
    from thermvision_db.builder import SYNTHETIC_CONFIGS
    from thermvision_db.generated import RUN_FILE

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


# ---------------------------------------------------------------------------------------------- identity
class OnnxEmbedder:
    """A face-embedding ONNX model: NCHW float input (1 or 3 channels), one vector out per image."""

    def __init__(self, path: str | os.PathLike):
        if not Path(path).is_file():
            raise EvaluationError(f"embedding model {path} does not exist")
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise EvaluationError(f"cannot load the ONNX embedding model {path}: {err}") from err
        spec = self.session.get_inputs()[0]
        if len(spec.shape) != 4:
            raise EvaluationError(f"{path}: input {spec.name} has shape {spec.shape}; expected N x C x H x W")
        self.input_name = spec.name
        _, channels, height, width = spec.shape
        self.channels = channels if isinstance(channels, int) else 3
        self.size = (width if isinstance(width, int) else 112, height if isinstance(height, int) else 112)

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings of gray uint8 crops, pixels scaled to [-1, 1] as ArcFace models expect."""
        batch = np.stack([np.asarray(Image.fromarray(c).resize(self.size, Image.BILINEAR), dtype=np.float32) for c in crops])
        batch = (batch / 127.5 - 1.0)[:, None].repeat(self.channels, axis=1)
        vectors = np.concatenate([self.session.run(None, {self.input_name: batch[i:i + 1]})[0].reshape(1, -1)
                                  for i in range(len(batch))])
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def face_crop(frame: np.ndarray, box: list[float], mask_face: bool = False) -> np.ndarray:
    """The box enlarged by CROP_FACTOR; with `mask_face`, the box itself is first set to the frame median."""
    image = frame.copy()
    x, y, w, h = box
    if mask_face:
        image[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = np.median(frame)
    cx, cy, half = x + w / 2, y + h / 2, CROP_FACTOR * max(w, h) / 2
    height, width = frame.shape
    left, top = max(0, int(cx - half)), max(0, int(cy - half))
    right, bottom = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
    return image[top:bottom, left:right]


def video_template(video: VideoFrames, embed: OnnxEmbedder, mask_face: bool = False) -> np.ndarray | None:
    """Mean embedding of up to FRAMES_PER_TEMPLATE evenly spaced frames with a box; None without any box."""
    boxed = [i for i, b in enumerate(video.boxes) if b]
    if not boxed:
        return None
    picks = [boxed[int(j)] for j in np.linspace(0, len(boxed) - 1, min(FRAMES_PER_TEMPLATE, len(boxed)))]
    vectors = embed([face_crop(video.frames[i], video.boxes[i][0], mask_face) for i in picks])
    mean = vectors.mean(axis=0)
    return mean / max(np.linalg.norm(mean), 1e-12)


def identity_scores(videos: list[VideoFrames], embed: OnnxEmbedder, mask_face: bool = False) -> dict:
    """Within-identity (across an identity's videos) and between-identity template cosines, Rank-1, distinctness.

    Rank-1: each video template's nearest other video template belongs to the same identity. An identity is
    distinct when its within-identity cosine exceeds its highest cosine to any other identity.
    """
    kept = [(v, t) for v in videos if (t := video_template(v, embed, mask_face)) is not None]
    if len(kept) < 2:
        raise EvaluationError("identity scores need at least two videos with boxes")
    ids = [v.identity for v, _ in kept]
    templates = np.stack([t for _, t in kept])
    cosine = templates @ templates.T
    same = np.equal.outer(ids, ids)
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    within = cosine[same & off_diagonal]
    between = cosine[~same]
    masked_self = np.where(off_diagonal, cosine, -np.inf)
    rank1 = float(np.mean([ids[int(np.argmax(masked_self[i]))] == ids[i] for i in range(len(ids))]))
    per_identity = []
    for identity in sorted(set(ids)):
        rows = np.array([i == identity for i in ids])
        own = cosine[np.outer(rows, rows) & off_diagonal]
        others = cosine[np.outer(rows, ~rows)]
        within_mean = float(own.mean()) if own.size else float("nan")
        max_other = float(others.max()) if others.size else float("nan")
        per_identity.append({"identity": identity, "within": within_mean, "max_between": max_other,
                             "margin": within_mean - max_other, "distinct": bool(within_mean - max_other > 1e-6)})
    table = pd.DataFrame(per_identity)
    return {
        "within_mean": float(within.mean()) if within.size else float("nan"),
        "between_mean": float(between.mean()) if between.size else float("nan"),
        "between_max": float(between.max()) if between.size else float("nan"),
        "rank1": rank1,
        "distinct": bool(table["distinct"].all()),
        "per_identity": table,
    }


# ---------------------------------------------------------------------------------------------- realism (extra)
def realism_against(real_dir: str | os.PathLike, videos: list[VideoFrames], max_images: int = 500,
                    feature="inception", inception_weights: str | None = None) -> dict | str:
    """FID/KID of the corpus frames against a folder of real thermal faces; the reason as text when unavailable.

    A long evaluation should not die at its last step because an optional extractor is missing, so the
    report carries the message (which says what to install or where the weights go) instead.
    """
    if feature is None:
        return "FID/KID not computed: no feature extractor requested (--fid-features none)."
    real_paths = sorted(p for p in Path(real_dir).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
    if not real_paths:
        raise EvaluationError(f"no images found under the real-image folder {real_dir}")
    fakes = [f for v in videos for f in v.frames][:max_images]
    reals = [np.asarray(Image.open(p).convert("L")) for p in real_paths[:max_images]]
    try:
        result = fid_kid(reals, fakes, feature=feature, inception_weights=inception_weights)
    except RealismUnavailable as err:
        return f"FID/KID not computed: {err}"
    return {**result, "real_images": result["images_a"], "generated_images": result["images_b"]}


# ---------------------------------------------------------------------------------------------- plots (PIL)
def bar_chart(labels: list[str], series: dict[str, list[float]], title: str, width: int = 720, height: int = 320) -> bytes:
    """A grouped bar chart as PNG bytes, drawn with PIL so the report needs no plotting library."""
    colours = [(52, 101, 164), (204, 0, 0), (115, 210, 22), (245, 121, 0)]
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 50, width - 10, 30, height - 60
    draw.text((left, 8), title, fill="black")
    top_value = max([abs(v) for values in series.values() for v in values if np.isfinite(v)] + [1e-9])
    draw.line([(left, bottom), (right, bottom)], fill="black")
    draw.text((5, top - 5), f"{top_value:.3g}", fill="black")
    draw.text((5, bottom - 5), "0", fill="black")
    slot = (right - left) / max(len(labels), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        draw.rectangle([right - 120, top + 14 * k, right - 110, top + 14 * k + 10], fill=colours[k % len(colours)])
        draw.text((right - 105, top + 14 * k - 1), name, fill="black")
        for i, value in enumerate(values):
            if not np.isfinite(value):
                continue
            x0 = left + slot * i + slot * 0.1 + bar * k
            y0 = bottom - (bottom - top) * max(value, 0) / top_value
            draw.rectangle([x0, y0, x0 + bar - 1, bottom], fill=colours[k % len(colours)])
    for i, label in enumerate(labels):
        draw.text((left + slot * i + 2, bottom + 4 + 12 * (i % 3)), label[:12], fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- the report
def evaluate(data_dir: str | os.PathLike, out: str | os.PathLike, embedding: str | None = None,
             real_dir: str | None = None, config: str = "frames", cache_dir: str | None = None,
             progress: bool = True, compare_dir: str | os.PathLike | None = None, compare_config: str = "frames",
             names: tuple[str, str] = ("released", "generated"), fid_features="inception",
             inception_weights: str | None = None) -> dict:
    """Write `report.md` and its PNG plots under `out`; return the numbers behind them.

    With `compare_dir` (the released corpus or the miniature) the corpus at `data_dir` is also shown side by
    side with it (`generator.compare`): comparison.png/.json/.md, linked from the report. `names` are the
    names of the `compare_dir` corpus and of the `data_dir` corpus, in that order.
    """
    out = Path(out)
    fid_features = None if fid_features == "none" else fid_features  # the CLI's spelling works here too
    videos = read_videos(data_dir, config, cache_dir, progress)
    qc = pd.DataFrame([box_qc(v) for v in videos])
    qc["landmark_jitter_px"] = [landmark_jitter(v.landmarks) for v in videos]
    qc["frame_change"] = [frame_change(v.frames) for v in videos]
    labels = list(qc["video_id"])
    plots = {
        "box_qc.png": bar_chart(labels, {"missing": list(qc["missing"]), "multiple": list(qc["multiple"]), "jumps": list(qc["jumps"])},
                                "Box QC per video (frames)"),
        "temporal.png": bar_chart(labels, {"landmark jitter px": list(qc["landmark_jitter_px"]), "frame change": list(qc["frame_change"])},
                                  "Temporal stability per video"),
    }
    results: dict = {"qc": qc}
    if embedding:
        embed = OnnxEmbedder(embedding)
        results["identity"] = identity_scores(videos, embed)
        results["identity_masked"] = identity_scores(videos, embed, mask_face=True)
        per = results["identity"]["per_identity"]
        plots["identity.png"] = bar_chart(list(per["identity"]), {"within": list(per["within"]), "max between": list(per["max_between"])},
                                          "Identity: within vs highest between-identity cosine")
    if real_dir:
        results["realism"] = realism_against(real_dir, videos, feature=fid_features, inception_weights=inception_weights)
    if compare_dir is not None:
        from generator.compare import compare_corpora

        results["comparison"] = compare_corpora(frame_rows(compare_dir, compare_config, cache_dir),
                                                frame_rows(data_dir, config, cache_dir), out, names=names,
                                                feature=fid_features, inception_weights=inception_weights, progress=progress)
    for name, data in plots.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / "report.md", render_report(results, list(plots)))
    qc_path = out / "box_qc.csv"
    atomic_write_text(qc_path, qc.to_csv(index=False))
    return results


def render_report(results: dict, plots: list[str]) -> str:
    qc = results["qc"]
    lines = ["# ThermVision corpus quality report", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    shown = qc[["video_id", "frames", "missing", "multiple", "jumps", "max_centre_jump", "landmark_jitter_px", "frame_change"]]
    lines += ["## Box QC and temporal stability", "",
              f"{int(qc['frames'].sum())} frames in {len(qc)} videos: {int(qc['missing'].sum())} without a box, "
              f"{int(qc['multiple'].sum())} with several, {int(qc['jumps'].sum())} box-centre jumps over "
              f"{JUMP_THRESHOLD:.0%} of the frame. Landmark jitter: mean per-point move between consecutive frames (px); "
              "frame change: mean absolute gray-level change between consecutive frames.", "",
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


# ---------------------------------------------------------------------------------------------- CLI
def add_evaluate_parser(sub) -> None:
    """`thermvision-db evaluate`: registered by `thermvision_db.cli`."""
    p = sub.add_parser("evaluate", help="quality report: box QC, temporal stability, identity, FID/KID")
    p.add_argument("data_dir", help="the corpus folder")
    p.add_argument("--out", required=True, help="report folder (report.md, PNG plots, box_qc.csv)")
    p.add_argument("--embedding", help="ONNX face-embedding model (image in, vector out)")
    p.add_argument("--real-dir", help="folder of real thermal face images for FID/KID (needs torchmetrics)")
    p.add_argument("--compare", metavar="REFERENCE_DIR",
                   help="a second corpus (the released one, or the miniature) shown side by side with DATA_DIR")
    p.add_argument("--names", nargs=2, default=("released", "generated"), metavar=("REFERENCE", "CORPUS"),
                   help="names of the --compare corpus and of DATA_DIR in the comparison")
    p.add_argument("--compare-config", default="frames", help="loader configuration of the --compare corpus")
    p.add_argument("--fid-features", default="inception",
                   help="FID/KID feature extractor: 'inception' (torchmetrics + torch-fidelity), 'none', or an .onnx model")
    p.add_argument("--inception-weights", help=f"local {INCEPTION_FILE} (otherwise the torch hub cache or $THERMVISION_INCEPTION_WEIGHTS)")
    p.add_argument("--config", default="frames",
                   help="frames (released layout; a generated corpus folder is recognised by its run.json) or synthetic")
    p.add_argument("--cache-dir", help="datasets cache folder")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    features = None if args.fid_features == "none" else args.fid_features
    results = evaluate(args.data_dir, args.out, embedding=args.embedding, real_dir=args.real_dir,
                       config=args.config, cache_dir=args.cache_dir, compare_dir=args.compare,
                       compare_config=args.compare_config, names=tuple(args.names), fid_features=features,
                       inception_weights=args.inception_weights)
    skipped = [results["realism"]] if isinstance(results.get("realism"), str) else []
    skipped += [results["comparison"]["realism"]["skipped"]] if "skipped" in results.get("comparison", {}).get("realism", {}) else []
    for message in skipped if features is not None else []:
        print(f"warning: {message}", file=sys.stderr)
    summary = f"wrote {Path(args.out) / 'report.md'}"
    if "comparison" in results:
        summary += f" and {Path(args.out) / 'comparison.png'}"
    if "identity" in results:
        summary += f" (identities distinct: {'yes' if results['identity']['distinct'] else 'NO'})"
    print(summary)
    return 0
