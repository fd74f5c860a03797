"""The frames a benchmark scores, from a corpus folder, a COCO JSON + images folder, or a YOLO folder.

Every reader returns one `LabelledSet`: a list of `LabelledFrame` (image loader, ground-truth boxes COCO
[x, y, w, h] pixels, per-box 54 x 2 landmarks or None, head pose or None, frame id) and what was skipped and why.
Readers check everything before the first frame is scored, so a bad file stops the run with its name (and line)
instead of moving the numbers. Hostile inputs and the tests for each: docs/downstream-detect.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thermvision_db.errors import ThermVisionError
from thermvision_db.schema.labels import NUM_LANDMARKS

MAX_JSON_BYTES = 1 << 30  # a COCO file over 1 GiB is refused before it is read (the parse needs ~10x in memory)
MAX_LABEL_BYTES = 1 << 20  # one YOLO label file: 1 MiB holds thousands of pose lines
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class LabelledSetError(ThermVisionError, ValueError):
    """A labelled set that cannot be scored; the message names the file (and line or annotation) and the cause."""


@dataclass
class LabelledFrame:
    """One image to score and its ground truth."""

    frame_id: str
    load: Callable[[], np.ndarray]  # -> (H, W) or (H, W, 3) uint8
    boxes: np.ndarray  # (n, 4) float64 COCO [x, y, w, h] pixels
    landmarks: list  # n entries: (54, 2) float64 (NaN = unlabelled point) or None
    width: int
    height: int
    head_pose: dict | None = None  # {"yaw", "pitch", "roll"} degrees (generated corpora)


@dataclass
class LabelledSet:
    """Frames plus where they came from (kind, path, splits) and what was left out, by reason."""

    frames: list[LabelledFrame]
    source: dict
    skipped: Counter = field(default_factory=Counter)

    def subsample(self, max_frames: int | None, seed: int = 0) -> LabelledSet:
        """At most `max_frames` frames drawn without replacement by `numpy.random.default_rng(seed)`, kept in order."""
        if max_frames is None or max_frames >= len(self.frames):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.frames), size=int(max_frames), replace=False))
        return LabelledSet([self.frames[i] for i in keep], self.source, Counter(self.skipped))

    def describe(self) -> dict:
        """What results.json records about the data: source, frame and face counts, skips, a digest of frame ids."""
        ids = "\n".join(f.frame_id for f in self.frames)
        return {**self.source, "frames": len(self.frames), "faces": int(sum(len(f.boxes) for f in self.frames)),
                "faces_with_landmarks": int(sum(p is not None for f in self.frames for p in f.landmarks)),
                "frames_with_head_pose": int(sum(f.head_pose is not None for f in self.frames)),
                "skipped": dict(self.skipped), "frame_ids_sha256": hashlib.sha256(ids.encode()).hexdigest()}


# ------------------------------------------------------------------------------------------------ images


def read_image(path: Path, header_only: bool = False):
    """(H, W) uint8 for gray images, (H, W, 3) otherwise, or (width, height) from the header; a bad file is named."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if header_only:
                return image.size
            image.load()
            return np.asarray(image.convert("L" if image.mode in ("1", "L", "I;16", "I", "F", "LA") else "RGB"))
    except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, bomb errors)
        raise LabelledSetError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def inside(root: Path, path: Path, what: str) -> Path:
    """`path` resolved (symlinks followed) if it stays under `root`, else a LabelledSetError."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise LabelledSetError(f"{what} {path} resolves to {resolved}, outside {root}: refused (a symlink or "
                               "'..' leading out of the folder)")
    return resolved


def _numbers(value) -> np.ndarray | None:
    """A JSON list of numbers as float64, else None (strings, nested lists, objects)."""
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return np.asarray(value, dtype=np.float64)


def _check_box(box, where: str) -> np.ndarray:
    values = _numbers(box)
    if values is None or values.shape != (4,) or not np.all(np.isfinite(values)):
        raise LabelledSetError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {box!r}")
    if values[2] <= 0 or values[3] <= 0:
        raise LabelledSetError(f"{where}: bbox width and height must be > 0, got {box!r}")
    return values


def _check_points(points, where: str) -> np.ndarray | None:
    """(54, 2) float64 with NaN for unlabelled points; None when none is labelled."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) != NUM_LANDMARKS:
        raise LabelledSetError(f"{where}: {len(p) if p.ndim else 0} landmarks; SF-TL54 has {NUM_LANDMARKS}")
    return None if np.isnan(p).all() else p


