"""Per-identity motion programs: every identity gets its own head-pose trajectory and expression sequence.

Why: the released corpus drives all 50 identities with the same two clips, so a model can learn the motion
instead of the faces. Here each identity's program is drawn from its own random stream (sha256 of run seed,
identity index and set), so it is reproducible from (seed, index) and differs between identities (the program
parameters are continuous draws: two identities share a trajectory with probability about 2^-50).

Documented ranges (`VARIED_RANGES`):
- head pose (absolute, degrees): yaw amplitude 20-45, pitch 10-25, roll 8-25; the three axes swing in a random
  order, each 0 -> +-A -> 0 -> -+A -> 0 with a random first direction; each swing's share of the clip (its speed)
  varies 0.7-1.3x, and 0-15 % of the clip is spent holding still between swings; with probability 0.5 a
  combined yaw+pitch circle (amplitudes 0.4-0.8 of the axes') is added at a random place in the order.
- expression set: segments of 1.0-2.5 s separated by neutral gaps of 0.2-0.6 s, each drawn from the
  expression library (user clips/templates tagged with a name) and the procedural `blink` and `mouth_open`,
  never the same name twice in a row; library clips are time-stretched to the segment; the head drifts by at
  most 5 degrees per axis. Clips shorter than 4 s scale segment and gap lengths down in proportion (at least
  4 frames a segment), so short test/demo programs still hold expressions.
- eyes: open level 0.30-0.40 (upstream's eye ratio), blinks of 0.2-0.35 s, every 2-5 s in the head-pose set
  and one per 0.8 s of a `blink` segment in the expression set; mouth openings to a lip ratio of 0.25-0.7.

Every frame carries labels: the exact yaw/pitch/roll applied, the name of its expression segment ("neutral"
between segments), and the eye/mouth openness driven (None where a library clip drives the face without
measured ratios).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from generator.animate.liveportrait.camera import rotation_matrix
from generator.animate.liveportrait.template import MotionSequence
from generator.stills.prompts import derive_seed
from thermvision_db.errors import InputError

VARIED_RANGES = {
    "yaw": (20.0, 45.0), "pitch": (10.0, 25.0), "roll": (8.0, 25.0), "swing_speed": (0.7, 1.3),
    "hold_fraction": (0.0, 0.15), "circle_scale": (0.4, 0.8), "segment_seconds": (1.0, 2.5),
    "gap_seconds": (0.2, 0.6), "drift_degrees": (0.0, 5.0), "eye_open": (0.30, 0.40), "blink_seconds": (0.2, 0.35),
    "blink_every_seconds": (2.0, 5.0), "mouth_open": (0.25, 0.7),
}
PROCEDURAL_EXPRESSIONS = ("blink", "mouth_open")
AXES = ("yaw", "pitch", "roll")


@dataclass
class LabelledMotion:
    """A motion program and its per-frame labels. `exp_delta` (T, K, 3) is added to the source's expression when
    the program is bound to a source (library segments); NaN eye/lip ratios mean "the source's own"."""

    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    expression: list[str]
    eye_open: list[float | None]
    mouth_open: list[float | None]
    eye_ratio: np.ndarray  # driven ratio per frame, NaN = keep the source's opening
    lip_ratio: np.ndarray
    exp_delta: np.ndarray | None = None
    segments: list[tuple[int, int, str]] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    fps: float = 30.0
    name: str = "varied"

    def __len__(self) -> int:
        return len(self.yaw)

    def bind(self, source_exp: np.ndarray | None = None, source_eye_ratio: float = 0.35,
             source_lip_ratio: float = 0.0) -> MotionSequence:
        """The MotionSequence the animation applies: absolute rotations (so the labels are the pose given),
        eye/lip retargeting ratios, and library expressions as offsets from the source's own expression."""
        R = rotation_matrix(self.pitch, self.yaw, self.roll).numpy()
        exp = None
        if self.exp_delta is not None:
            if source_exp is None:
                raise InputError(f"motion {self.name!r} has library expressions: bind it to a source's expression")
            exp = np.asarray(source_exp, np.float32).reshape(1, -1, 3) + self.exp_delta
        eye = np.where(np.isnan(self.eye_ratio), source_eye_ratio, self.eye_ratio)
        lip = np.where(np.isnan(self.lip_ratio), source_lip_ratio, self.lip_ratio)
        return MotionSequence(R=R, exp=exp, eye_ratio=eye[:, None], lip_ratio=lip[:, None], fps=self.fps,
                              relative=False, name=self.name,
                              extra={"yaw": self.yaw.astype(np.float32), "pitch": self.pitch.astype(np.float32),
                                     "roll": self.roll.astype(np.float32)})

    def frame_labels(self) -> list[dict]:
        return [{"head_pose": {"yaw": float(self.yaw[t]), "pitch": float(self.pitch[t]), "roll": float(self.roll[t])},
                 "expression": self.expression[t], "eye_open": self.eye_open[t], "mouth_open": self.mouth_open[t]}
                for t in range(len(self))]


