"""The expression library of varied motion: the user's driving clips and templates, each tagged with an
expression name ("smile", "frown", "surprise", ...), kept as expression changes from their first frame.

Sources: LivePortrait `.pkl` templates (restricted unpickler), the project's `.npz`/`.safetensors` templates, and
driving videos (`.mp4`, `.mov`, ...), whose motion is extracted once with the loaded motion extractor and cached
like the paper's clips. A file without per-frame expressions (`exp`) is refused with its name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thermvision_db.errors import InputError, MissingFileError

TEMPLATE_SUFFIXES = (".pkl", ".npz", ".safetensors")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


@dataclass
class ExpressionClip:
    """One tagged clip: expression deltas (T, K, 3) from its first frame, optional eye/lip ratios (T,)."""

    name: str
    exp_delta: np.ndarray
    eye_ratio: np.ndarray | None
    lip_ratio: np.ndarray | None
    source: str

    def _resample(self, values: np.ndarray, n: int) -> np.ndarray:
        src = np.linspace(0.0, 1.0, len(values))
        dst = np.linspace(0.0, 1.0, n)
        flat = values.reshape(len(values), -1)
        out = np.stack([np.interp(dst, src, flat[:, j]) for j in range(flat.shape[1])], axis=1)
        return out.reshape(n, *values.shape[1:]).astype(np.float32)

    def stretched(self, n: int) -> np.ndarray:
        """The expression deltas played over `n` frames (linear time-stretch)."""
        return self._resample(self.exp_delta, n)

    def stretched_ratio(self, kind: str, n: int) -> list[float | None]:
        values = self.eye_ratio if kind == "eye" else self.lip_ratio
        if values is None:
            return [None] * n
        return [float(v) for v in self._resample(np.asarray(values, np.float32), n)]


class ExpressionLibrary:
    """Tagged expression clips, several per name allowed; `parse_library_spec` reads the CLI/settings form."""

    def __init__(self, clips: list[ExpressionClip]):
        if not clips:
            raise InputError("an expression library needs at least one clip")
        self.clips = clips

    def names(self) -> list[str]:
        return sorted({c.name for c in self.clips})

    def count(self, name: str) -> int:
        return sum(c.name == name for c in self.clips)

    def clip(self, name: str, k: int = 0) -> ExpressionClip:
        return [c for c in self.clips if c.name == name][k]

    @classmethod
    def load(cls, entries: dict[str, list[str | os.PathLike]], pipeline=None,
             cache_dir: str | os.PathLike | None = None, skip_videos: bool = False) -> "ExpressionLibrary | None":
        """{name: [files]} -> library; videos need `pipeline` (its driving motion extractor). `skip_videos`: check
        the template files only, without a model (a Ray driver, before any still); returns None then."""
        from generator.animate.motion.paper import clip_template
        from generator.animate.motion.templates import load_motion

        clips = []
        for name, paths in entries.items():
            if not name or not name.replace("_", "").isalnum() or name in ("neutral", "blink", "mouth_open"):
                raise InputError(f"expression library: {name!r} is not a usable expression name (letters, digits, "
                                 "'_'; not neutral/blink/mouth_open, which are procedural)")
            for path in paths:
                path = Path(path).expanduser()
                if not path.is_file():
                    raise MissingFileError(f"expression library: {path} ({name}) does not exist")
                if path.is_symlink() and not path.resolve().is_relative_to(path.parent.resolve()):
                    raise InputError(f"expression library: {path} ({name}) is a link leaving its folder; "
                                     "library files are read only inside their own folder")
                suffix = path.suffix.lower()
                if suffix in TEMPLATE_SUFFIXES:
                    motion = load_motion(path)
                    problem = None if pipeline is None else motion.fit_problem(pipeline.cfg.num_kp)
                    if problem:  # a user's file is refused by name (a cache would be extracted again)
                        raise InputError(f"expression library: {path} ({name}): {problem}")
                elif suffix in VIDEO_SUFFIXES:
                    if skip_videos:
                        continue
                    if pipeline is None:
                        raise InputError(f"expression library: {path} is a video; its motion needs the loaded "
                                         "LivePortrait pipeline (motion extractor)")
                    motion, _ = clip_template(path, pipeline, cache_dir)
                else:
                    raise InputError(f"expression library: {path} is neither a template ({', '.join(TEMPLATE_SUFFIXES)}) "
                                     f"nor a video ({', '.join(VIDEO_SUFFIXES)})")
                if motion.exp is None or len(motion) < 2:
                    raise InputError(f"expression library: {path} has no per-frame expressions (exp), so it cannot "
                                     f"drive the expression {name!r}")
                eye = None if motion.eye_ratio is None else motion.eye_ratio.reshape(len(motion), -1).mean(axis=1)
                lip = None if motion.lip_ratio is None else motion.lip_ratio.reshape(len(motion), -1)[:, 0]
                clips.append(ExpressionClip(name=name, exp_delta=(motion.exp - motion.exp[:1]).astype(np.float32),
                                            eye_ratio=eye, lip_ratio=lip, source=str(path)))
        return None if skip_videos else cls(clips)


def parse_library_spec(spec: str | dict | None) -> dict[str, list[str]]:
    """'smile=a.pkl,smile=b.mp4,frown=c.npz' or {name: path | [paths]} -> {name: [paths]} (empty for None)."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {k: [str(p) for p in (v if isinstance(v, (list, tuple)) else [v])] for k, v in spec.items()}
    entries: dict[str, list[str]] = {}
    for part in str(spec).split(","):
        name, sep, path = part.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"expression library {spec!r}: use 'name=file,name=file' (e.g. smile=smile.pkl)")
        entries.setdefault(name.strip(), []).append(path.strip())
    return entries
