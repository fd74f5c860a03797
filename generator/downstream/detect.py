"""Score a face detector on labelled frames: COCO AP and AP50 (pycocotools), recall at the best-F1 threshold, the
frames it misses.

The detector is a file (`.onnx` YOLOv5 / YOLO5Face, `.svm` dlib; see `generator.annotate.models.load_detector`)
or any Python callable `image -> list[Detection]` or `image -> (boxes_xywh, scores)`, so tests can plant exact
detectors. Definitions (docs/downstream-detect.md):

- AP, AP50, AP75: `pycocotools.cocoeval.COCOeval` with iouType "bbox", one category (face), maxDets 100, area "all".
- matching at IoU >= 0.5, greedy by score as COCOeval does (each detection takes the unmatched ground-truth box it
  overlaps most); precision and recall at a threshold t count the detections with score >= t.
- best threshold: the detection score that maximises F1 = 2 P R / (P + R) (ties: the higher threshold).
- misses: frames with a ground-truth face that no detection at or above the best threshold matches at IoU 0.5.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import numpy as np

from thermvision_db.errors import MissingExtraError

COCO_EXTRA = "the detect benchmark needs pycocotools: pip install 'thermvision-db[benchmark]'"
MATCH_IOU = 0.5
MAX_SHEET = 48  # frames shown on the misses contact sheet (all are listed in results.json)
GT_COLOUR, PRED_COLOUR = (0, 220, 0), (230, 30, 30)


def onnx_providers(device: str) -> list[str]:
    """onnxruntime providers for --device: cpu; cuda (refused when this onnxruntime has no CUDA); auto."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise MissingExtraError("--device cuda: this onnxruntime has no CUDAExecutionProvider (pip install "
                                f"onnxruntime-gpu); available: {available}")
    return ["CPUExecutionProvider"]


def describe_model(model) -> tuple[Path | None, dict]:
    """(weights path or None, {kind, settings, providers}) of a loaded model or a plain callable."""
    path = getattr(model, "path", None)
    kind = getattr(model, "kind", None) or (f"onnx {type(model).__name__}" if hasattr(model, "session")
                                            else f"python {type(model).__name__}")
    description = {"kind": kind}
    if hasattr(model, "settings"):
        description["settings"] = model.settings
    if hasattr(model, "session"):
        description["providers"] = model.session.get_providers()
    return (Path(path) if path is not None else None), description


def open_detector(detector, device: str = "cpu"):
    """(callable, weights path or None, description) from a path, a loaded detector or any callable."""
    if not callable(detector):
        from generator.annotate.models import load_detector

        path = Path(detector)
        detector = load_detector(path, **({"providers": onnx_providers(device)} if path.suffix.lower() == ".onnx" else {}))
    return (detector, *describe_model(detector))


