"""Plots drawn with PIL, so reports need no plotting library."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


# ---------------------------------------------------------------------------------------------- plots (PIL)
def bar_chart(labels: list[str], series: dict[str, list[float]], title: str, width: int = 720, height: int = 320) -> bytes:
    """A grouped bar chart as PNG bytes, drawn with PIL so the report needs no plotting library."""
    colours = [(52, 101, 164), (204, 0, 0), (115, 210, 22), (245, 121, 0)]
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 50, width - 10, 30, height - 60
    draw.text((left, 8), title, fill="black")
    top_value = max([abs(v) for values in series.values() for v in values if np.isfinite(v)] + [1e-9])
    draw.line([(left, bottom), (right, bottom)], fill="black")
    draw.text((5, top - 5), f"{top_value:.3g}", fill="black")
    draw.text((5, bottom - 5), "0", fill="black")
    slot = (right - left) / max(len(labels), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        draw.rectangle([right - 120, top + 14 * k, right - 110, top + 14 * k + 10], fill=colours[k % len(colours)])
        draw.text((right - 105, top + 14 * k - 1), name, fill="black")
        for i, value in enumerate(values):
            if not np.isfinite(value):
                continue
            x0 = left + slot * i + slot * 0.1 + bar * k
            y0 = bottom - (bottom - top) * max(value, 0) / top_value
            draw.rectangle([x0, y0, x0 + bar - 1, bottom], fill=colours[k % len(colours)])
    for i, label in enumerate(labels):
        draw.text((left + slot * i + 2, bottom + 4 + 12 * (i % 3)), label[:12], fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
