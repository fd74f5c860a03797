"""Two corpora side by side (usually released vs generated): one picture, the numbers as JSON, a short report.

Works over any two iterables of frame rows in the shared schema (`thermvision_db.schema.features.frame_features`): a
`Dataset` or `IterableDataset` from `load_dataset(..., "frames" | "synthetic")`, or plain dicts. Rows are read
once, in order; a video's rows are expected in frame order (the loaders yield them so), because jitter, frame
change and box jumps compare each frame with the previous frame of its video. Nothing but a fixed-size sample of
frames is kept, so a full corpus fits in memory.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from generator.evaluate.frames import EvaluationError
from generator.evaluate.plots import bar_chart
from generator.evaluate.realism import INCEPTION_SIZE, RealismUnavailable, fid_kid
from generator.evaluate.stability import JUMP_THRESHOLD
from thermvision_db.io.atomic import atomic_write_bytes, atomic_write_text
from thermvision_db.schema.labels import QC_NAMES
from thermvision_db.tools.label_names import label_names, named_frame_row
from thermvision_db.tools.pictures import contact_sheet, draw_annotations

BOX_BINS = np.linspace(0.0, 1.0, 11)  # box width/height/centre as a fraction of the frame side, 10 bins
INTENSITY_BINS = 32  # gray-level histogram bins (8 levels each)


def _gray(image: Any) -> np.ndarray:
    """A decoded or undecoded `datasets.Image` value (PIL, array, {"bytes", "path"}) as a gray uint8 array."""
    if isinstance(image, Mapping):
        image = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"))
    array = np.asarray(image)
    return array if array.ndim == 2 else np.asarray(Image.fromarray(array.astype(np.uint8)).convert("L"))


@dataclass
class CorpusStats:
    """Running statistics of one corpus, filled row by row by `add`."""

    name: str
    max_images: int = 500
    image_size: int = INCEPTION_SIZE
    samples: int = 4
    frames: int = 0
    videos: set = field(default_factory=set)
    identities: set = field(default_factory=set)
    qc: Counter = field(default_factory=Counter)
    boxes: list = field(default_factory=list)  # first face per frame: (w, h, cx, cy) as fractions, (w, h) pixels
    intensity: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    jitter_steps: list = field(default_factory=list)
    changes: list = field(default_factory=list)
    centre_moves: list = field(default_factory=list)
    sample_pictures: list = field(default_factory=list)
    sample_captions: list = field(default_factory=list)
    fid_images: list = field(default_factory=list)
    _last: dict = field(default_factory=dict)  # video_id -> (landmarks, gray frame, box centre) of its previous frame
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one named frame row (see `thermvision_db.tools.label_names.named_frame_row`)."""
        gray = _gray(row["image"])
        height, width = gray.shape
        video_id = row["video_id"]
        if video_id not in self.videos and len(self.sample_pictures) < self.samples:
            self.sample_pictures.append(draw_annotations(row["image"] if isinstance(row["image"], Image.Image) else gray,
                                                         row["faces"], row["qc"]))
            self.sample_captions.append(f"{video_id}/{row['frame_index']}")
        self.frames += 1
        self.videos.add(video_id)
        self.identities.add(row["identity"])
        self.qc[row["qc"]] += 1
        self.intensity += np.bincount(gray.ravel(), minlength=256)
        face = row["faces"][0] if row["faces"] else None
        landmarks = None if face is None or face.get("landmarks") is None else np.asarray(face["landmarks"], np.float64)
        centre = None
        if face is not None:
            x, y, w, h = map(float, face["bbox"])
            centre = np.array([(x + w / 2) / width, (y + h / 2) / height])
            self.boxes.append((w / width, h / height, centre[0], centre[1], w, h))
        previous = self._last.get(video_id)
        if previous is not None:
            last_points, last_gray, last_centre = previous
            if landmarks is not None and last_points is not None:
                self.jitter_steps.append(float(np.linalg.norm(landmarks - last_points, axis=1).mean()))
            if last_gray.shape == gray.shape:
                self.changes.append(float(np.abs(gray.astype(np.float64) - last_gray).mean()))
        if centre is not None and previous is not None and previous[2] is not None:
            self.centre_moves.append(float(np.linalg.norm((centre - previous[2]) * [width, height]) / max(width, height)))
        self._last[video_id] = (landmarks, gray, centre if centre is not None else (previous[2] if previous else None))
        self._sample_for_fid(gray)

    def _sample_for_fid(self, gray: np.ndarray) -> None:
        """Reservoir sample of `max_images` frames at the feature extractor's size, the same for any corpus order."""
        small = np.asarray(Image.fromarray(gray).resize((self.image_size, self.image_size), Image.BILINEAR))
        if len(self.fid_images) < self.max_images:
            self.fid_images.append(small)
        else:
            slot = int(self._rng.integers(0, self.frames))
            if slot < self.max_images:
                self.fid_images[slot] = small

    def summary(self) -> dict:
        """The numbers shown in the picture and written to JSON."""
        if not self.frames:
            raise EvaluationError(f"corpus {self.name!r} has no frame rows")
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 6)
        qc_names = list(dict.fromkeys(QC_NAMES + sorted(map(str, self.qc))))

        def histogram(values: np.ndarray) -> dict:
            counts = np.histogram(np.clip(values, 0, 1), bins=BOX_BINS)[0]
            return {"edges": BOX_BINS.round(3).tolist(), "counts": counts.tolist(),
                    "fraction": (counts / max(len(values), 1)).tolist()}

        def mean(values) -> float | None:
            return float(np.mean(values)) if len(values) else None

        levels = np.arange(256)
        total = self.intensity.sum()
        intensity_mean = float((levels * self.intensity).sum() / total)
        intensity_std = float(np.sqrt(((levels - intensity_mean) ** 2 * self.intensity).sum() / total))
        coarse = self.intensity.reshape(INTENSITY_BINS, -1).sum(axis=1)
        moves = np.asarray(self.centre_moves)
        return {
            "frames": self.frames,
            "videos": len(self.videos),
            "identities": len(self.identities),
            "qc_counts": {name: int(self.qc.get(name, 0)) for name in qc_names},
            "qc_rates": {name: self.qc.get(name, 0) / self.frames for name in qc_names},
            "box": {
                "frames_with_box": len(boxes),
                "mean_w_px": mean(boxes[:, 4]), "mean_h_px": mean(boxes[:, 5]),
                "mean_w": mean(boxes[:, 0]), "mean_h": mean(boxes[:, 1]),
                "mean_cx": mean(boxes[:, 2]), "mean_cy": mean(boxes[:, 3]),
                "hist_w": histogram(boxes[:, 0]), "hist_h": histogram(boxes[:, 1]),
                "hist_cx": histogram(boxes[:, 2]), "hist_cy": histogram(boxes[:, 3]),
            },
            "intensity": {"mean": intensity_mean, "std": intensity_std,
                          "edges": np.linspace(0, 256, INTENSITY_BINS + 1).tolist(),
                          "fraction": (coarse / total).tolist()},
            "temporal": {
                "landmark_jitter_px": mean(self.jitter_steps),
                "frame_change": mean(self.changes),
                "box_jumps": int((moves > JUMP_THRESHOLD).sum()),
                "box_jumps_per_100_frames": 100.0 * int((moves > JUMP_THRESHOLD).sum()) / self.frames,
                "mean_centre_move": mean(moves),
            },
        }


