"""The 2D still categories (frontal, accessories, beard, mix, head poses): one folder per category.

Their layout inside the release is not documented, so this reads any folder whose name names a category
(`Frontal pose`, `facial_accessories`, `Head poses`, ...) and takes gender from a path component when present.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from thermvision_db.schema.members import ARCHIVES, GENDER_ROOT, MEMBERS
from thermvision_db.sources.base import SourceError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_CATEGORY_WORDS = [
    ("head_poses", ("head pose", "headpose", "head poses", "head_pose")),
    ("accessories", ("accessor", "glasses", "mask")),
    ("frontal", ("frontal", "front")),
    ("beard", ("beard",)),
    ("mix", ("mix",)),
]


def category_of(folder_name: str) -> str | None:
    words = re.sub(r"[_\-]+", " ", folder_name.lower())
    for category, keys in _CATEGORY_WORDS:
        if any(key in words for key in keys):
            return category
    return None


def gender_of(path: Path) -> str | None:
    for part in path.parts:
        token = re.sub(r"[^a-z]", "", part.lower())
        if token in {"female", "females", "women", "woman", "femalesubjects", "f"}:
            return "female"
        if token in {"male", "males", "men", "man", "malesubjects", "m"}:
            return "male"
    return None


# `Female Subjects/Set 1 Cropped Headpose Variations` names a head-pose category word but holds video frames
VIDEO_SET_FOLDERS = frozenset(m.video_member.split("/")[1] for m in MEMBERS)


def category_folders(data_dir: Path) -> list[tuple[str, Path]]:
    """Category folders directly under `data_dir`, or one level down (e.g. `2D images/Beard`).

    The released video trees (`Female Subjects/Set 1 ...`) are never taken for stills: their frames are not
    2D images, and a folder holding only them is refused.
    """
    found = []
    levels = [p for p in sorted(data_dir.iterdir()) if p.is_dir() and p.name not in GENDER_ROOT.values()]
    for level in (data_dir, *levels):
        for folder in sorted(p for p in level.iterdir() if p.is_dir() and not is_hidden(Path(p.name))):
            category = category_of(folder.name)
            if category is not None and folder.name not in VIDEO_SET_FOLDERS:
                found.append((category, folder))
        if found:
            return found
    videos = [name for name in (*GENDER_ROOT.values(), *ARCHIVES.values()) if (data_dir / name).exists()]
    hint = (f" {data_dir} holds the released videos ({', '.join(videos)}): their frames are the `frames` "
            "configuration; the 2D stills are a separate download.") if videos else ""
    raise SourceError(
        f"no 2D image category folders under {data_dir}: expected folders named like "
        f"'Frontal pose', 'Facial accessories', 'Beard', 'Mix', 'Head poses'.{hint}"
    )


def is_hidden(relative: Path) -> bool:
    """`datasets`' data-file rule: a part starting with `.` or `__` is hidden (macOS `._x.png` companions,
    `.DS_Store`, `__MACOSX/`, `.ipynb_checkpoints/`)."""
    return any(part.startswith((".", "__")) for part in relative.parts)


def image_rows(folders: list[tuple[str, Path]]) -> Iterator[tuple[str, dict]]:
    for category, folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(path.relative_to(folder)) and path.is_file():
                relative = path.relative_to(folder.parent)
                yield str(relative), {
                    "image": {"path": str(path), "bytes": None},
                    "category": category,
                    "gender": gender_of(path.relative_to(folder.parent)),
                    "path": str(relative),
                }
