"""Report pictures: the legend never covers a bar, one unit per axis, n/a where nothing was measured."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from generator.evaluate.plots import COLOURS, LEGEND_ROW, bar_chart, chart_panels
from generator.evaluate.report import evaluate


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _rows_with(colour, image: np.ndarray, columns: slice) -> np.ndarray:
    return np.nonzero((np.abs(image[:, columns] - colour).sum(axis=2) == 0).any(axis=1))[0]


def test_legend_sits_above_the_tallest_bars():
    """Full-height bars in every slot, including the right edge where the legend used to be drawn."""
    labels = [f"v{i}" for i in range(6)]
    png = bar_chart(labels, {"missing": [5.0] * 6, "multiple": [5.0] * 6, "jumps": [5.0] * 6}, "t", width=400)
    image = _pixels(png)
    legend_bottom = 24 + LEGEND_ROW
    for k in range(3):
        bar_rows = _rows_with(COLOURS[k], image, slice(60, None))  # right of the legend swatches' first column
        swatch_rows = bar_rows[bar_rows < legend_bottom]
        bars = bar_rows[bar_rows >= legend_bottom + 10]
        assert len(bars) > 200  # the bar itself, from the plot top down to the axis
        # between the legend line and the plot there is a gap: no bar pixel reaches into the legend
        assert not np.any((bar_rows >= legend_bottom) & (bar_rows < legend_bottom + 10)), k
        assert len(swatch_rows) <= 11  # only the legend swatch (11 px tall) is in the legend line


def test_nan_is_drawn_as_na_not_as_a_zero_bar():
    finite = _pixels(bar_chart(["a", "b"], {"x": [1.0, 0.0]}, "t", width=200))
    missing = _pixels(bar_chart(["a", "b"], {"x": [1.0, float("nan")]}, "t", width=200))
    assert not np.array_equal(finite, missing)  # "n/a" text where the 0-height bar was
    bottom = 320 - 60  # the axis line of a 320 px tall chart
    band = missing[bottom - 14:bottom]  # just above the axis, where "n/a" is written
    gray = (band[..., 0] == band[..., 1]) & (band[..., 1] == band[..., 2]) & (band[..., 0] > 90) & (band[..., 0] < 250)
    assert gray[:, 120:].sum() > 10 and not gray[:, 51:120].any()  # in the second slot only


def test_chart_panels_stack_one_chart_per_unit():
    a = bar_chart(["a"], {"x": [1.0]}, "one", width=300, height=200, unit="px")
    b = bar_chart(["a"], {"y": [2.0]}, "two", width=300, height=240, unit="gray levels")
    stacked = _pixels(chart_panels([a, b]))
    assert stacked.shape == (440, 300, 3)
    assert np.array_equal(stacked[:200], _pixels(a)) and np.array_equal(stacked[200:], _pixels(b))


def test_report_without_landmarks_says_na(tmp_path):
    from thermvision_db.demo.miniature import write_miniature

    corpus = write_miniature(tmp_path / "mini", identities=("F_01",), frames_per_video=4, landmarks=False)
    evaluate(corpus.root, tmp_path / "report", cache_dir=str(tmp_path / "hf"), progress=False)
    report = (tmp_path / "report" / "report.md").read_text()
    table = [line for line in report.splitlines() if line.strip().startswith(("F_01_S1", "| F_01_S1"))]
    assert table and all("n/a" in line for line in table), report
    csv = pd.read_csv(tmp_path / "report" / "box_qc.csv")
    assert csv["landmark_jitter_px"].isna().all() and (csv["frame_change"] > 0).all()
    temporal = Image.open(tmp_path / "report" / "temporal.png")
    assert temporal.height == 2 * 240  # jitter (px) and frame change (gray levels): two panels, two axes


def test_report_with_landmarks_gives_numbers(mini, tmp_path):
    evaluate(mini.root, tmp_path / "report", cache_dir=str(tmp_path / "hf"), progress=False)
    csv = pd.read_csv(tmp_path / "report" / "box_qc.csv")
    assert csv["landmark_jitter_px"].notna().all() and (csv["landmark_jitter_px"] > 0).all()
    assert "n/a" not in (tmp_path / "report" / "report.md").read_text()


def test_report_stays_readable_at_thousands_of_videos():
    """3,000 videos: the pictures show distributions (a handful of bars), report.md the 20 worst, the CSV all."""
    import pandas as pd

    from generator.evaluate.report import count_distribution, qc_plots, render_report, value_distribution

    rng = np.random.default_rng(0)
    n = 3000
    qc = pd.DataFrame({"video_id": [f"S{i:06d}_head_pose" for i in range(n)], "frames": 24,
                       "missing": rng.integers(0, 30, n), "multiple": rng.integers(0, 3, n), "jumps": 0,
                       "max_centre_jump": 0.0, "landmark_jitter_px": rng.random(n), "frame_change": rng.random(n) * 9})
    qc.loc[1234, "missing"] = 500  # the worst video must be listed first
    labels, counts = count_distribution(qc["missing"])
    assert sum(counts) == n and len(labels) <= 12
    assert counts[0] == int((qc["missing"] == 0).sum()) and counts[-1] == int((qc["missing"] > 20).sum())
    labels, counts = value_distribution(qc["frame_change"])
    assert sum(counts) == n and len(labels) == 10
    plots = qc_plots(qc)
    assert set(plots) == {"box_qc.png", "temporal.png"}
    report = render_report({"qc": qc}, list(plots))
    lines = report.splitlines()
    assert len(lines) <= 200 and "box_qc.csv" in report
    table = [line for line in lines if "_head_pose" in line]  # markdown table, or plain text without tabulate
    assert len(table) == 20 and "S001234_head_pose" in table[0]
