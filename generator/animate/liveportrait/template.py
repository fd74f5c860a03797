"""The driving motion as data: per-frame rotation, expression, scale, translation and eye/lip ratios.

Every motion source (driving video, LivePortrait .pkl, our npz/safetensors files, procedural programs) becomes
one `MotionSequence`; the animation algorithm reads nothing else, so it never needs the driving pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from thermvision_db.errors import InputError


@dataclass
class MotionSequence:
    """Per-frame driving motion; any field may be None ("keep the source's").

    R: (T, 3, 3) row-vector rotations (`kp @ R`). exp: (T, K, 3). scale: (T, 1). t: (T, 3).
    eye_ratio: (T, 1) or (T, 2) driving eye opening ([left, right] as upstream's `c_eyes_lst`; eye retargeting
    reads column 0, the left eye, as upstream does); lip_ratio: (T, 1) driving mouth opening.
    relative: apply pose/expression relative to frame 0 (driving videos, .pkl) or as given (procedural).
    single_image: one driving image (upstream's image-driven mode): the expression is taken against upstream's
    neutral lip array instead of frame 0 and the expression-friendly multiplier is not applied. Needs T == 1.
    """

    R: np.ndarray | None = None
    exp: np.ndarray | None = None
    scale: np.ndarray | None = None
    t: np.ndarray | None = None
    eye_ratio: np.ndarray | None = None
    lip_ratio: np.ndarray | None = None
    fps: float = 25.0
    relative: bool = True
    name: str = "motion"
    extra: dict = field(default_factory=dict)
    single_image: bool = False

    FIELDS = ("R", "exp", "scale", "t", "eye_ratio", "lip_ratio")

    def __post_init__(self) -> None:
        lengths = set()
        for name in self.FIELDS:
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float32)
                setattr(self, name, value)
                lengths.add(len(value))
        if len(lengths) > 1:
            raise InputError(f"motion {self.name!r}: fields disagree on the number of frames {sorted(lengths)}")
        if not lengths:
            raise InputError(f"motion {self.name!r} has no per-frame field")
        if 0 in lengths:
            raise InputError(f"motion {self.name!r} has 0 frames; a motion needs at least one")
        for name in self.FIELDS:
            value = getattr(self, name)
            if value is not None and not np.isfinite(value).all():
                raise InputError(f"motion {self.name!r}: {name} holds NaN or inf values (frame "
                                 f"{int(np.argwhere(~np.isfinite(value))[0][0])}); the motion file is damaged")
        if not (np.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise InputError(f"motion {self.name!r}: fps must be a finite number in (0, 1000], got {self.fps}")
        checks = {"R": [(3, 3)], "scale": [(1,)], "t": [(3,)], "eye_ratio": [(1,), (2,)], "lip_ratio": [(1,)]}
        for name, shapes in checks.items():
            value = getattr(self, name)
            if value is not None and value.shape[1:] not in shapes:
                expected = " or ".join(f"(T, {', '.join(map(str, s))})" for s in shapes)
                raise InputError(f"motion {self.name!r}: {name} has shape {value.shape}, expected {expected}")
        if self.single_image and len(self) != 1:
            raise InputError(f"motion {self.name!r}: a single driving image has one frame, got {len(self)}")
        if self.exp is not None and (self.exp.ndim != 3 or self.exp.shape[2] != 3):
            raise InputError(f"motion {self.name!r}: exp has shape {self.exp.shape}, expected (T, K, 3)")

    def fit_problem(self, num_kp: int) -> str | None:
        """Why this motion cannot drive a model with `num_kp` implicit keypoints (None when it can): a template
        made with other weights would otherwise fail inside the model, once per identity."""
        if self.exp is not None and self.exp.shape[1] != num_kp:
            return (f"its expressions have {self.exp.shape[1]} keypoints per frame but the loaded LivePortrait "
                    f"model uses {num_kp}")
        return None

    def __len__(self) -> int:
        return next(len(getattr(self, n)) for n in self.FIELDS if getattr(self, n) is not None)

    def slice(self, start: int, stop: int) -> "MotionSequence":
        parts = {n: None if getattr(self, n) is None else getattr(self, n)[start:stop] for n in self.FIELDS}
        return MotionSequence(**parts, fps=self.fps, relative=self.relative, name=self.name, extra=dict(self.extra),
                              single_image=self.single_image)
