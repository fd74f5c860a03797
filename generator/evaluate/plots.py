"""Plots drawn with PIL, so reports need no plotting library."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(52, 101, 164), (204, 0, 0), (115, 210, 22), (245, 121, 0)]
LEGEND_ROW = 14  # pixels per legend line, drawn above the plot area so it never covers a bar


def _legend_lines(names: list[str], width: int) -> list[list[str]]:
    lines: list[list[str]] = [[]]
    x = 0
    for name in names:
        need = 16 + 6 * len(name) + 14
        if x + need > width and lines[-1]:
            lines.append([])
            x = 0
        lines[-1].append(name)
        x += need
    return lines


def bar_chart(labels: list[str], series: dict[str, list[float]], title: str, width: int = 720, height: int = 320,
              unit: str = "", y_max: float | None = None, reference: tuple[float, str] | None = None) -> bytes:
    """A grouped bar chart as PNG bytes: one y axis (`unit` names it), legend above the bars, n/a for NaN values.

    Series measured in different units belong in separate charts (`chart_panels`), never on one axis. `y_max`
    fixes the axis (accuracies on 0..1, so 0.56 does not fill the chart); `reference` = (value, name) draws a
    dashed line such as chance.
    """
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    names = list(series)
    legend = _legend_lines(names, width - 60) if len(names) > 1 else []
    left, right = 50, width - 10
    top = 24 + LEGEND_ROW * len(legend) + 10
    bottom = height - 60
    draw.text((left, 6), title + (f" ({unit})" if unit else ""), fill="black")
    for row, line in enumerate(legend):
        x = left
        for name in line:
            colour = COLOURS[names.index(name) % len(COLOURS)]
            y = 24 + LEGEND_ROW * row
            draw.rectangle([x, y + 1, x + 10, y + 11], fill=colour)
            draw.text((x + 15, y), name, fill="black")
            x += 16 + 6 * len(name) + 14
    finite = [abs(v) for values in series.values() for v in values if np.isfinite(v)]
    top_value = y_max if y_max is not None else max(finite + [1e-9])
    draw.line([(left, top), (left, bottom)], fill="black")
    draw.line([(left, bottom), (right, bottom)], fill="black")
    if finite or y_max is not None:
        draw.text((5, top - 5), f"{top_value:.3g}", fill="black")
    draw.text((5, bottom - 5), "0", fill="black")
    if reference is not None and 0 <= reference[0] <= top_value:
        y = bottom - (bottom - top) * reference[0] / top_value
        for x in range(left, right, 8):
            draw.line([(x, y), (min(x + 4, right), y)], fill=(90, 90, 90))
        draw.text((right - 6 * len(reference[1]) - 4, y - 13), reference[1], fill=(90, 90, 90))
    slot = (right - left) / max(len(labels), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for k, values in enumerate(series.values()):
        for i, value in enumerate(values):
            x0 = left + slot * i + slot * 0.1 + bar * k
            if not np.isfinite(value):  # not measurable here (e.g. no landmarks): say so instead of drawing a 0
                draw.text((x0, bottom - 12), "n/a", fill=(120, 120, 120))
                continue
            y0 = bottom - (bottom - top) * max(value, 0) / top_value
            draw.rectangle([x0, y0, x0 + max(bar - 1, 1), bottom], fill=COLOURS[k % len(COLOURS)])
    for i, label in enumerate(labels):
        draw.text((left + slot * i + 2, bottom + 4 + 12 * (i % 3)), label[:12], fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def chart_panels(charts: list[bytes]) -> bytes:
    """PNG charts stacked top to bottom into one PNG: one panel per unit."""
    pictures = [Image.open(io.BytesIO(c)).convert("RGB") for c in charts]
    canvas = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures)), "white")
    top = 0
    for picture in pictures:
        canvas.paste(picture, (0, top))
        top += picture.height
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def line_chart(series: dict[str, tuple[list[float], list[float]]], title: str, x_label: str, y_label: str,
               x_range: tuple[float, float] = (0.0, 1.0), y_range: tuple[float, float] = (0.0, 1.0),
               width: int = 480, height: int = 360) -> bytes:
    """Curves (name -> (xs, ys)) on one pair of axes as PNG bytes: PR curves, cumulative error curves.

    Points outside the ranges are clipped to the frame; NaN points break a curve; the legend sits above the plot."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    names = list(series)
    legend = _legend_lines(names, width - 60)
    left, right = 50, width - 14
    top, bottom = 24 + LEGEND_ROW * len(legend) + 10, height - 40
    draw.text((left, 6), title, fill="black")
    for row, line in enumerate(legend):
        x = left
        for name in line:
            y = 24 + LEGEND_ROW * row
            draw.rectangle([x, y + 1, x + 10, y + 11], fill=COLOURS[names.index(name) % len(COLOURS)])
            draw.text((x + 15, y), name, fill="black")
            x += 16 + 6 * len(name) + 14
    (x0, x1), (y0, y1) = x_range, y_range

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        fx = (min(max(x, x0), x1) - x0) / ((x1 - x0) or 1)
        fy = (min(max(y, y0), y1) - y0) / ((y1 - y0) or 1)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    for k in range(5):  # light grid with tick values
        gx, gy = left + k * (right - left) / 4, bottom - k * (bottom - top) / 4
        draw.line([(gx, top), (gx, bottom)], fill=(225, 225, 225))
        draw.line([(left, gy), (right, gy)], fill=(225, 225, 225))
        draw.text((gx - 8, bottom + 4), f"{x0 + k * (x1 - x0) / 4:.3g}", fill="black")
        draw.text((4, gy - 5), f"{y0 + k * (y1 - y0) / 4:.3g}", fill="black")
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    draw.text(((left + right) // 2 - 3 * len(x_label), height - 16), x_label, fill="black")
    draw.text((left + 4, top - 12), y_label, fill=(80, 80, 80))
    for k, (xs, ys) in enumerate(series.values()):
        colour = COLOURS[k % len(COLOURS)]
        run: list[tuple[float, float]] = []
        for x, y in list(zip(xs, ys)) + [(float("nan"), float("nan"))]:
            if np.isfinite(x) and np.isfinite(y):
                run.append(to_pixel(float(x), float(y)))
                continue
            if len(run) > 1:
                draw.line(run, fill=colour, width=2)
            elif run:
                draw.ellipse([run[0][0] - 2, run[0][1] - 2, run[0][0] + 2, run[0][1] + 2], fill=colour)
            run = []
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