# ------------------------------------------------------------------------------------------------ corpus


def from_corpus(data_dir: str | os.PathLike, split: str | None = None, cache_dir: str | None = None,
                qc_ok_only: bool = True) -> LabelledSet:
    """Frames of a released / miniature corpus or a generated corpus (run.json), read by the project's loader.

    qc_ok_only: frames whose QC verdict is not `ok` are left out (counted by verdict): a `missing` frame holds a
    face the label file lost, so any detection there would be scored as a false positive.
    """
    from thermvision_db.tools.export import is_generated_corpus, load_rows

    rows = load_rows(data_dir, "frames", split=split, cache_dir=cache_dir)
    frames, skipped = [], Counter()
    for split_name, dataset in rows.items():
        qc_names = dataset.features["qc"].names
        labels = dataset.select_columns(["video_id", "frame_index", "faces", "qc", "head_pose"])
        for index, row in enumerate(labels):
            qc = qc_names[row["qc"]]
            if qc_ok_only and qc != "ok":
                skipped[f"qc_{qc}"] += 1
                continue
            faces = row["faces"] or []
            boxes = np.array([f["bbox"] for f in faces], np.float64).reshape(-1, 4)
            points = [None if f["landmarks"] is None else _check_points(f["landmarks"], row["video_id"])
                      for f in faces]
            pose = row.get("head_pose")
            frames.append(LabelledFrame(f"{row['video_id']}_{int(row['frame_index']):04d}",
                                        _row_image(dataset, index), boxes, points, 0, 0,
                                        None if pose is None else {k: float(v) for k, v in pose.items()}))
    kind = "generated corpus" if is_generated_corpus(data_dir) else "corpus"
    return LabelledSet(frames, {"kind": kind, "path": str(data_dir), "splits": list(rows)}, skipped)


def _row_image(dataset, index: int) -> Callable[[], np.ndarray]:
    def load():
        image = dataset[index]["image"]
        return np.asarray(image.convert("L" if image.mode in ("L", "I;16", "I") else "RGB"))

    return load