def collect(rows: Iterable[Mapping[str, Any]], name: str, max_images: int = 500, image_size: int = INCEPTION_SIZE,
            samples: int = 4, progress: bool = False) -> CorpusStats:
    """Read every row once into a CorpusStats; ClassLabel ids are named from the rows' `features` when they have them."""
    names = label_names(getattr(rows, "features", None))
    stats = CorpusStats(name, max_images=max_images, image_size=image_size, samples=samples)
    total = len(rows) if hasattr(rows, "__len__") else None
    for row in tqdm(rows, desc=f"reading {name}", total=total, disable=not progress):
        stats.add(named_frame_row(row, names=names))
    return stats


# ---------------------------------------------------------------------------------------------- picture and report
def _chart(labels: list[str], series: dict[str, list[float]], title: str, width: int, height: int = 240) -> Image.Image:
    return Image.open(io.BytesIO(bar_chart(labels, series, title, width=width, height=height))).convert("RGB")


def _text_panel(lines: list[str], width: int) -> Image.Image:
    lines = [part for line in lines for part in textwrap.wrap(line, max(20, (width - 20) // 6)) or [""]]
    panel = Image.new("RGB", (width, 16 * len(lines) + 12), "white")
    draw = ImageDraw.Draw(panel)
    for i, line in enumerate(lines):
        draw.text((10, 6 + 16 * i), line, fill="black")
    return panel


def _stack(rows: Sequence[Sequence[Image.Image]], width: int) -> Image.Image:
    """Panels left to right in each row, rows top to bottom, on white."""
    heights = [max(p.height for p in row) for row in rows]
    canvas = Image.new("RGB", (width, sum(heights)), "white")
    top = 0
    for row, height in zip(rows, heights):
        left = 0
        for panel in row:
            canvas.paste(panel, (left, top))
            left += panel.width
        top += height
    return canvas


def comparison_picture(stats: Sequence[CorpusStats], numbers: Mapping[str, dict], realism: Mapping[str, Any],
                       half: int = 400) -> Image.Image:
    """Sample frames with boxes and landmarks side by side, then the histograms and rates, corpus against corpus."""
    names = [s.name for s in stats]
    sheets = []
    for s in stats:
        sheet = contact_sheet(s.sample_pictures, s.sample_captions, columns=2, tile=half // 2)
        title = _text_panel([f"{s.name}: {s.frames} frames, {len(s.videos)} videos, {len(s.identities)} identities"], half)
        sheets.append(_stack([[title], [sheet]], half))
    bins = [f"{a:.1f}-{b:.1f}" for a, b in zip(BOX_BINS[:-1], BOX_BINS[1:])]

    def hist(key: str) -> dict[str, list[float]]:
        return {n: numbers[n]["box"][key]["fraction"] for n in names}

    charts = [
        [_chart(bins, hist("hist_w"), "Box width / frame width (fraction of boxes)", half),
         _chart(bins, hist("hist_h"), "Box height / frame height", half)],
        [_chart(bins, hist("hist_cx"), "Box centre x / frame width", half),
         _chart(bins, hist("hist_cy"), "Box centre y / frame height", half)],
        [_chart([f"{int(e)}" for e in numbers[names[0]]["intensity"]["edges"][:-1]],
                {n: numbers[n]["intensity"]["fraction"] for n in names}, "Gray-level histogram (fraction of pixels)", 2 * half)],
        [_chart(list(numbers[names[0]]["qc_rates"]), {n: list(numbers[n]["qc_rates"].values()) for n in names},
                "QC rates (fraction of frames)", half),
         _chart(["jitter px", "frame change", "jumps/100"],
                {n: [numbers[n]["temporal"]["landmark_jitter_px"] or 0.0, numbers[n]["temporal"]["frame_change"] or 0.0,
                     numbers[n]["temporal"]["box_jumps_per_100_frames"]] for n in names}, "Temporal stability", half)],
    ]
    text = [_realism_line(realism, names)]
    text += [f"{n}: mean box {numbers[n]['box']['mean_w_px'] or 0:.1f} x {numbers[n]['box']['mean_h_px'] or 0:.1f} px, "
             f"gray mean {numbers[n]['intensity']['mean']:.1f}" for n in names]
    return _stack([sheets, *charts, [_text_panel(text, 2 * half)]], 2 * half)


def _realism_line(realism: Mapping[str, Any], names: Sequence[str]) -> str:
    if "fid" not in realism:
        return f"FID/KID not computed: {realism.get('skipped', 'not requested')}"
    return (f"FID {realism['fid']:.3f}; KID {realism['kid_mean']:.4g} +- {realism['kid_std']:.2g} "
            f"({names[1]} vs {names[0]}, {realism['images_b']} vs {realism['images_a']} frames, features: {realism['feature']})")


def render_comparison(numbers: Mapping[str, dict], realism: Mapping[str, Any], names: Sequence[str]) -> str:
    """The Markdown report: the picture first, then one table of the headline numbers."""
    a, b = names

    def fmt(value) -> str:
        return "n/a" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))

    headline = [
        ("frames", lambda n: n["frames"]), ("videos", lambda n: n["videos"]), ("identities", lambda n: n["identities"]),
        *[(f"QC {q} rate", (lambda q: lambda n: n["qc_rates"][q])(q)) for q in numbers[a]["qc_rates"]],
        ("mean box width (px)", lambda n: n["box"]["mean_w_px"]), ("mean box height (px)", lambda n: n["box"]["mean_h_px"]),
        ("mean box width / frame", lambda n: n["box"]["mean_w"]), ("mean box centre x / frame", lambda n: n["box"]["mean_cx"]),
        ("mean box centre y / frame", lambda n: n["box"]["mean_cy"]), ("gray-level mean", lambda n: n["intensity"]["mean"]),
        ("gray-level std", lambda n: n["intensity"]["std"]),
        ("landmark jitter (px)", lambda n: n["temporal"]["landmark_jitter_px"]),
        ("frame change (gray levels)", lambda n: n["temporal"]["frame_change"]),
        (f"box jumps over {JUMP_THRESHOLD:.0%} of the frame", lambda n: n["temporal"]["box_jumps"]),
    ]
    lines = [f"# {b} vs {a}", "", "![comparison](comparison.png)", "",
             "Sample frames carry their boxes (cyan detector, magenta interpolated, yellow propagated) and landmarks; histograms are "
             "fractions, so corpora of different sizes compare. Jitter, frame change and jumps compare each frame "
             "with the previous frame of its video.", "",
             f"| | {a} | {b} |", "|---|---|---|"]
    lines += [f"| {label} | {fmt(get(numbers[a]))} | {fmt(get(numbers[b]))} |" for label, get in headline]
    lines += ["", "## Realism", "", _realism_line(realism, names) + ".", "",
              "FID/KID values are comparable only under the same feature extractor and image size; the published "
              "convention is Inception-v3 at 299 px.", ""]
    return "\n".join(lines)


def compare_corpora(rows_a: Iterable[Mapping[str, Any]], rows_b: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike,
                    names: tuple[str, str] = ("released", "generated"), feature: Any = "inception",
                    fid_image_size: int = INCEPTION_SIZE, max_images: int = 500, inception_weights: str | None = None,
                    samples: int = 4, progress: bool = False) -> dict:
    """Write comparison.png, comparison.json and comparison.md under `out_dir`; return the JSON's content.

    `rows_a` is the reference (released) corpus. `feature`: "inception", an ONNX model path, an `nn.Module`, or
    None to leave FID/KID out; when the extractor cannot be had the JSON and report say why instead.
    """
    if len(names) != 2 or names[0] == names[1]:
        raise EvaluationError(f"names must be two different corpus names, got {names!r}")
    size = fid_image_size if feature is not None else 8  # no FID: keep only tiny thumbnails
    stats = [collect(rows, name, max_images=max_images, image_size=size, samples=samples, progress=progress)
             for rows, name in zip((rows_a, rows_b), names)]
    numbers = {s.name: s.summary() for s in stats}
    if feature is None:
        realism: dict[str, Any] = {"skipped": "no feature extractor requested"}
    else:
        try:
            realism = fid_kid(stats[0].fid_images, stats[1].fid_images, feature=feature, image_size=fid_image_size,
                              inception_weights=inception_weights)
        except RealismUnavailable as err:
            realism = {"skipped": str(err)}
    result = {"names": list(names), "corpora": numbers, "realism": realism}
    out = Path(out_dir)
    picture = comparison_picture(stats, numbers, realism)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(out / "comparison.png", buffer.getvalue())
    atomic_write_text(out / "comparison.json", json.dumps(result, indent=2))
    atomic_write_text(out / "comparison.md", render_comparison(numbers, realism, names))
    return result