def detections(output) -> tuple[np.ndarray, np.ndarray]:
    """A detector's output as (n, 4) COCO boxes and (n,) scores, sorted by score (stable)."""
    if isinstance(output, tuple) and len(output) == 2:
        boxes, scores = (np.asarray(v, np.float64) for v in output)
    else:
        boxes = np.array([np.asarray(d.box_xywh, np.float64).reshape(4) for d in output]).reshape(-1, 4)
        scores = np.array([float(d.score) for d in output], np.float64)
    boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of COCO boxes a (n, 4) against b (m, 4), areas w * h (pycocotools' convention)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y2 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(gt: np.ndarray, boxes: np.ndarray, iou: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-sorted `boxes` to `gt`: (is_tp per box, index of the matching box per gt or -1)."""
    overlaps = iou_matrix(boxes, gt)
    owner = np.full(len(gt), -1)
    tp = np.zeros(len(boxes), bool)
    for d in range(len(boxes)):
        free = np.where(owner < 0, overlaps[d], -1.0)
        if len(gt) and free.max() >= iou:
            g = int(np.argmax(free))
            owner[g], tp[d] = d, True
    return tp, owner


def best_f1(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> dict:
    """Threshold maximising F1 over all detections (score, is_tp) of a set with `num_gt` faces."""
    none = {"threshold": None, "precision": 0.0, "recall": 0.0, "f1": 0.0, "true_positives": 0,
            "detections_kept": 0}
    if not len(scores) or not num_gt:
        return none
    order = np.argsort(-scores, kind="stable")
    scores, tp = scores[order], tp[order]
    last = np.r_[scores[1:] != scores[:-1], True]  # keep the last detection of each score: thresholds are scores
    ctp, kept = np.cumsum(tp)[last], (np.arange(len(tp)) + 1)[last]
    precision, recall = ctp / kept, ctp / num_gt
    f1 = np.where(ctp > 0, 2 * ctp / (kept + num_gt), 0.0)
    k = int(np.argmax(f1))  # first maximum = the highest threshold among ties
    if f1[k] == 0:
        return none
    return {"threshold": float(scores[last][k]), "precision": float(precision[k]), "recall": float(recall[k]),
            "f1": float(f1[k]), "true_positives": int(ctp[k]), "detections_kept": int(kept[k])}


def coco_scores(frames, predictions) -> dict:
    """COCOeval bbox AP / AP50 / AP75 and the interpolated PR curves at IoU 0.5 and 0.75 (101 recall points)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingExtraError(COCO_EXTRA) from None
    images, annotations, results = [], [], []
    for image_id, (frame, (boxes, scores)) in enumerate(zip(frames, predictions), start=1):
        images.append({"id": image_id, "width": frame.width, "height": frame.height, "file_name": frame.frame_id})
        for box in frame.boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0})
        results += [{"image_id": image_id, "category_id": 1, "bbox": [float(v) for v in b], "score": float(s)}
                    for b, s in zip(boxes, scores)]
    if not annotations:
        return {"AP": None, "AP50": None, "AP75": None, "pr_curves": {}}
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "pr_curves": {}}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [None if v < 0 else float(v) for v in evaluation.stats[:3]]
    precision = evaluation.eval["precision"]  # [iou, recall, category, area, maxDets]
    recall_points = evaluation.params.recThrs.tolist()
    curves = {f"IoU {t:.2f}": (recall_points, precision[i, :, 0, 0, -1].tolist())
              for i, t in enumerate(evaluation.params.iouThrs) if i in (0, 5)}
    return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2], "pr_curves": curves}


def draw_frame(image: np.ndarray, gt: np.ndarray, boxes: np.ndarray, caption: str):
    """The frame with ground-truth boxes in green and kept predictions in red."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(picture)
    line = max(1, picture.width // 160)
    for colour, group in ((GT_COLOUR, gt), (PRED_COLOUR, boxes)):
        for x, y, w, h in group:
            draw.rectangle([x, y, x + w, y + h], outline=colour, width=line)
    return picture, caption


def benchmark_detect(detector, data, out_dir: str | Path | None = None, device: str = "cpu",
                     progress: bool = True, max_sheet: int = MAX_SHEET, arguments: dict | None = None) -> dict:
    """Run `detector` on every frame of `data` (a LabelledSet, or a corpus folder) and score it.

    With `out_dir`: results.json, report.md, pr_curve.png and misses.png are written there. Returns the results:
    the run record (versions, weights' sha256, arguments), "data", "model", "metrics", "best_threshold",
    "counts", "misses" (frame ids), "timing", "plots"."""
    from tqdm.auto import tqdm

    from generator.downstream.labelled_sets import as_labelled_set
    from generator.downstream.records import run_record, write_results

    data = as_labelled_set(data)
    try:  # before the detector runs: a missing pycocotools should not cost a pass over the frames
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        raise MissingExtraError(COCO_EXTRA) from None
    model, weights, description = open_detector(detector, device)
    predictions, seconds = [], 0.0
    for frame in tqdm(data.frames, desc="detect", disable=not progress):
        image = frame.load()
        frame.height, frame.width = image.shape[:2]
        start = time.perf_counter()
        output = model(image)
        seconds += time.perf_counter() - start
        predictions.append(detections(output))
    scores_all, tp_all, owners = [], [], []
    for frame, (boxes, scores) in zip(data.frames, predictions):
        tp, owner = match(frame.boxes, boxes)
        scores_all.append(scores)
        tp_all.append(tp)
        owners.append(owner)
    num_gt = int(sum(len(f.boxes) for f in data.frames))
    best = best_f1(np.concatenate(scores_all or [np.zeros(0)]), np.concatenate(tp_all or [np.zeros(0, bool)]), num_gt)
    coco = coco_scores(data.frames, predictions)
    missed = []
    for frame, (boxes, scores), owner in zip(data.frames, predictions, owners):
        kept = scores >= best["threshold"] if best["threshold"] is not None else np.zeros(len(scores), bool)
        if len(frame.boxes) and not all(o >= 0 and kept[o] for o in owner):
            missed.append((frame, boxes[kept]))
    results = {
        "model": description,
        "metrics": {"AP": coco["AP"], "AP50": coco["AP50"], "AP75": coco["AP75"],
                    "recall_at_best_threshold": best["recall"], "precision_at_best_threshold": best["precision"],
                    "f1_at_best_threshold": best["f1"], "best_threshold": best["threshold"],
                    "max_recall_iou50": float(sum(int((o >= 0).sum()) for o in owners) / num_gt) if num_gt else None},
        "best_threshold": best,
        "counts": {"frames": len(data.frames), "faces": num_gt,
                   "detections": int(sum(len(s) for s in scores_all)), "frames_missed": len(missed)},
        "misses": [f.frame_id for f, _ in missed],
        "timing": {"detector_seconds": seconds, "ms_per_frame": 1000 * seconds / max(len(data.frames), 1)},
        "plots": [],
    }
    results = {**run_record("detect", arguments or {"device": device}, weights={"detector": weights}),
               "data": data.describe(), **results}
    if out_dir is not None:
        results["plots"] = write_plots(Path(out_dir), coco["pr_curves"], missed, max_sheet)
        write_results(out_dir, results, report_md(results))
    return results


def report_md(results: dict) -> str:
    """report.md: what was scored, the table, the pictures, the definitions."""
    from generator.downstream.records import markdown_table

    m, data, c = results["metrics"], results["data"], results["counts"]
    weights = results["weights"]["detector"]
    lines = [f"# Face detection benchmark\n",
             f"Detector: {weights['path'] if weights else results['model']['kind']} ({results['model']['kind']})"
             + (f", sha256 `{weights['sha256']}`" if weights else "") + "\n",
             f"Data: {data['kind']} `{data['path']}`, splits {', '.join(map(str, data['splits']))}: {c['frames']} "
             f"frames, {c['faces']} faces" + (f"; left out: {data['skipped']}" if data["skipped"] else "") + "\n",
             markdown_table(["AP", "AP50", "AP75", "best threshold", "recall", "precision", "F1", "missed frames"],
                            [[m["AP"], m["AP50"], m["AP75"], m["best_threshold"], m["recall_at_best_threshold"],
                              m["precision_at_best_threshold"], m["f1_at_best_threshold"], c["frames_missed"]]]),
             "AP: COCOeval bbox, IoU 0.50:0.95, maxDets 100. Recall, precision and F1 at IoU 0.5 for the detections "
             "scoring at least the best threshold (the score that maximises F1). A missed frame has a face no kept "
             "detection matches at IoU 0.5.\n",
             f"Time: {results['timing']['ms_per_frame']:.1f} ms per frame "
             f"({results['platform']['machine']}, {', '.join(results['model'].get('providers', ['cpu']))}).\n"]
    for name, title in (("pr_curve.png", "precision-recall"), ("misses.png", "missed frames (green: truth, red: "
                                                                              "kept detections)")):
        if name in results["plots"]:
            lines.append(f"## {title}\n\n![{name[:-4]}]({name})\n")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + "\n")
    return "\n".join(lines)


def write_plots(out: Path, pr_curves: dict, missed: list, max_sheet: int) -> list[str]:
    """pr_curve.png (COCO's interpolated precision against recall) and misses.png (the missed frames)."""
    from generator.evaluate.plots import line_chart
    from thermvision_db.io.atomic import atomic_write_bytes
    from thermvision_db.tools.pictures import contact_sheet

    out.mkdir(parents=True, exist_ok=True)
    written = []
    if pr_curves:
        atomic_write_bytes(out / "pr_curve.png", line_chart(pr_curves, "precision-recall (COCOeval, face)",
                                                            "recall", "precision"))
        written.append("pr_curve.png")
    if missed:
        tiles = [draw_frame(frame.load(), frame.boxes, boxes, frame.frame_id) for frame, boxes in missed[:max_sheet]]
        sheet = contact_sheet([t[0] for t in tiles], captions=[t[1] for t in tiles], tile=160)
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        atomic_write_bytes(out / "misses.png", buffer.getvalue())
        written.append("misses.png")
    return written
