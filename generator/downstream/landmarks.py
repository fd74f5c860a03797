"""Score a 54-point (SF-TL54) landmark model on labelled frames: NME, cumulative error curve, failure rate, AUC,
per head-pose bin.

The landmarker is given the ground-truth box of each face (so detector errors do not enter the score) and
returns (54, 2) pixel points (x, y). It is a file (`.onnx` SF-TL54-style, `.dat` dlib 54-part predictor; see
`generator.annotate.models.load_landmarker`) or any callable `(image, box_xywh) -> (54, 2)`.

Definitions (docs/downstream-landmarks.md), per face with ground-truth landmarks:
- point error e_i = |p_i - g_i| in pixels over the labelled points (NaN = unlabelled, left out);
- NME = mean_i e_i / d, with two normalisers d, both reported:
  inter-ocular: |g_36 - g_45|, the outer eye corners of SF-TL54 (`OUTER_EYE_CORNERS`);
  box diagonal: sqrt(w^2 + h^2) of the ground-truth box;
- CED(x) = fraction of faces with NME <= x; failure rate = fraction with NME > `max_error` (0.1);
  AUC = (1 / max_error) * integral_0^max_error CED(x) dx = mean over faces of max(0, 1 - NME / max_error), exactly.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from generator.annotate.sftl54_order import LEFT_EYE, RIGHT_EYE
from generator.downstream.labelled_sets import LabelledSetError

# The subject's right eye (36..41) is on the image's left; the eye points run from the corner away from the nose
# (index 0 of each eye, 36 and 42) round to the corner at index 3 (39, 45). The right eye's outer corner is its
# point 0 (36), the left eye's outer corner its point 3 (45): the mirror pair (36, 45) of SFTL54_FLIP_PAIRS.
OUTER_EYE_CORNERS = (RIGHT_EYE[0], LEFT_EYE[3])
NORMALISERS = {
    "inter_ocular": f"distance between the outer eye corners, SF-TL54 points {OUTER_EYE_CORNERS[0]} (right_eye_0) "
                    f"and {OUTER_EYE_CORNERS[1]} (left_eye_3), of the ground truth",
    "box_diagonal": "sqrt(w^2 + h^2) of the ground-truth face box",
}
MAX_ERROR = 0.1
POSE_EDGES = (0.0, 15.0, 30.0, 45.0)  # |angle| bins in degrees: [0, 15), [15, 30), [30, 45), [45, inf)


def open_landmarker(landmarker, device: str = "cpu"):
    """(callable, weights path or None, description) from a path, a loaded landmarker or any callable."""
    from generator.downstream.detect import describe_model, onnx_providers

    if not callable(landmarker):
        from generator.annotate.models import load_landmarker

        path = Path(landmarker)
        landmarker = load_landmarker(path, **({"providers": onnx_providers(device)} if path.suffix.lower() == ".onnx"
                                              else {}))
    return (landmarker, *describe_model(landmarker))


def inter_ocular(truth: np.ndarray) -> float:
    a, b = OUTER_EYE_CORNERS
    return float(np.linalg.norm(np.asarray(truth, np.float64)[a] - np.asarray(truth, np.float64)[b]))


def face_nme(prediction, truth, box) -> dict:
    """{"inter_ocular": NME, "box_diagonal": NME, "mean_error_px": ...}; NaN where a normaliser is unusable."""
    p, g = np.asarray(prediction, np.float64).reshape(54, 2), np.asarray(truth, np.float64).reshape(54, 2)
    labelled = np.isfinite(g).all(axis=1)
    errors = np.linalg.norm(p[labelled] - g[labelled], axis=1)
    # a non-finite prediction is an infinite error (a failure), not a face left out
    if not labelled.any():
        mean = float("nan")
    else:
        mean = float(errors.mean()) if np.isfinite(errors).all() else float("inf")
    iod = inter_ocular(g)
    diagonal = float(np.hypot(box[2], box[3]))
    return {"inter_ocular": mean / iod if np.isfinite(iod) and iod > 0 else float("nan"),
            "box_diagonal": mean / diagonal if diagonal > 0 else float("nan"), "mean_error_px": mean}


def summarise(nme, max_error: float = MAX_ERROR) -> dict:
    """Mean / median NME, failure rate (NME > max_error), AUC@max_error (exact, see the module doc) of finite NMEs."""
    values = np.asarray([v for v in nme if not np.isnan(v)], np.float64)
    if not len(values):
        return {"faces": 0, "nme_mean": None, "nme_median": None, "failure_rate": None, "auc": None}
    return {"faces": int(len(values)), "nme_mean": float(values.mean()), "nme_median": float(np.median(values)),
            "failure_rate": float((values > max_error).mean()),
            "auc": float(np.clip(1 - values / max_error, 0, None).mean())}


def ced(nme, max_error: float = MAX_ERROR, points: int = 101) -> tuple[list[float], list[float]]:
    """The cumulative error distribution on `points` thresholds from 0 to max_error."""
    values = np.sort(np.asarray([v for v in nme if not np.isnan(v)], np.float64))
    xs = np.linspace(0, max_error, points)
    if not len(values):
        return xs.tolist(), [float("nan")] * points
    return xs.tolist(), (np.searchsorted(values, xs, side="right") / len(values)).tolist()


def pose_bin(angle: float, edges=POSE_EDGES) -> str:
    """'0-15', '15-30', '30-45' or '>45' (|angle| in degrees; the lower edge is in the bin)."""
    a = abs(float(angle))
    for low, high in zip(edges, edges[1:]):
        if low <= a < high:
            return f"{low:g}-{high:g}"
    return f">{edges[-1]:g}" if a >= edges[-1] else "nan"


def per_pose(faces: list[dict], max_error: float = MAX_ERROR, edges=POSE_EDGES) -> dict:
    """{axis: {bin: summaries per normaliser}} for yaw and pitch, over faces whose frame has a head pose."""
    out = {}
    names = [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f">{edges[-1]:g}"]
    for axis in ("yaw", "pitch"):
        bins = {name: [f for f in faces if f["head_pose"] is not None and pose_bin(f["head_pose"][axis], edges) == name]
                for name in names}
        out[axis] = {name: {"faces": len(group), **{norm: summarise([f[norm] for f in group], max_error)
                                                    for norm in NORMALISERS}} for name, group in bins.items()}
    return out


def benchmark_landmarks(landmarker, data, out_dir: str | Path | None = None, device: str = "cpu",
                        progress: bool = True, max_error: float = MAX_ERROR, arguments: dict | None = None) -> dict:
    """Predict the 54 points of every labelled face of `data` (a LabelledSet, or a corpus folder) from its
    ground-truth box and score them; with `out_dir`, results.json, report.md and ced.png are written there.

    Faces without ground-truth landmarks are skipped and counted. Returns the run record (versions, weights'
    sha256, arguments) plus "data", "model", "normalisers", "metrics", "per_pose", "counts", "timing", "plots"."""
    from tqdm.auto import tqdm

    from generator.downstream.labelled_sets import as_labelled_set
    from generator.downstream.records import run_record, write_results

    data = as_labelled_set(data)
    model, weights, description = open_landmarker(landmarker, device)
    faces, skipped, seconds = [], 0, 0.0
    for frame in tqdm(data.frames, desc="landmarks", disable=not progress):
        labelled = [(box, truth) for box, truth in zip(frame.boxes, frame.landmarks) if truth is not None]
        skipped += len(frame.boxes) - len(labelled)
        if not labelled:
            continue
        image = frame.load()
        for box, truth in labelled:
            start = time.perf_counter()
            prediction = np.asarray(model(image, box), np.float64)
            seconds += time.perf_counter() - start
            if prediction.shape != (54, 2):
                raise LabelledSetError(f"the landmarker returned shape {prediction.shape} for {frame.frame_id}; "
                                       "a 54-point model returns (54, 2)")
            faces.append({"frame_id": frame.frame_id, "head_pose": frame.head_pose, **face_nme(prediction, truth, box)})
    metrics = {norm: summarise([f[norm] for f in faces], max_error) for norm in NORMALISERS}
    unusable = sum(np.isnan(f["inter_ocular"]) for f in faces)
    worst = sorted((f for f in faces if not np.isnan(f["inter_ocular"])), key=lambda f: -f["inter_ocular"])[:10]
    results = {
        "model": description,
        "box_given": "the ground-truth box of each face",
        "normalisers": NORMALISERS,
        "max_error": max_error,
        "metrics": metrics,
        "per_pose": per_pose(faces, max_error) if any(f["head_pose"] is not None for f in faces) else None,
        "pose_bins": "|angle| in degrees; lower edge in the bin",
        "counts": {"frames": len(data.frames), "faces_scored": len(faces), "faces_without_landmarks": skipped,
                   "faces_without_inter_ocular": int(unusable)},
        "mean_error_px": float(np.nanmean([f["mean_error_px"] for f in faces])) if faces else None,
        "worst": [{"frame_id": f["frame_id"], "inter_ocular": f["inter_ocular"]} for f in worst],
        "timing": {"landmarker_seconds": seconds, "ms_per_face": 1000 * seconds / max(len(faces), 1)},
        "plots": [],
    }
    results = {**run_record("landmarks", arguments or {"device": device}, weights={"landmarker": weights}),
               "data": data.describe(), **results}
    if out_dir is not None:
        if faces:
            from generator.evaluate.plots import line_chart
            from thermvision_db.io.atomic import atomic_write_bytes

            Path(out_dir).mkdir(parents=True, exist_ok=True)
            curves = {norm: ced([f[norm] for f in faces], max_error) for norm in NORMALISERS}
            atomic_write_bytes(Path(out_dir) / "ced.png", line_chart(
                curves, f"cumulative error distribution (NME <= x, up to {max_error:g})", "NME",
                "fraction of faces", x_range=(0.0, max_error)))
            results["plots"].append("ced.png")
        write_results(out_dir, results, report_md(results))
    return results


def report_md(results: dict) -> str:
    """report.md: what was scored, the tables (overall, per pose bin), the CED plot, the normalisers."""
    from generator.downstream.records import markdown_table

    data, c, e = results["data"], results["counts"], results["max_error"]
    weights = results["weights"]["landmarker"]
    header = ["normaliser", "faces", "NME mean", "NME median", f"failure rate (> {e:g})", f"AUC@{e:g}"]

    def row(name, s):
        return [name, s["faces"], s["nme_mean"], s["nme_median"], s["failure_rate"], s["auc"]]

    lines = ["# 54-point landmark benchmark\n",
             f"Landmarker: {weights['path'] if weights else results['model']['kind']} ({results['model']['kind']})"
             + (f", sha256 `{weights['sha256']}`" if weights else "") + "; given the ground-truth box of each face.\n",
             f"Data: {data['kind']} `{data['path']}`, splits {', '.join(map(str, data['splits']))}: {c['frames']} "
             f"frames, {c['faces_scored']} faces scored, {c['faces_without_landmarks']} without ground-truth "
             f"landmarks skipped" + (f"; left out: {data['skipped']}" if data["skipped"] else "") + ".\n",
             markdown_table(header, [row(n, s) for n, s in results["metrics"].items()]),
             "NME = mean point error / normaliser. Normalisers: "
             + "; ".join(f"**{k}**: {v}" for k, v in results["normalisers"].items()) + ".\n"]
    if results["per_pose"]:
        for axis, bins in results["per_pose"].items():
            lines.append(f"## per |{axis}| bin (degrees)\n")
            lines.append(markdown_table(["bin", "faces", "NME inter-ocular", "NME box diagonal", "failure rate (io)",
                                         "AUC (io)"],
                                        [[b, s["faces"], s["inter_ocular"]["nme_mean"], s["box_diagonal"]["nme_mean"],
                                          s["inter_ocular"]["failure_rate"], s["inter_ocular"]["auc"]]
                                         for b, s in bins.items()]))
    if "ced.png" in results["plots"]:
        lines.append("## cumulative error distribution\n\n![ced](ced.png)\n")
    lines.append(f"Time: {results['timing']['ms_per_face']:.1f} ms per face ({results['platform']['machine']}, "
                 f"{', '.join(results['model'].get('providers', ['cpu']))}).\n")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + "\n")
    return "\n".join(lines)
