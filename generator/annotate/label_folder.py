"""Label a user's own thermal frames (a folder of images, or a video) the way the release was labelled.

Output, in the release's layout: `labels/<frame>.txt` with one YOLO line per face (`0 xc yc w h`, normalised,
`%g`), or YOLO-pose with the 54 SF-TL54 points (`x y 2` each) when a landmarker is given; no file for a frame
without a face (as the release). A video's frames are written as `Extracted_frames/frame_0000.png` (zero-based,
4 digits). `annotations.json` names the models (path, sha256, kind, settings) and the frames without a face.
The loader's own parser (`thermvision_db.schema.labels.parse_yolo_text`) reads the files back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from generator.annotate.labels import Detector, Landmarker
from generator.annotate.models import model_record
from thermvision_db.errors import InputError, MissingFileError
from thermvision_db.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
MANIFEST = "annotations.json"


def yolo_face_line(box_xywh, width: int, height: int, landmarks=None) -> str:
    """`0 xc yc w h` (normalised, %g as the release prints it), plus 54 `x y 2` when landmarks are given."""
    x, y, w, h = (float(v) for v in np.asarray(box_xywh, np.float64).reshape(4))
    values = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
    text = "0 " + " ".join(f"{v:g}" for v in values)
    if landmarks is not None:
        pts = np.asarray(landmarks, np.float64).reshape(-1, 2) / [width, height]
        text += "".join(f" {px:g} {py:g} 2" for px, py in pts)
    return text


def _frames(source: Path, out: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(stem, image) for each frame: the folder's images in name order, or the video's frames (written out)."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        for path in files:
            try:
                with Image.open(path) as picture:
                    yield path.stem, np.asarray(picture.convert("RGB"))
            except OSError as err:
                raise InputError(f"{path}: not a readable image ({err})") from None
        return
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{source}: give a folder of frames or a video ({', '.join(VIDEO_SUFFIXES)})")
    from thermvision_db.io.decode import iter_frames

    for index, frame in enumerate(iter_frames(str(source), name=str(source))):
        stem = f"frame_{index:04d}"
        buffer = _png(frame)
        atomic_write_bytes(out / "Extracted_frames" / f"{stem}.png", buffer)
        yield stem, frame


def _png(frame: np.ndarray) -> bytes:
    import io

    data = io.BytesIO()
    Image.fromarray(frame).save(data, format="PNG")
    return data.getvalue()


def label_frames(source: str | os.PathLike, out: str | os.PathLike, detector: Detector,
                 landmarker: Landmarker | None = None) -> dict:
    """Write `out/labels/*.txt` (and `annotations.json`) for every frame of `source`; return the manifest."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise MissingFileError(f"{source} does not exist; give a folder of frames or a video")
    missing, multiple, count = [], [], 0
    for stem, image in _frames(source, out):
        count += 1
        height, width = image.shape[:2]
        faces = list(detector(image))
        if not faces:
            missing.append(stem)
            continue
        multiple += [stem] if len(faces) > 1 else []
        lines = [yolo_face_line(f.box_xywh, width, height,
                                None if landmarker is None else landmarker(image, f.box_xywh)) for f in faces]
        atomic_write_text(out / "labels" / f"{stem}.txt", "".join(line + "\n" for line in lines))
    manifest = {"source": str(source), "frames": count, "labelled": count - len(missing), "missing": missing,
                "multiple": multiple, "detector": model_record(detector),
                "landmarker": None if landmarker is None else model_record(landmarker),
                "format": "YOLO-pose, 54 SF-TL54 points (x y 2)" if landmarker is not None else "YOLO boxes"}
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
