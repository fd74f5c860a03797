"""Tiny dlib models trained inside the tests with dlib's own trainers, on synthetic thermal-like faces placed at
known boxes with the SF-TL54 template layout: the files are dlib's, written by dlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from generator.annotate.labels import TEMPLATE_LAYOUT


def thermal_face(size: tuple[int, int], box, background: int = 40) -> np.ndarray:
    """A warm ellipse (the face) on a cool background, cooler eyes and mouth: (H, W) uint8, box = COCO [x, y, w, h]."""
    h, w = size
    x, y, bw, bh = box
    yy, xx = np.mgrid[:h, :w] + 0.5
    cx, cy = x + bw / 2, y + bh / 2
    img = np.full(size, background, np.uint8)
    img[((xx - cx) / (bw / 2)) ** 2 + ((yy - cy) / (bh / 2)) ** 2 <= 1] = 200
    for ex in (cx - 0.2 * bw, cx + 0.2 * bw):
        img[(xx - ex) ** 2 + (yy - (y + 0.41 * bh)) ** 2 <= (0.07 * bw) ** 2] = 90
    img[(abs(yy - (y + 0.79 * bh)) <= 0.04 * bh) & (abs(xx - cx) <= 0.15 * bw)] = 100
    return img


def training_set(count: int = 6, side: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for _ in range(count):
        w = int(rng.integers(50, 70))
        x, y = (int(v) for v in rng.integers(5, side - w - 5, size=2))
        images.append(thermal_face((side, side), (x, y, w, w)))
        boxes.append((x, y, w, w))
    return images, boxes


def train_detector(path: Path) -> Path:
    import dlib

    images, boxes = training_set()
    options = dlib.simple_object_detector_training_options()
    options.add_left_right_image_flips, options.C, options.num_threads = False, 5, 1
    options.detection_window_size = 40 * 40
    rects = [[dlib.rectangle(x, y, x + w - 1, y + h - 1)] for x, y, w, h in boxes]
    dlib.train_simple_object_detector(images, rects, options).save(str(path))
    return path


def train_predictor(path: Path, parts: int = 54, order: list[int] | None = None) -> Path:
    """A shape predictor whose part k is TEMPLATE_LAYOUT[order[k]] (54 parts), or `parts` points on a circle."""
    import dlib

    images, boxes = training_set(count=4, side=96, seed=1)
    objects = []
    for (x, y, w, h) in boxes:
        if parts == 54:
            layout = TEMPLATE_LAYOUT[order if order is not None else slice(None)]
        else:
            t = np.linspace(0, 2 * np.pi, parts, endpoint=False)
            layout = np.stack([0.5 + 0.4 * np.cos(t), 0.5 + 0.4 * np.sin(t)], 1)
        pts = [dlib.point(int(px), int(py)) for px, py in layout * [w, h] + [x, y]]
        objects.append([dlib.full_object_detection(dlib.rectangle(x, y, x + w - 1, y + h - 1), pts)])
    options = dlib.shape_predictor_training_options()
    options.tree_depth, options.cascade_depth, options.num_trees_per_cascade_level = 2, 3, 6
    options.oversampling_amount, options.feature_pool_size, options.num_threads = 2, 40, 1
    dlib.train_shape_predictor(images, objects, options).save(str(path))
    return path
