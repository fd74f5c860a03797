"""Where the gender benchmark's images come from: corpora (released, miniature, generated) and real sets.

Every source becomes a list of `Sample`s (how to load the image, gender 0 female / 1 male, subject id, origin).
Real sets are read from one of three layouts (docs/downstream-gender.md):

- `ROOT/female/<subject>/*.png|jpg` and `ROOT/male/<subject>/...`: the subfolder names the subject;
- `ROOT/female/<subject>_<anything>.png` and `ROOT/male/...`: the file name up to its first `_` names the subject;
- a CSV file with the header `path,gender,subject` (paths relative to the CSV's folder, gender female/male/f/m/0/1).

Nothing is downloaded. Links out of ROOT, corrupt or over-large images, a class with no images and a subject in
both classes are refused with one line naming the file, folder or subject.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from thermvision_db.errors import ThermVisionError

GENDERS = ("female", "male")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # an 8000x8000 image; a larger one is refused before it is decoded (memory bound)
CSV_GENDER = {"female": 0, "f": 0, "0": 0, "male": 1, "m": 1, "1": 1}


class GenderDataError(ThermVisionError, ValueError):
    """A gender benchmark source that cannot be used: missing path, bad layout, corrupt image, bad split."""


@dataclass(frozen=True)
class Sample:
    """One image: `load()` gives a PIL image, `gender` 0 female / 1 male, `subject` unique across sources."""

    load: Callable[[], Image.Image]
    gender: int
    subject: str
    origin: str  # "synthetic" or "real"
    name: str  # file or row, for error messages


def open_image(path: Path) -> Image.Image:
    """The image at `path` as gray ('L'), fully decoded; corrupt, unreadable or over-large files are one line."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise GenderDataError(f"image {path} is {image.width}x{image.height}, over the {MAX_PIXELS:,}-pixel "
                                      f"bound; downscale it first")
            image.load()
            return image.convert("L")
    except GenderDataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise GenderDataError(f"image {path} cannot be read: {type(err).__name__}: {str(err)[:200]}") from None


def _inside(path: Path, root: Path, option: str) -> Path:
    """`path` resolved; a link (or `..`) leading out of `root` is refused."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise GenderDataError(f"{option}: {path} leads outside {root} (to {resolved}); links out of the set are refused")
    return resolved


def _loader(path: Path) -> Callable[[], Image.Image]:
    return lambda: open_image(path)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def read_real_folder(root: Path, option: str = "--real") -> list[Sample]:
    """ROOT/female, ROOT/male with subject subfolders or `<subject>_*.png` names."""
    root = root.resolve()
    samples: list[Sample] = []
    for name in GENDERS:
        if not (root / name).is_dir():
            there = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())[:8]) or "nothing"
            raise GenderDataError(f"{option} {root}: no {name}/ folder (expected female/ and male/; found {there})")
    for gender, name in enumerate(GENDERS):
        folder = root / name
        _inside(folder, root, option)
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        found = []
        for sub in subfolders:
            _inside(sub, root, option)
            found += [(sub.name, p) for p in _images(sub)]
        for path in _images(folder):
            subject, sep, _ = path.stem.partition("_")
            if not sep or not subject:
                raise GenderDataError(f"{option}: {path} has no subject id; name files <subject>_<anything>"
                                      f"{path.suffix} or put them in {name}/<subject>/")
            found.append((subject, path))
        if not found:
            raise GenderDataError(f"{option}: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for subject, path in found:
            samples.append(Sample(_loader(_inside(path, root, option)), gender, subject, "real", str(path)))
    return samples


def read_real_csv(path: Path, option: str = "--real") -> list[Sample]:
    """A CSV with the header path,gender,subject; paths relative to the CSV's folder, inside it."""
    root = path.resolve().parent
    samples = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "gender", "subject"} <= set(reader.fieldnames):
            raise GenderDataError(f"{option} {path}: the header must name path,gender,subject "
                                  f"(found {','.join(reader.fieldnames or [])})")
        for line, row in enumerate(reader, start=2):
            gender = CSV_GENDER.get(str(row["gender"]).strip().lower())
            if gender is None:
                raise GenderDataError(f"{option} {path} line {line}: gender {row['gender']!r} is not female/male/f/m/0/1")
            if not str(row["subject"] or "").strip():
                raise GenderDataError(f"{option} {path} line {line}: empty subject")
            image = _inside(root / row["path"], root, option)
            if not image.is_file():
                raise GenderDataError(f"{option} {path} line {line}: image {row['path']} does not exist")
            samples.append(Sample(_loader(image), gender, row["subject"].strip(), "real", str(image)))
    if not samples:
        raise GenderDataError(f"{option} {path}: no rows")
    return samples


