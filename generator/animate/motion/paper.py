"""The paper's motion: LivePortrait's driving clips d3.mp4 (head pose, 354 frames) and d19.mp4 (expressions, 250
frames, 480x480), turned into motion templates once and cached.

Why a cache: extracting a clip's motion runs the driving motion extractor over every frame; a corpus animates
every identity with the same two clips, so the motion is extracted once per (clip, weights) and kept as a
`.npz` template (no pixels, no pickle). The cache key is the clip's sha256 and the sha256 of the extractor's
tensors, so other weights (e.g. a thermally fine-tuned extractor) never reuse a template made with others.
Each identity is then animated as upstream LivePortrait does with a driving video: relative motion from the
clip's first frame, expression-friendly motion multiplier, stitching (the pipeline's AnimationOptions).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from generator.animate.liveportrait.template import MotionSequence
from thermvision_db.errors import InputError, MissingFileError

PAPER_CLIPS = {"head_pose": "d3.mp4", "expression": "d19.mp4"}
PAPER_FRAMES = {"head_pose": 354, "expression": 250}
DRIVING_SUBDIR = Path("assets") / "examples" / "driving"


def paper_clip_paths(spec: str | os.PathLike | dict | None) -> dict[str, Path]:
    """{set: clip}: from a LivePortrait checkout (its assets/examples/driving holds d3.mp4 and d19.mp4), that
    driving folder itself, or explicit paths ({"head_pose": ..., "expression": ...} or "head_pose=a.mp4,expression=b.mp4")."""
    if spec is None:
        raise InputError("motion 'paper' needs LivePortrait's driving clips: pass driving_clips (--driving-clips) "
                         "with a LivePortrait checkout, its assets/examples/driving folder, or "
                         "'head_pose=d3.mp4,expression=d19.mp4'")
    if isinstance(spec, dict):
        paths = {k: Path(v).expanduser() for k, v in spec.items()}
    elif "=" in str(spec):
        paths = {}
        for part in str(spec).split(","):
            name, _, value = part.partition("=")
            paths[name.strip()] = Path(value.strip()).expanduser()
    else:
        root = Path(spec).expanduser()
        folder = root / DRIVING_SUBDIR if (root / DRIVING_SUBDIR).is_dir() else root
        paths = {k: folder / v for k, v in PAPER_CLIPS.items()}
    unknown = sorted(set(paths) - set(PAPER_CLIPS))
    if unknown:
        raise InputError(f"driving clips: unknown set(s) {unknown}; use head_pose= and expression=")
    for name, path in paths.items():
        if not path.is_file():
            raise MissingFileError(f"driving clip for {name} not found: {path} (the paper used LivePortrait's "
                                    f"{DRIVING_SUBDIR / PAPER_CLIPS[name]})")
    return paths


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """Beside the project's weight-hash cache: $THERMVISION_CACHE or ~/.cache/thermvision_db, then motion/."""
    return Path(os.environ.get("THERMVISION_CACHE", Path.home() / ".cache" / "thermvision_db")) / "motion"


def extractor_sha256(pipeline) -> str:
    """The identity of the driving motion extractor's weights (their tensors, not a file path)."""
    from generator.weights import state_dict_sha256

    return state_dict_sha256(pipeline.nets.driving_extractor)


def clip_template(path: str | os.PathLike, pipeline, cache_dir: str | os.PathLike | None = None,
                  detector=None) -> tuple[MotionSequence, dict]:
    """The motion of a driving clip, extracted once per (clip sha256, extractor weights) and cached as .npz.

    A cached template that fails its checks (damaged, NaN, 0 frames, keypoints that do not fit the loaded model)
    is the project's own file: it is extracted again and replaced, never used and never a reason to fail.
    Returns (motion, record) where record names the clip, both hashes, the cache file and "hit" / "miss" /
    "replaced" (with the reason the old file failed).
    """
    from generator.animate.motion.driving_video import motion_from_video
    from generator.animate.motion.templates import load_template, save_template

    path = Path(path)
    clip_sha, weights_sha = file_sha256(path), extractor_sha256(pipeline)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = folder / f"{path.stem}-{clip_sha[:16]}-{weights_sha[:16]}.npz"
    record = {"clip": str(path), "clip_sha256": clip_sha, "extractor_sha256": weights_sha, "template": str(cached)}
    state, problem = "miss", None
    if cached.is_symlink() or (cached.exists() and not cached.is_file()):
        problem = "not a regular file"
    elif cached.is_file():
        try:
            motion = load_template(cached)
            problem = motion.fit_problem(pipeline.cfg.num_kp)
            if problem is None:
                return motion, {**record, "cache": "hit"}
        except (ValueError, OSError, KeyError) as err:  # InputError is a ValueError: NaN, 0 frames, damaged
            problem = str(err).removeprefix(f"{cached}: ")
    if problem is not None:
        state = "replaced"
        print(f"note: cached motion {cached} fails its check ({problem}); extracting it again", file=sys.stderr)
        if cached.is_symlink() or cached.is_file():
            cached.unlink()  # a link is removed, never followed
        elif cached.is_dir():
            raise InputError(f"{cached} is a folder where the motion cache keeps a template; remove it")
    motion = motion_from_video(path, pipeline, detector=detector)
    motion.name = path.stem
    folder.mkdir(parents=True, exist_ok=True)
    save_template(motion, cached)
    return motion, {**record, "cache": state, **({"replaced_because": problem} if problem else {})}
