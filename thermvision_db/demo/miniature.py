"""Write a miniature ThermVision-DB in the exact released layout, quirks included, with known labels.

Tests and the demo need a corpus that cannot be downloaded here. This one uses the real member paths (the
double space, Face/Thermal folders, lower-case and `-n` names, `Subject-23-n`), H.264 MP4s, PNG frames and
YOLO label files, and places each face at a box it returns as ground truth. Chosen frames lose their label
file (a detector miss), get a second box (a double detection) or lose their PNG (decoded from the MP4).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from thermvision_db.errors import InputError
from thermvision_db.io.encode import write_mp4
from thermvision_db.schema.members import ARCHIVES, MEMBERS, Member

DEFAULT_IDENTITIES = ("F_01", "F_23", "F_16", "M_10", "M_24")
DEFAULT_MISSING = {"M_10_S1": (3, 4), "M_24_S1": (0,)}
DEFAULT_MULTIPLE = {"F_01_S1": (5,)}
DEFAULT_MISSING_PNG = {"F_23_S2": (2,)}


@dataclass
class MiniatureCorpus:
    """Where the corpus was written and the labels placed in it (COCO pixels, per video, per frame)."""

    root: Path
    members: list[Member]
    size: int
    frames_per_video: int
    boxes: dict[str, list[list[float]]] = field(default_factory=dict)  # the face's true box per frame
    landmarks: dict[str, list[list[list[float]]]] = field(default_factory=dict)
    missing: dict[str, tuple[int, ...]] = field(default_factory=dict)
    multiple: dict[str, tuple[int, ...]] = field(default_factory=dict)
    missing_png: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def identities(self) -> list[str]:
        return sorted({m.identity for m in self.members})


def canonical_landmarks() -> np.ndarray:
    """54 SF-TL54 points in a unit face box (x, y in [0, 1]): jaw, brows, nose, eyes, mouth."""
    jaw = [(0.5 + 0.48 * math.cos(a), 0.42 + 0.55 * math.sin(a)) for a in np.linspace(math.pi, 0, 17)]
    brow_r = [(0.18 + 0.06 * i, 0.30 - 0.02 * math.sin(i * math.pi / 4)) for i in range(5)]
    brow_l = [(0.58 + 0.06 * i, 0.30 - 0.02 * math.sin(i * math.pi / 4)) for i in range(5)]
    bridge = [(0.5, 0.36 + 0.06 * i) for i in range(4)]
    lower = [(0.42 + 0.04 * i, 0.6 + 0.015 * (2 - abs(2 - i))) for i in range(5)]

    def eye(cx):
        return [(cx + 0.08 * math.cos(a), 0.40 + 0.03 * math.sin(a)) for a in np.linspace(math.pi, -math.pi, 7)[:-1]]

    mouth = [(0.36, 0.75), (0.5, 0.71), (0.64, 0.75), (0.5, 0.81), (0.5, 0.745), (0.5, 0.765)]
    points = np.asarray(jaw + brow_r + brow_l + bridge + lower + eye(0.32) + eye(0.68) + mouth, dtype=np.float64)
    assert points.shape == (54, 2)
    return points


def face_box(frame: int, num_frames: int, size: int, set_number: int, subject: int) -> list[float]:
    """Integer-pixel COCO box of the face in one frame: head-pose videos sway, expression videos barely move."""
    phase = 2 * math.pi * frame / max(num_frames, 1) + subject
    amplitude = 0.10 if set_number == 1 else 0.02
    w = round(size * (0.46 + 0.06 * math.sin(phase)))
    h = round(size * (0.58 + 0.03 * math.cos(phase)))
    cx = size * (0.5 + amplitude * math.sin(phase))
    cy = size * (0.58 + 0.25 * amplitude * math.cos(phase))
    x, y = round(cx - w / 2), round(cy - h / 2)
    x = min(max(x, 0), size - w)
    y = min(max(y, 0), size - h)
    return [float(x), float(y), float(w), float(h)]


def render_thermal_face(size: int, box: Sequence[float], subject: int) -> np.ndarray:
    """A white-hot thermal-looking face filling the ellipse inscribed in `box`, on a cool background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = 45 + 25 * (yy / size) + 6 * np.sin(xx / 7 + subject)  # cool, slightly structured background
    x, y, w, h = box
    cx, cy, rx, ry = x + w / 2, y + h / 2, w / 2, h / 2
    inside = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0
    radial = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    face = 215 - 40 * radial**2
    for ex in (cx - 0.18 * w, cx + 0.18 * w):  # inner canthi run hot in LWIR
        face += 30 * np.exp(-(((xx - ex) / (0.06 * w)) ** 2 + ((yy - (y + 0.40 * h)) / (0.04 * h)) ** 2))
    face -= 35 * np.exp(-(((xx - cx) / (0.05 * w)) ** 2 + ((yy - (y + 0.58 * h)) / (0.07 * h)) ** 2))  # cold nose
    face -= 25 * np.exp(-(((xx - cx) / (0.14 * w)) ** 2 + ((yy - (y + 0.76 * h)) / (0.03 * h)) ** 2))  # mouth
    image = np.where(inside, face, image)
    noise = np.random.default_rng([subject, int(x), int(y), int(w)]).normal(0.0, 2.0, image.shape)  # sensor noise (NETD)
    gray = np.clip(image + noise, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _select_members(identities: Iterable[str] | int | None) -> list[Member]:
    all_ids = sorted({m.identity for m in MEMBERS})
    if identities is None:
        wanted = list(DEFAULT_IDENTITIES)
    elif isinstance(identities, int):
        females = [i for i in all_ids if i.startswith("F")]
        males = [i for i in all_ids if i.startswith("M")]
        interleaved = [x for pair in zip(females, males) for x in pair]
        wanted = interleaved[:identities]
    else:
        wanted = list(identities)
    unknown = sorted(set(wanted) - set(all_ids))
    if unknown:
        raise InputError(f"unknown identities {unknown}; the corpus has {all_ids[0]} ... {all_ids[-1]}")
    return [m for m in MEMBERS if m.identity in wanted]


def write_miniature(
    root: str | Path,
    identities: Iterable[str] | int | None = None,
    frames_per_video: int = 8,
    size: int = 64,
    zips: bool = True,
    folders: bool = True,
    missing: Mapping[str, Sequence[int]] | None = None,
    multiple: Mapping[str, Sequence[int]] | None = None,
    missing_png: Mapping[str, Sequence[int]] | None = None,
    landmarks: bool = False,
    fps: float = 30.0,
) -> MiniatureCorpus:
    """Write the miniature corpus under `root` as the two zips and/or their extracted folders.

    `missing`, `multiple` and `missing_png` map video ids (`F_01_S1`) to frame indices; defaults apply only to
    videos that are written. `landmarks=True` appends 54 YOLO-pose points to every label line.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    members = _select_members(identities)
    ids = {m.video_id for m in members}

    def pick(given, default):
        table = default if given is None else given
        return {k: tuple(v) for k, v in table.items() if k in ids}

    corpus = MiniatureCorpus(
        root, members, size, frames_per_video,
        missing=pick(missing, DEFAULT_MISSING), multiple=pick(multiple, DEFAULT_MULTIPLE),
        missing_png=pick(missing_png, DEFAULT_MISSING_PNG),
    )
    files: dict[str, dict[str, bytes]] = {"F": {}, "M": {}}
    template = canonical_landmarks()
    for member in members:
        frames, boxes, points = [], [], []
        for i in range(frames_per_video):
            box = face_box(i, frames_per_video, size, member.set, member.subject)
            frames.append(render_thermal_face(size, box, member.subject))
            boxes.append(box)
            points.append((template * box[2:] + box[:2]).round(4).tolist())
        corpus.boxes[member.video_id] = boxes
        corpus.landmarks[member.video_id] = points
        out = files[member.gender]
        write_mp4(root / ".mini.mp4", frames, fps=fps)
        out[member.video_member] = (root / ".mini.mp4").read_bytes()
        (root / ".mini.mp4").unlink()
        # a decoy video beside the real one: loaders that glob for MP4s pick it up
        out[member.video_member.rsplit("/", 1)[0] + "/preview_driving.mp4"] = out[member.video_member]
        for i, frame in enumerate(frames):
            if i not in corpus.missing_png.get(member.video_id, ()):
                buffer = io.BytesIO()
                Image.fromarray(frame).save(buffer, format="PNG")
                out[member.frame_png(i)] = buffer.getvalue()
            if i in corpus.missing.get(member.video_id, ()):
                continue
            lines = [_yolo_line(boxes[i], size, points[i] if landmarks else None)]
            if i in corpus.multiple.get(member.video_id, ()):
                spurious = [2.0, 2.0, float(size // 5), float(size // 5)]  # a small false positive in a corner
                lines.append(_yolo_line(spurious, size, points[i] if landmarks else None))
            out[member.label_txt(i)] = ("\n".join(lines) + "\n").encode()
    for gender, members_files in files.items():
        if not members_files:
            continue
        if folders:
            for name, data in members_files.items():
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        if zips:
            with zipfile.ZipFile(root / ARCHIVES[gender], "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, data in sorted(members_files.items()):
                    archive.writestr(name, data)
    if zips:
        _write_marker(root, [ARCHIVES[g] for g, f in files.items() if f])
    return corpus


# ------------------------------------------------------------------------------------------------ the marker
MARKER = "MINIATURE.json"  # beside the zips: their sha256 as written, so `verify` can tell the miniature apart
MARKER_MAX_BYTES = 64 * 1024


def _write_marker(root: Path, archives: Sequence[str]) -> None:
    from thermvision_db.io.atomic import atomic_write_bytes

    record = {"written_by": "thermvision_db.miniature.write_miniature (thermvision-db miniature)",
              "sha256": {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in archives}}
    atomic_write_bytes(root / MARKER, (json.dumps(record, indent=1) + "\n").encode())


def miniature_digests(root: str | Path) -> dict[str, str]:
    """The zips' sha256 recorded by `write_miniature` in `root` ({} when there is no readable marker).

    The marker only names what the miniature wrote; `verify` still hashes every zip and accepts one as the
    miniature only when its hash equals the recorded one, so a marker beside a damaged release changes nothing.
    """
    path = Path(root) / MARKER
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MARKER_MAX_BYTES:
            return {}
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    digests = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(digests, dict):
        return {}
    return {k: v for k, v in digests.items() if isinstance(k, str) and isinstance(v, str)}


def _yolo_line(box: Sequence[float], size: int, points: Sequence[Sequence[float]] | None) -> str:
    x, y, w, h = box
    values = [(x + w / 2) / size, (y + h / 2) / size, w / size, h / size]
    if points is not None:
        values += [v / size for p in points for v in p]
    return "0 " + " ".join(f"{v:g}" for v in values)


def check_miniature_target(root: str | Path) -> Path:
    """The folder `thermvision-db miniature` may write: new, empty, or an earlier miniature (never a real copy)."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is a file; give a folder for the miniature corpus (it is created)")
    if root.is_dir() and any(root.iterdir()) and not miniature_digests(root):
        raise InputError(f"{root} is not empty and holds no miniature corpus ({MARKER}); the miniature would overwrite "
                         "its files (a released copy's zips included): give a new or empty folder")
    return root
