"""The paper's thermal preprocessing, as options: min-max normalisation, bilateral denoise, histogram equalisation.

Input any (H, W[, C]) image; output (H, W, 3) uint8 grayscale with the channel replicated, the form the
networks and the corpus use.

High-bit-depth sources (16-bit `I;16` PNG/TIFF, 32-bit `I`, float `F` radiometric images) are never clipped to
255 (that turns a 16-bit thermal frame into a white image). They are scaled by one documented rule, always:
min-max over the source's own finite range to 0..255 (`scale_rule` says which range was used, for the record).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from thermvision_db.errors import InputError

STEPS = ("minmax", "bilateral", "equalize")


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) float or uint8 from any (H, W[, 1|3|4]) image (channel mean; thermal pseudo-RGB is near-equal).

    An 8-bit image stays 8-bit whatever its channel count (the mean rounded back to uint8), so an 8-bit RGB still
    with R=G=B is used exactly as the same still saved as 8-bit gray, never min-max stretched."""
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[2] >= 3:
            mean = image[..., :3].mean(axis=2)
            image = np.round(mean).astype(np.uint8) if image.dtype == np.uint8 else mean
        else:
            image = image[..., 0]
    if image.ndim != 2:
        raise InputError(f"expected an (H, W[, C]) image, got shape {image.shape}")
    return image


def minmax(gray: np.ndarray) -> np.ndarray:
    """Stretch to the full 0..255 range (a flat image becomes mid-grey)."""
    g = gray.astype(np.float64)
    lo, hi = g.min(), g.max()
    if hi - lo < 1e-12:
        return np.full(g.shape, 128, np.uint8)
    return np.round((g - lo) / (hi - lo) * 255).astype(np.uint8)


def scale_rule(gray: np.ndarray) -> str | None:
    """How a non-uint8 source is brought to 0..255 (None for uint8): the text recorded beside the output."""
    if gray.dtype == np.uint8:
        return None
    g = gray.astype(np.float64)
    return f"min-max of the {gray.dtype} source's own range {g.min():g}..{g.max():g} -> 0..255"


def to_uint8(gray: np.ndarray, source: str = "source image") -> np.ndarray:
    """uint8 unchanged; any other dtype by `scale_rule` (min-max of its own range); non-finite values refused."""
    if gray.dtype == np.uint8:
        return gray
    if gray.dtype.kind == "f" and not np.isfinite(gray).all():
        raise InputError(f"{source} holds NaN or inf values ({gray.dtype}); a thermal image must be finite")
    if gray.dtype.kind not in "biuf":
        raise InputError(f"{source} has pixel type {gray.dtype}; expected integers or floats")
    return minmax(gray)


def bilateral(gray: np.ndarray, diameter: int = 5, sigma_color: float = 25.0, sigma_space: float = 5.0) -> np.ndarray:
    """Edge-preserving denoise of sensor noise."""
    return cv2.bilateralFilter(np.ascontiguousarray(gray, np.uint8), diameter, sigma_color, sigma_space)


def equalize(gray: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(np.ascontiguousarray(gray, np.uint8))


def preprocess(image: np.ndarray, steps: Sequence[str] = (), source: str = "source image") -> np.ndarray:
    """Apply the named steps in order; always returns (H, W, 3) uint8 with equal channels.

    A non-uint8 image is first scaled to 0..255 by `scale_rule` (min-max of its own range), whatever the steps.
    """
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise InputError(f"unknown preprocessing step(s) {unknown}; choose from {STEPS}")
    gray = to_gray(image)
    gray = to_uint8(gray, source)
    for step in steps:
        gray = {"minmax": minmax, "bilateral": bilateral, "equalize": equalize}[step](gray)
    return np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=2)
