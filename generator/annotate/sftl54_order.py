"""Which SF-TL54 point each part of a dlib shape predictor is, and a check that predicted points are in that order.

dlib numbers a predictor's parts by the part *names* of its training XML sorted as strings. Names written
zero-padded ("00" ... "53", as dlib's own example XMLs do) keep the SF-TL54 numbering (`padded`); names written
as plain numbers ("0" ... "53") come out in string order 0, 1, 10, 11, ... (`unpadded`). `order_problem` tells the
two apart on a predicted face, from the layout that `thermvision_db.schema.labels.SFTL54_NAMES` defines.
"""

from __future__ import annotations

import numpy as np

from thermvision_db.schema.labels import NUM_LANDMARKS, SFTL54_FLIP_PAIRS

_UNPADDED = [int(name) for name in sorted(str(i) for i in range(NUM_LANDMARKS))]
# part k of the predictor -> SF-TL54 point PART_ORDERS[order][k]
PART_ORDERS = {"padded": list(range(NUM_LANDMARKS)), "unpadded": _UNPADDED}

RIGHT_EYE, LEFT_EYE = range(36, 42), range(42, 48)  # the subject's right eye is on the image's left
NOSE_TIP, CHIN, MOUTH = 33, 8, range(48, 54)


def order_problem(points) -> str | None:
    """Why (54, 2) points are not a face in SF-TL54 order (upright, facing the camera), else None.

    Checks: each flip pair (SFTL54_FLIP_PAIRS) has its first point on the image's left of its partner (the
    jaw pairs, brows, nose wings, eyes, mouth corners); eyes above the nose tip, the nose tip above the mouth,
    the mouth above the chin. A predictor read in the wrong part order fails these.
    """
    p = np.asarray(points, np.float64).reshape(NUM_LANDMARKS, 2)
    wrong = [(a, b) for a, b in SFTL54_FLIP_PAIRS if not p[a, 0] < p[b, 0]]
    if len(wrong) > len(SFTL54_FLIP_PAIRS) // 4:
        return f"{len(wrong)} of {len(SFTL54_FLIP_PAIRS)} left/right pairs are mirrored or crossed, e.g. {wrong[:3]}"
    eyes_y = p[list(RIGHT_EYE) + list(LEFT_EYE), 1].mean()
    if not eyes_y < p[NOSE_TIP, 1] < p[list(MOUTH), 1].mean() < p[CHIN, 1]:
        return "eyes, nose tip, mouth and chin are not in top-to-bottom order"
    return None


def flip_points(points, width: float) -> np.ndarray:
    """The points of the horizontally mirrored image, renumbered with SFTL54_FLIP_PAIRS (x -> width - x)."""
    p = np.asarray(points, np.float64).reshape(NUM_LANDMARKS, 2).copy()
    p[:, 0] = width - p[:, 0]
    out = p.copy()
    for a, b in SFTL54_FLIP_PAIRS:
        out[a], out[b] = p[b], p[a]
    return out