# ------------------------------------------------------------------------------------------------ COCO


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES):
    """A JSON document with a size bound and without NaN / Infinity (not JSON, though Python accepts them)."""
    if not path.is_file():
        raise LabelledSetError(f"COCO file {path} does not exist")
    size = path.stat().st_size
    if size > max_bytes:
        raise LabelledSetError(f"{path}: {size} bytes is over the {max_bytes}-byte bound for a COCO file")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise LabelledSetError(f"{path}: over the {max_bytes}-byte bound for a COCO file")
    try:
        return json.loads(data, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as err:
        raise LabelledSetError(f"{path}: not valid JSON ({err})") from None


def _face_categories(document: dict, path: Path) -> set:
    categories = document.get("categories") or []
    if not isinstance(categories, list):
        raise LabelledSetError(f"{path}: 'categories' must be a list")
    ids = [c.get("id") for c in categories if isinstance(c, dict) and isinstance(c.get("id"), (int, str))]
    faces = {c["id"] for c in categories if isinstance(c, dict) and isinstance(c.get("id"), (int, str))
             and str(c.get("name", "")).lower() == "face"}
    if faces:
        return faces
    if len(categories) == 1 and ids:
        return set(ids)  # a one-class set: its class is the face
    names = [c.get("name") for c in categories if isinstance(c, dict)]
    raise LabelledSetError(f"{path}: no category named 'face' among {names or 'no categories'}; a detection set "
                           "needs one (or exactly one category)")


def from_coco(json_path: str | os.PathLike, images_dir: str | os.PathLike,
              max_bytes: int = MAX_JSON_BYTES) -> LabelledSet:
    """A COCO detection / keypoints JSON (ours: `export --format coco`) and the folder its `file_name`s are under.

    Annotations of other categories and crowd annotations are left out (counted). Keypoints of 54 x 3 values
    become landmarks (v = 0: unlabelled); any other keypoint count with labelled points is refused."""
    path, root = Path(json_path), Path(images_dir)
    if not root.is_dir():
        raise LabelledSetError(f"--images {root} is not a folder")
    document = read_json(path, max_bytes)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list) \
            or not isinstance(document.get("annotations", []), list):
        raise LabelledSetError(f"{path}: a COCO file is an object with an 'images' list and an 'annotations' list")
    wanted, skipped = _face_categories(document, path), Counter()
    images, missing = {}, []
    for k, image in enumerate(document["images"]):
        where = f"{path}: images[{k}]"
        if not isinstance(image, dict) or not isinstance(image.get("id"), (int, str)) \
                or not isinstance(image.get("file_name"), str):
            raise LabelledSetError(f"{where}: needs an 'id' (integer or text) and a 'file_name' (text)")
        if image["id"] in images:
            raise LabelledSetError(f"{where}: image id {image['id']!r} appears twice")
        name = Path(image["file_name"])
        if name.is_absolute() or ".." in name.parts:
            raise LabelledSetError(f"{where}: file_name {image['file_name']!r} leaves the images folder: refused")
        file = root / name
        if not file.is_file():
            missing.append(image["file_name"])
            continue
        file = inside(root, file, f"{where}: file_name")
        images[image["id"]] = (file, image)
    if missing:
        raise LabelledSetError(f"{path}: {len(missing)} image(s) not found under {root}, e.g. {missing[:3]}")
    boxes = {i: [] for i in images}
    points = {i: [] for i in images}
    for k, ann in enumerate(document.get("annotations", [])):
        where = f"{path}: annotations[{k}] (id {ann.get('id') if isinstance(ann, dict) else None})"
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), (int, str)) or ann["image_id"] not in images:
            raise LabelledSetError(f"{where}: image_id {ann.get('image_id') if isinstance(ann, dict) else ann!r} "
                                   "names no image of the file")
        if not isinstance(ann.get("category_id"), (int, str)) or ann["category_id"] not in wanted:
            skipped["annotations_not_face"] += 1
            continue
        if ann.get("iscrowd"):
            skipped["annotations_crowd"] += 1
            continue
        boxes[ann["image_id"]].append(_check_box(ann.get("bbox"), where))
        points[ann["image_id"]].append(_coco_points(ann.get("keypoints"), where))
    frames = []
    for image_id, (file, image) in images.items():
        width, height = image.get("width"), image.get("height")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            width, height = read_image(file, header_only=True)
        frames.append(LabelledFrame(str(image["file_name"]), functools.partial(read_image, file),
                                    np.array(boxes[image_id], np.float64).reshape(-1, 4), points[image_id],
                                    width, height))
    return LabelledSet(frames, {"kind": "coco", "path": str(path), "images": str(root), "splits": [path.stem]},
                       skipped)


def _coco_points(keypoints, where: str) -> np.ndarray | None:
    if not keypoints:
        return None
    values = _numbers(keypoints)
    if values is None or len(values) % 3 or not np.all(np.isfinite(values)):
        raise LabelledSetError(f"{where}: keypoints must be a flat list of finite [x, y, v] triples")
    triples = values.reshape(-1, 3)
    if not (triples[:, 2] > 0).any():
        return None
    if len(triples) != NUM_LANDMARKS:
        raise LabelledSetError(f"{where}: {len(triples)} keypoints; SF-TL54 has {NUM_LANDMARKS}")
    p = triples[:, :2].copy()
    p[triples[:, 2] <= 0] = np.nan
    return p


# ------------------------------------------------------------------------------------------------ YOLO


def _yolo_face_class(folder: Path) -> int:
    """The class named 'face' in data.yaml (ours writes `names: {0: face}`), else class 0."""
    config = folder / "data.yaml"
    if not config.is_file():
        return 0
    import yaml

    try:
        names = (yaml.safe_load(config.read_text()) or {}).get("names", {})
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as err:
        raise LabelledSetError(f"{config}: not a YOLO data.yaml ({err})") from None
    items = names.items() if isinstance(names, dict) else enumerate(names or [])
    return next((int(k) for k, v in items if str(v).lower() == "face"), 0)