def _swing(n: int, amplitude: float) -> np.ndarray:
    """Smooth full swing: A sin(2 pi t) shaped so the velocity is zero at the ends (sin(2 pi t) * sin^2(pi t)
    normalised to reach +-A exactly)."""
    t = np.linspace(0.0, 1.0, n)
    shape = np.sin(2 * np.pi * t) * np.sin(np.pi * t) ** 2
    peak = np.abs(shape).max() if n > 2 else 1.0
    return amplitude * shape / (peak or 1.0)


def _split(total: int, weights: list[float]) -> list[int]:
    """Integer frame counts proportional to `weights` that add up to `total` exactly."""
    raw = np.asarray(weights, float) / sum(weights) * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(raw - counts)[::-1][: total - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def head_pose_trajectory(rng: random.Random, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(yaw, pitch, roll) degrees per frame and the drawn parameters; see the module docstring for ranges."""
    R = VARIED_RANGES
    amplitude = {a: rng.uniform(*R[a]) * rng.choice((-1, 1)) for a in AXES}
    order: list[str] = list(AXES)
    rng.shuffle(order)
    if rng.random() < 0.5:
        order.insert(rng.randrange(len(order) + 1), "circle")
    circle = rng.uniform(*R["circle_scale"])
    hold = rng.uniform(*R["hold_fraction"])
    weights = [rng.uniform(*R["swing_speed"]) for _ in order]
    holds = [rng.random() for _ in range(len(order) + 1)]
    motion_frames = max(len(order) * 5, int(round(num_frames * (1 - hold))))
    motion_frames = min(motion_frames, num_frames)
    swing_counts = _split(motion_frames, weights)
    hold_counts = _split(num_frames - motion_frames, holds) if num_frames > motion_frames else [0] * len(holds)
    angles = {a: [] for a in AXES}
    for k, (part, n) in enumerate(zip(order, swing_counts)):
        for a in AXES:
            angles[a].append(np.zeros(hold_counts[k]))
        if n == 0:  # very short programs: fewer frames than parts
            continue
        if part == "circle":
            t = np.linspace(0.0, 1.0, n)
            envelope = np.sin(np.pi * t) ** 2
            angles["yaw"].append(circle * amplitude["yaw"] * np.sin(2 * np.pi * t) * envelope / max(envelope.max(), 1e-9))
            angles["pitch"].append(circle * amplitude["pitch"] * (1 - np.cos(2 * np.pi * t)) / 2 * envelope)
            angles["roll"].append(np.zeros(n))
        else:
            for a in AXES:
                angles[a].append(_swing(n, amplitude[part]) if a == part else np.zeros(n))
    for a in AXES:
        angles[a].append(np.zeros(hold_counts[-1]))
    yaw, pitch, roll = (np.concatenate(angles[a])[:num_frames] for a in AXES)
    params = {"order": order, "amplitude": amplitude, "circle_scale": circle, "hold_fraction": hold,
              "speeds": weights}
    return yaw, pitch, roll, params


def _pulse(n: int, peak: float) -> np.ndarray:
    """0 -> peak -> 0, smooth (raised cosine)."""
    return peak * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / max(n - 1, 1)))


def varied_program(run_seed: int, index: int, set_name: str, num_frames: int, fps: float = 30.0,
                   library=None) -> LabelledMotion:
    """Identity `index`'s program for one video set ("head_pose" or "expression") of `num_frames` frames."""
    if set_name not in ("head_pose", "expression"):
        raise InputError(f"set must be 'head_pose' or 'expression', got {set_name!r}")
    if num_frames < 3:
        raise InputError(f"a varied {set_name} program needs at least 3 frames, got {num_frames}")
    rng = random.Random(derive_seed(run_seed, index, f"motion/{set_name}"))
    R = VARIED_RANGES
    eye_level = rng.uniform(*R["eye_open"])
    expression = ["neutral"] * num_frames
    eye_label: list[float | None] = [eye_level] * num_frames
    mouth_label: list[float | None] = [0.0] * num_frames
    eye = np.full(num_frames, eye_level)
    lip = np.zeros(num_frames)
    exp_delta = None
    segments: list[tuple[int, int, str]] = []
    if set_name == "head_pose":
        yaw, pitch, roll, params = head_pose_trajectory(rng, num_frames)
        t = int(rng.uniform(*R["blink_every_seconds"]) * fps * rng.random())  # first blink anywhere in a period
        while True:
            n = max(3, int(round(rng.uniform(*R["blink_seconds"]) * fps)))
            if t + n > num_frames:
                break
            segments.append((t, t + n, "blink"))
            t += n + max(1, int(round(rng.uniform(*R["blink_every_seconds"]) * fps)))
    else:
        drift = {a: rng.uniform(*R["drift_degrees"]) * rng.choice((-1, 1)) for a in AXES}
        phases = {a: rng.uniform(0, 2 * np.pi) for a in AXES}
        cycles = rng.uniform(0.5, 1.5)
        tt = np.linspace(0.0, 1.0, num_frames)
        yaw, pitch, roll = (drift[a] * np.sin(2 * np.pi * cycles * tt + phases[a]) * np.sin(np.pi * tt) for a in AXES)
        params = {"drift": drift}
        names = list(PROCEDURAL_EXPRESSIONS) + (library.names() if library is not None else [])
        scale = min(1.0, num_frames / (4 * fps))  # short clips (tests, demos) get proportionally short segments
        t, previous = int(round(rng.uniform(*R["gap_seconds"]) * fps * scale)), None
        while True:
            n = max(4, int(round(rng.uniform(*R["segment_seconds"]) * fps * scale)))
            if t + n > num_frames:
                break
            name = rng.choice([m for m in names if m != previous] or names)
            segments.append((t, t + n, name))
            previous = name
            t += n + max(1, int(round(rng.uniform(*R["gap_seconds"]) * fps * scale)))
    for start, stop, name in segments:
        n = stop - start
        expression[start:stop] = [name] * n
        if name == "blink":  # one blink per short segment, several evenly spaced in a longer one
            length = min(n, max(3, int(round(rng.uniform(*R["blink_seconds"]) * fps))))
            count = max(1, n // max(length, int(0.8 * fps)))
            for k in range(count):
                a = start + (k * n) // count + ((n // count) - length) // 2
                eye[a:a + length] = eye_level - _pulse(length, eye_level)
            eye_label[start:stop] = [float(v) for v in eye[start:stop]]
        elif name == "mouth_open":
            lip[start:stop] = _pulse(n, rng.uniform(*R["mouth_open"]))
            mouth_label[start:stop] = [float(v) for v in lip[start:stop]]
        else:  # a library clip, time-stretched to the segment
            clip = library.clip(name, rng.randrange(library.count(name)))
            if exp_delta is None:
                exp_delta = np.zeros((num_frames, clip.exp_delta.shape[1], 3), np.float32)
            elif exp_delta.shape[1] != clip.exp_delta.shape[1]:
                raise InputError(f"expression library clip {clip.source} has {clip.exp_delta.shape[1]} keypoints, "
                                 f"others have {exp_delta.shape[1]}")
            exp_delta[start:stop] = clip.stretched(n)
            eye[start:stop], lip[start:stop] = np.nan, np.nan
            eye_label[start:stop] = clip.stretched_ratio("eye", n)
            mouth_label[start:stop] = clip.stretched_ratio("lip", n)
    return LabelledMotion(yaw=np.asarray(yaw, np.float64), pitch=np.asarray(pitch, np.float64),
                          roll=np.asarray(roll, np.float64), expression=expression, eye_open=eye_label,
                          mouth_open=mouth_label, eye_ratio=eye, lip_ratio=lip, exp_delta=exp_delta,
                          segments=segments, params=params, fps=fps, name=f"varied_{set_name}")
