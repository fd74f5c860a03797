"""`benchmark_detect`: planted detectors with analytic answers, pycocotools as the judge, a second implementation
of the best-threshold recall."""

from __future__ import annotations

import json

import numpy as np
import pytest

from generator.downstream.detect import benchmark_detect, best_f1, iou_matrix, match
from generator.downstream.labelled_sets import LabelledFrame, LabelledSet

pytestmark = pytest.mark.usefixtures("private_hash_cache")
COCO_THRESHOLDS = np.linspace(0.5, 0.95, 10)
W = 40.0  # every planted face box is 40 px wide


def _set(n: int = 6) -> LabelledSet:
    """n blank 100 x 100 frames, one face each: w = 40, varied x, y, h."""
    frames = []
    for i in range(n):
        box = np.array([[10.0 + 5 * i, 20.0 + 3 * i, W, 30.0 + 4 * i]])
        frames.append(LabelledFrame(f"f{i:02d}", lambda: np.zeros((100, 100), np.uint8), box, [None], 100, 100))
    return LabelledSet(frames, {"kind": "planted", "path": "-", "splits": ["all"]})


def _shifted(data: LabelledSet, dx: float):
    truth = {f.frame_id: f.boxes[0] for f in data.frames}
    boxes = iter([truth[f.frame_id] + [dx, 0, 0, 0] for f in data.frames])  # frames are scored in order
    return lambda image: (next(boxes)[None], np.array([1.0]))


@pytest.mark.parametrize("dx", [0.0, 4.0, 12.0, 16.0])
def test_boxes_shifted_by_dx_give_the_iou_implied_ap(dx, tmp_path):
    iou = (W - dx) / (W + dx)  # a w x h box shifted by dx along x: (w - dx) h / ((w + dx) h)
    assert not np.any(np.isclose(COCO_THRESHOLDS, iou, atol=1e-3))  # not on a threshold
    data = _set()
    out = benchmark_detect(_shifted(data, dx), data, out_dir=tmp_path, progress=False)
    m = out["metrics"]
    # every frame: one face, one detection of score 1 -> AP at threshold t is 1 if IoU >= t else 0
    assert m["AP"] == pytest.approx(float(np.mean(COCO_THRESHOLDS <= iou)), abs=1e-9)
    assert m["AP50"] == (1.0 if iou >= 0.5 else 0.0)
    assert m["recall_at_best_threshold"] == (1.0 if iou >= 0.5 else 0.0)
    assert out["misses"] == ([] if iou >= 0.5 else [f.frame_id for f in data.frames])
    assert iou_matrix(data.frames[0].boxes, data.frames[0].boxes + [dx, 0, 0, 0])[0, 0] == pytest.approx(iou)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"]["AP"] == pytest.approx(m["AP"]) and saved["task"] == "detect"
    assert (tmp_path / "report.md").read_text().startswith("# Face detection benchmark")


def test_a_detector_that_finds_nothing_scores_zero_and_misses_every_frame(tmp_path):
    data = _set(5)
    out = benchmark_detect(lambda image: [], data, out_dir=tmp_path, progress=False)
    assert out["metrics"]["AP"] == 0 and out["metrics"]["AP50"] == 0
    assert out["metrics"]["recall_at_best_threshold"] == 0 and out["metrics"]["best_threshold"] is None
    assert out["misses"] == [f.frame_id for f in data.frames] and out["counts"]["frames_missed"] == 5
    from PIL import Image

    sheet = Image.open(tmp_path / "misses.png")
    assert sheet.size == (3 * 160, 2 * 160)  # 5 tiles of 160 px in a 3-column sheet
    assert "misses.png" in out["plots"] and "pr_curve.png" not in out["plots"]