def _yolo_line(values: list[str], where: str, width: int, height: int):
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise LabelledSetError(f"{where}: not a YOLO line 'class cx cy w h [x y v ...]': {' '.join(values)[:80]!r}") from None
    if len(numbers) < 5 or not all(math.isfinite(v) for v in numbers) or numbers[0] != int(numbers[0]):
        raise LabelledSetError(f"{where}: a YOLO line is an integer class and 4 finite numbers, then keypoints; "
                               f"got {len(numbers)} values")
    cx, cy, w, h = numbers[1:5]
    if not all(0 <= v <= 1 for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
        raise LabelledSetError(f"{where}: box {cx, cy, w, h} is not normalised to [0, 1] with w, h > 0")
    box = np.array([(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height])
    rest = numbers[5:]
    if not rest:
        return int(numbers[0]), box, None
    per = 3 if len(rest) % 3 == 0 and len(rest) // 3 == NUM_LANDMARKS else 2 if len(rest) == 2 * NUM_LANDMARKS else 0
    if not per:
        count = len(rest) / 3 if len(rest) % 3 == 0 else len(rest) / 2
        raise LabelledSetError(f"{where}: {len(rest)} keypoint values ({count:g} points); SF-TL54 has "
                               f"{NUM_LANDMARKS} points of 'x y v' or 'x y'")
    kp = np.asarray(rest, np.float64).reshape(NUM_LANDMARKS, per)
    labelled = kp[:, 2] > 0 if per == 3 else np.ones(NUM_LANDMARKS, bool)
    if not np.all((kp[labelled, :2] >= 0) & (kp[labelled, :2] <= 1)):
        raise LabelledSetError(f"{where}: keypoints outside [0, 1]")
    points = kp[:, :2] * [width, height]
    points[~labelled] = np.nan
    return int(numbers[0]), box, None if not labelled.any() else points


def _image_files(root: Path, images_root: Path) -> list[Path]:
    """Image files under `images_root`, sorted; any symlink (file or folder) resolving outside `root` is refused,
    and symlinked folders inside it are not walked twice."""
    files = []
    for here, dirs, names in os.walk(images_root, followlinks=False):
        for name in dirs:
            if (Path(here) / name).is_symlink():
                inside(root, Path(here) / name, "folder")
        for name in names:
            path = Path(here) / name
            if path.suffix.lower() in IMAGE_SUFFIXES:
                inside(root, path, "image")
                files.append(path)
    return sorted(files)


def from_yolo(folder: str | os.PathLike, split: str | None = None) -> LabelledSet:
    """An ultralytics folder (ours: `export --format yolo|yolo-pose`): `images/<...>/x.png` with
    `labels/<...>/x.txt` lines `class cx cy w h` normalised, plus 54 `x y v` (or `x y`) keypoints for pose sets.

    An image without a label file is a frame without a face (ultralytics' background image). Symlinks and files
    resolving outside the folder are refused; other classes than the face class are left out (counted)."""
    root = Path(folder)
    images_root = root / "images" / (split or "")
    if not images_root.is_dir():
        raise LabelledSetError(f"{images_root} is not a folder; a YOLO set is images/ (+ labels/) under {root}")
    face_class, frames, skipped = _yolo_face_class(root), [], Counter()
    for file in _image_files(root, images_root):
        rel = file.relative_to(root / "images")
        label = (root / "labels" / rel).with_suffix(".txt")
        width, height = read_image(file, header_only=True)
        boxes, points = [], []
        if label.exists():
            inside(root, label, "label file")
            if label.stat().st_size > MAX_LABEL_BYTES:
                raise LabelledSetError(f"{label}: over the {MAX_LABEL_BYTES}-byte bound for a YOLO label file")
            try:
                lines = label.read_text().splitlines()
            except UnicodeDecodeError:
                raise LabelledSetError(f"{label}: not a text file") from None
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                cls, box, p = _yolo_line(line.split(), f"{label}:{number}", width, height)
                if cls != face_class:
                    skipped["boxes_not_face"] += 1
                    continue
                boxes.append(box)
                points.append(p)
        frames.append(LabelledFrame(str(rel), functools.partial(read_image, file), np.array(boxes, np.float64).reshape(-1, 4),
                                    points, width, height))
    if not frames:
        raise LabelledSetError(f"{images_root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    splits = sorted({Path(f.frame_id).parts[0] for f in frames if len(Path(f.frame_id).parts) > 1}) or [split or "."]
    return LabelledSet(frames, {"kind": "yolo", "path": str(root), "splits": splits}, skipped)


def as_labelled_set(data) -> LabelledSet:
    """A LabelledSet as it is; a path is read as a corpus folder (released, miniature or generated)."""
    if isinstance(data, LabelledSet):
        return data
    if isinstance(data, (str, os.PathLike)):
        return from_corpus(data)
    raise LabelledSetError(f"data must be a LabelledSet or a corpus folder, got {type(data).__name__}")
