"""The distinctness filter: drop a candidate still that looks too much like an identity already accepted.

Any embedding plugs in (`embed(images) -> (N, D)` array, e.g. a face-recognition ONNX model); the built-in one
is deliberately simple and needs no weights: the central face region, grey, 24x24, zero-mean and unit-norm,
so the cosine similarity of two stills is the normalised cross-correlation of their faces. It catches
near-duplicates (same composition and lighting), not look-alikes; use a real face embedding for those.
Decisions are made in slot order, so every process of a sharded run reaches the same accepted list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

Embedding = Callable[[Sequence[Image.Image]], np.ndarray]


def pixel_embedding(images: Sequence[Image.Image], size: int = 24, centre: float = 0.6) -> np.ndarray:
    """(N, size*size) unit vectors: the central `centre` fraction of each image, grey, resized, zero-mean."""
    rows = []
    for image in images:
        grey = image.convert("L")
        w, h = grey.size
        cw, ch = w * centre, h * centre
        box = (round((w - cw) / 2), round((h - ch) / 2), round((w + cw) / 2), round((h + ch) / 2))
        x = np.asarray(grey.crop(box).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64).ravel()
        x = x - x.mean()
        norm = np.linalg.norm(x)
        rows.append(x / norm if norm > 0 else x)
    return np.stack(rows) if rows else np.zeros((0, size * size))


def select_distinct(embeddings: np.ndarray, threshold: float, needed: int) -> tuple[list[int], list[dict]]:
    """Walk candidates in order; accept one unless its cosine similarity to an accepted one exceeds `threshold`.

    Returns the accepted positions (at most `needed`) and one decision record per candidate looked at.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)
    accepted: list[int] = []
    decisions: list[dict] = []
    for i in range(len(e)):
        if len(accepted) >= needed:
            break
        best, closest = -1.0, None
        if accepted:
            sims = e[accepted] @ e[i]
            j = int(np.argmax(sims))
            best, closest = float(sims[j]), accepted[j]
        keep = best <= threshold
        decisions.append({"candidate": i, "accepted": keep, "max_similarity": round(best, 6),
                          "closest": closest})
        if keep:
            accepted.append(i)
    return accepted, decisions