def read_real(path: str | os.PathLike, option: str = "--real") -> list[Sample]:
    """A real set by path: a folder (female/, male/) or a CSV file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise GenderDataError(f"{option} {path} does not exist")
    samples = read_real_csv(path, option) if path.is_file() else read_real_folder(path, option)
    check_subject_genders(samples, option)
    return samples


def check_subject_genders(samples: list[Sample], option: str) -> None:
    genders: dict[str, set[int]] = {}
    for sample in samples:
        genders.setdefault(sample.subject, set()).add(sample.gender)
    both = sorted(s for s, g in genders.items() if len(g) > 1)
    if both:
        raise GenderDataError(f"{option}: subject {both[0]} appears as both female and male"
                              + (f" (and {len(both) - 1} more: {', '.join(both[1:4])})" if len(both) > 1 else ""))


def _row_loader(dataset, index: int, crop: str) -> Callable[[], Image.Image]:
    def load():
        row = dataset[index]
        image = row["image"].convert("L")
        if crop == "face" and row["faces"]:
            x, y, w, h = row["faces"][0]["bbox"]
            m = 0.1 * max(w, h)
            box = (max(0, int(x - m)), max(0, int(y - m)), min(image.width, int(x + w + m)), min(image.height, int(y + h + m)))
            if box[2] > box[0] and box[3] > box[1]:
                image = image.crop(box)
        return image
    return load


def read_corpus(path: str | os.PathLike, frames_per_subject: int, option: str = "--synthetic", tag: str = "",
                crop: str = "face", cache_dir: str | None = None, origin: str = "synthetic") -> list[Sample]:
    """A released, miniature or generated corpus folder through the project's loader; identity is the subject.

    Only `frames_per_subject` frames per identity (evenly over its videos in order) are kept and decoded."""
    path = Path(path).expanduser()
    if not path.exists():
        raise GenderDataError(f"{option} {path} does not exist")
    from generator.evaluate.frames import frame_rows

    try:
        dataset = frame_rows(path, cache_dir=cache_dir)
    except ThermVisionError as err:
        hint = (" (a real set in the female/ male/ layout is given with --real)"
                if all((path / g).is_dir() for g in GENDERS) else "")
        raise GenderDataError(f"{option} {path}: {err}{hint}") from None
    identity_names = dataset.features["identity"].names if hasattr(dataset.features["identity"], "names") else None
    identities = [identity_names[i] if identity_names else str(i) for i in dataset["identity"]]
    gender_feature = dataset.features["gender"]
    genders = [gender_feature.int2str(g) if hasattr(gender_feature, "int2str") else g for g in dataset["gender"]]
    videos, frames = dataset["video_id"], dataset["frame_index"]
    order = sorted(range(len(identities)), key=lambda i: (identities[i], videos[i], frames[i]))
    by_subject: dict[str, list[int]] = {}
    for i in order:
        by_subject.setdefault(identities[i], []).append(i)
    samples = []
    for subject, rows in sorted(by_subject.items()):
        for i in evenly(rows, frames_per_subject):
            gender = GENDERS.index(genders[i])
            samples.append(Sample(_row_loader(dataset, i, crop), gender, f"{tag}{subject}", origin, f"{path} row {i}"))
    if not samples:
        raise GenderDataError(f"{option} {path}: no frames")
    return samples


def evenly(items: list, count: int) -> list:
    """`count` items spread evenly over `items` (all of them when there are fewer)."""
    if count <= 0 or len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def cap_frames(samples: list[Sample], frames_per_subject: int) -> list[Sample]:
    """At most `frames_per_subject` samples per subject, evenly spread in their order."""
    by_subject: dict[str, list[Sample]] = {}
    for sample in samples:
        by_subject.setdefault(sample.subject, []).append(sample)
    return [s for subject in sorted(by_subject) for s in evenly(by_subject[subject], frames_per_subject)]
