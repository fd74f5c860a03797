"""Planted real sets for the gender benchmark tests: folders of small gray PNGs with known genders and subjects."""

from pathlib import Path

import numpy as np
from PIL import Image


def planted_set(root: Path, subjects_per_class: int = 10, images: int = 2, size: int = 24, shuffle: int | None = None,
                layout: str = "folders") -> Path:
    """`female/<subject>/i.png` (layout 'folders') or `female/<subject>_i.png` ('prefix'): female faces are dark
    (mean 60), male bright (mean 190), plus noise. `shuffle=seed` gives each subject a gender at random instead
    (half each), so the brightness says nothing about the label."""
    rng = np.random.default_rng(0)
    subjects = [(f"s{i:02d}", gender) for gender in (0, 1) for i in range(gender * 100, gender * 100 + subjects_per_class)]
    labels = [g for _, g in subjects]
    if shuffle is not None:
        labels = list(np.random.default_rng(shuffle).permutation(labels))
    for (subject, brightness_class), label in zip(subjects, labels):
        folder = root / ("female", "male")[label]
        for i in range(images):
            pixels = np.clip(rng.normal(60 + 130 * brightness_class, 12, (size, size)), 0, 255).astype(np.uint8)
            path = folder / subject / f"{i}.png" if layout == "folders" else folder / f"{subject}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root