def _iou(a, b) -> float:
    """A second IoU, one pair at a time."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def _brute_best(frames_gt, frames_pred) -> tuple[float, float, float]:
    """For every candidate threshold: keep the detections >= t, match them from scratch, take the best F1."""
    n_gt = sum(len(g) for g in frames_gt)
    thresholds = sorted({s for _, scores in frames_pred for s in scores}, reverse=True)
    best = (0.0, None, 0.0)
    for t in thresholds:
        tp = kept = 0
        for gt, (boxes, scores) in zip(frames_gt, frames_pred):
            taken = set()
            for d in np.argsort(-scores, kind="stable"):
                if scores[d] < t:
                    continue
                kept += 1
                ious = [(_iou(boxes[d], g), j) for j, g in enumerate(gt) if j not in taken]
                good = [(v, j) for v, j in ious if v >= 0.5]
                if good:
                    taken.add(max(good)[1])
                    tp += 1
        f1 = 2 * tp / (kept + n_gt)
        if f1 > best[0]:
            best = (f1, t, tp / n_gt)
    return best


def test_best_threshold_recall_agrees_with_a_brute_force_and_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    frames_gt, frames_pred = [], []
    for _ in range(12):
        gt = np.column_stack([rng.uniform(0, 60, (3, 2)), rng.uniform(10, 30, (3, 2))])[: rng.integers(0, 4)]
        jitter = gt[rng.integers(0, len(gt), 4)] + rng.normal(0, 4, (4, 4)) if len(gt) else np.zeros((0, 4))
        boxes = np.vstack([jitter, np.column_stack([rng.uniform(0, 60, (2, 2)), rng.uniform(10, 30, (2, 2))])])
        boxes[:, 2:] = np.abs(boxes[:, 2:]) + 1
        scores = rng.choice([0.2, 0.4, 0.6, 0.8, 0.9], len(boxes))  # ties on purpose
        order = np.argsort(-scores, kind="stable")
        frames_gt.append(gt)
        frames_pred.append((boxes[order], scores[order]))
    tps = [match(g, b)[0] for g, (b, _) in zip(frames_gt, frames_pred)]
    n_gt = sum(len(g) for g in frames_gt)
    mine = best_f1(np.concatenate([s for _, s in frames_pred]), np.concatenate(tps), n_gt)
    f1, threshold, recall = _brute_best(frames_gt, frames_pred)
    assert (mine["f1"], mine["threshold"], mine["recall"]) == pytest.approx((f1, threshold, recall))
    # the same matching as COCOeval's at IoU 0.5: its recall at maxDets 100 equals ours over all detections
    images = [{"id": i + 1} for i in range(len(frames_gt))]
    anns = [{"id": k + 1, "image_id": i + 1, "category_id": 1, "bbox": list(map(float, b)), "area": float(b[2] * b[3]),
             "iscrowd": 0} for k, (i, b) in enumerate((i, b) for i, g in enumerate(frames_gt) for b in g)]
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "face"}]}
    gt.createIndex()
    dets = [{"image_id": i + 1, "category_id": 1, "bbox": list(map(float, b)), "score": float(s)}
            for i, (boxes, scores) in enumerate(frames_pred) for b, s in zip(boxes, scores)]
    evaluation = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
    evaluation.params.iouThrs = np.array([0.5])
    evaluation.evaluate()
    evaluation.accumulate()
    assert evaluation.eval["recall"][0, 0, 0, -1] == pytest.approx(sum(t.sum() for t in tps) / n_gt)


def test_the_same_seed_gives_the_same_numbers_and_another_seed_other_frames():
    data = _set(10)
    rng = np.random.default_rng(0)
    noise = {f.frame_id: rng.normal(0, 3, 4) for f in data.frames}

    def detector_for(subset):
        boxes = iter([f.boxes[0] + noise[f.frame_id] for f in subset.frames])
        return lambda image: (next(boxes)[None], np.array([0.7]))

    runs = []
    for seed in (5, 5, 6):
        subset = data.subsample(6, seed)
        runs.append(benchmark_detect(detector_for(subset), subset, progress=False))
    assert runs[0]["metrics"] == runs[1]["metrics"] and runs[0]["data"] == runs[1]["data"]
    assert runs[0]["data"]["frame_ids_sha256"] != runs[2]["data"]["frame_ids_sha256"]


def test_a_loaded_onnx_detector_from_python_is_recorded_with_its_sha256(tmp_path):
    from generator.annotate.models import load_detector
    from generator.weights import sha256_file
    from tests.support.tiny_onnx import write_yolo_detector

    path = write_yolo_detector(tmp_path / "d.onnx", [[30, 35, 40, 30, 0.8]], input_size=(100, 100))
    data = _set(1)  # frame 0's box is [10, 20, 40, 30]: the planted face, centre (30, 35)
    out = benchmark_detect(load_detector(path), data, progress=False)
    assert out["weights"]["detector"] == {"path": str(path), "sha256": sha256_file(path)}
    assert out["model"]["kind"] == "yolov5" and out["model"]["providers"] == ["CPUExecutionProvider"]
    assert out["metrics"]["AP"] == pytest.approx(1.0) and out["metrics"]["best_threshold"] == pytest.approx(0.8)
