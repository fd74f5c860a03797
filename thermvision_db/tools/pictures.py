"""Pictures people look at instead of reading tables: contact sheets with boxes, landmarks and QC, GIFs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from thermvision_db.errors import InputError

QC_COLOURS = {"ok": (0, 200, 0), "missing": (230, 30, 30), "multiple": (255, 160, 0), "out_of_bounds": (128, 128, 128)}
SOURCE_COLOURS = {"detector": (0, 220, 255), "interpolated": (255, 0, 255), "propagated": (255, 255, 0)}
LANDMARK_COLOUR = (255, 60, 60)


def _to_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
        array = array.transpose(1, 2, 0)  # CHW tensors
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def draw_annotations(
    image,
    faces: Sequence[dict] | None = None,
    qc: str | None = None,
    caption: str | None = None,
) -> Image.Image:
    """Draw COCO boxes (x, y, w, h pixels) and landmarks on a copy of `image`; a QC-coloured frame border."""
    canvas = _to_image(image).copy()
    draw = ImageDraw.Draw(canvas)
    width = max(1, canvas.width // 170)
    for face in faces or []:
        colour = SOURCE_COLOURS.get(face.get("source") or "detector", (0, 220, 255))
        x, y, w, h = face["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        for point in face.get("landmarks") or []:
            px, py = point
            if px is None or py is None or math.isnan(px) or math.isnan(py):  # an unlabelled point is not drawn
                continue
            r = max(1, width)
            draw.ellipse([px - r, py - r, px + r, py + r], fill=LANDMARK_COLOUR)
    if qc is not None:
        draw.rectangle([0, 0, canvas.width - 1, canvas.height - 1], outline=QC_COLOURS.get(qc, (128, 128, 128)), width=2 * width)
    if caption:
        draw.rectangle([0, 0, canvas.width, 12 + 2 * width], fill=(0, 0, 0))
        draw.text((3, 1), caption, fill=(255, 255, 255))
    return canvas


def legend(width: int, sources: Sequence[str] = tuple(SOURCE_COLOURS), qc: Sequence[str] = tuple(QC_COLOURS),
           landmarks: bool = True) -> Image.Image:
    """A strip saying what the colours mean: box colour = label source, border colour = QC verdict."""
    entries = [("box", [(name, SOURCE_COLOURS[name], "box") for name in sources]),
               ("border", [(name, QC_COLOURS[name], "border") for name in qc])]
    if landmarks:
        entries[0][1].append(("landmarks", LANDMARK_COLOUR, "dot"))
    lines: list[list[tuple[str, tuple, str]]] = [[]]
    x = 4
    for heading, items in entries:  # wrap to the sheet width
        for k, (name, colour, kind) in enumerate(items):
            text = (f"{heading}: " if k == 0 else "") + name
            need = 18 + 6 * len(text) + 12
            if x + need > width and lines[-1]:
                lines.append([])
                x = 4
            lines[-1].append((text, colour, kind))
            x += need
        x += 10
    strip = Image.new("RGB", (width, 18 * len(lines) + 4), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    for row, items in enumerate(lines):
        x, y = 4, 4 + 18 * row
        for text, colour, kind in items:
            if kind == "box":
                draw.rectangle([x, y + 1, x + 12, y + 11], outline=colour, width=2)
            elif kind == "border":
                draw.rectangle([x, y + 1, x + 12, y + 11], fill=colour)
            else:
                draw.ellipse([x + 3, y + 3, x + 9, y + 9], fill=colour)
            draw.text((x + 17, y), text, fill=(255, 255, 255))
            x += 18 + 6 * len(text) + 12
    return strip


def with_legend(sheet: Image.Image, **legend_options) -> Image.Image:
    """`sheet` with a `legend` strip below it."""
    strip = legend(sheet.width, **legend_options)
    out = Image.new("RGB", (sheet.width, sheet.height + strip.height), (24, 24, 24))
    out.paste(sheet, (0, 0))
    out.paste(strip, (0, sheet.height))
    return out


def contact_sheet(
    images: Sequence,
    captions: Sequence[str] | None = None,
    columns: int | None = None,
    tile: int = 128,
) -> Image.Image:
    """Tile images (PIL, HWC/CHW arrays) into one RGB picture, each resized to `tile` pixels wide."""
    if not images:
        raise InputError("contact_sheet needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    tiles = []
    for i, image in enumerate(images):
        picture = _to_image(image)
        picture = picture.resize((tile, max(1, round(picture.height * tile / picture.width))), Image.BILINEAR)
        if captions is not None and captions[i]:
            draw = ImageDraw.Draw(picture)
            draw.rectangle([0, picture.height - 12, picture.width, picture.height], fill=(0, 0, 0))
            draw.text((2, picture.height - 12), str(captions[i])[: tile // 6], fill=(255, 255, 255))
        tiles.append(picture)
    tile_h = max(t.height for t in tiles)
    sheet = Image.new("RGB", (columns * tile, rows * tile_h), (24, 24, 24))
    for i, picture in enumerate(tiles):
        sheet.paste(picture, ((i % columns) * tile, (i // columns) * tile_h))
    return sheet


def save_gif(frames: Sequence, path: str | Path, fps: float = 10.0, size: int = 256) -> Path:
    """Write frames as a looping GIF (downscaled to `size` px wide) for READMEs and issue threads."""
    if not frames:
        raise InputError("save_gif needs at least one frame")
    pictures = [_to_image(f) for f in frames]
    pictures = [p.resize((size, max(1, round(p.height * size / p.width))), Image.BILINEAR) for p in pictures]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=max(20, int(1000 / fps)), loop=0)
    return path
