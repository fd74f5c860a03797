"""Everything that decides what a generated identity looks like, in one dataclass with one fingerprint.

The fingerprint names the corpus: a rerun with the same settings resumes it, different settings are refused
(rather than silently mixing two corpora in one folder). The number of identities, the device, progress and
process layout are not part of it: asking for 500 identities after 100 adds 400, on any machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from generator.stills import PRESETS  # one list of presets for every stage
from thermvision_db.errors import ThermVisionError
from thermvision_db.schema.features import SETS  # the released corpus' two video sets per identity

if TYPE_CHECKING:  # a type only: importing it loads torch, which `thermvision-db --help` must not wait for
    from generator.animate.liveportrait.template import MotionSequence



class SettingsError(ThermVisionError, ValueError):
    """A generation setting is out of range or unknown (preset, motion, sizes, thresholds)."""


class SettingsFileMissing(ThermVisionError, FileNotFoundError):
    """A file a setting names (a model, an expression source) does not exist."""

# Named frame counts per set. "paper" matches the released corpus (354 head-pose + 250 expression).
MOTION_PROGRAMS = {
    "paper": {"head_pose": 354, "expression": 250},
    "short": {"head_pose": 12, "expression": 12},
    "head_pose": {"head_pose": 354},
}
# What drives the head: "varied" (per-identity programs, the default for new corpora), "paper" (LivePortrait's
# d3.mp4/d19.mp4 clips, as the paper), "procedural" (one sweep + blinks/mouth for every identity; older corpora).
MOTION_KINDS = ("varied", "paper", "procedural")


def split_motion(spec: str | dict, default_kind: str = "varied") -> tuple[str, str | dict]:
    """'varied', 'paper', 'procedural:short', 'varied:head_pose=30,expression=20', 'short', {...} -> (kind, frames).

    A kind alone takes the paper's frame counts (for 'paper': at most the clips' lengths); frames alone keep
    `default_kind`. Note 'paper' alone is the paper's clips; 'procedural:paper' is the old paper-length sweep."""
    if isinstance(spec, dict):
        return default_kind, spec
    kind, sep, frames = str(spec).partition(":")
    if sep:
        if kind not in MOTION_KINDS:
            raise SettingsError(f"motion {spec!r}: the program must be one of {', '.join(MOTION_KINDS)}")
        return kind, frames or "paper"
    if spec in MOTION_KINDS:
        return str(spec), "paper"
    return default_kind, spec


def parse_motion(spec: str | dict) -> dict[str, int]:
    """'paper', 'short', or 'head_pose=30,expression=20' -> {set: frames}; clear errors for anything else."""
    if isinstance(spec, dict):
        program = dict(spec)
    elif spec in MOTION_PROGRAMS:
        program = dict(MOTION_PROGRAMS[spec])
    else:
        program = {}
        for part in str(spec).split(","):
            name, sep, frames = part.strip().partition("=")
            if not sep or not frames.strip().isdigit():
                raise SettingsError(f"motion {spec!r}: use one of {sorted(MOTION_PROGRAMS)} or 'head_pose=N,expression=M'")
            program[name.strip()] = int(frames)
    unknown = sorted(set(program) - set(SETS))
    if unknown or not program:
        raise SettingsError(f"motion {spec!r}: sets must be among {SETS}, got {sorted(program)}")
    minimum = {"head_pose": 3, "expression": 10}
    for name, frames in program.items():
        if frames < minimum[name]:
            raise SettingsError(f"motion {spec!r}: the {name} program needs at least {minimum[name]} frames, got {frames}")
    return {name: program[name] for name in SETS if name in program}


def motion_sequence(set_name: str, frames: int) -> tuple[MotionSequence, str]:
    """The procedural driving program of a set and its name for the `driving_template` column."""
    from generator.animate.motion import expression_set, head_pose_sweep

    if set_name == "head_pose":
        return head_pose_sweep(frames), f"head_pose_sweep({frames})"
    return expression_set(frames), f"expression_set({frames})"


def _file_identity(path: str | None) -> dict | None:
    """A weight path as the fingerprint sees it: resolved path, size and mtime (hashing 24 GB each run is slow;
    the sha256 of every file still goes into each identity's record)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.exists():
        return {"spec": str(path)}  # a Hub id: resolved later
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return {"path": str(p.resolve()), "files": [[str(f.relative_to(p)) if p.is_dir() else f.name,
                                                 f.stat().st_size, f.stat().st_mtime_ns] for f in files]}


def _motion_files(settings) -> dict | None:
    if settings.motion_program != "paper":
        return None
    from generator.animate.motion.paper import paper_clip_paths

    return {k: _file_identity(str(v)) for k, v in sorted(paper_clip_paths(settings.driving_clips).items())}


MAX_SEED = 2**63 - 1  # seeds are stored as int64 in the manifest (Parquet) and taken by torch.Generator


def check_seed(value, what: str = "seed") -> int:
    """A seed as a plain integer in 0..2**63-1, or one SettingsError line (2**70, -1, 1.5, '7')."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{what} must be a whole number, got {value!r} ({type(value).__name__})")
    if not 0 <= value <= MAX_SEED:
        raise SettingsError(f"{what} must be between 0 and 2**63-1 (it is stored as a 64-bit integer), got {value}")
    return value


# Keyframe spacing of generated MP4s: a random 8-frame clip read by seeking costs 1.9x the decode of its frames at
# GOP 2 (x2.2 at 3, x14 at x264's 250), for 3.5x the MP4's size (still 8x smaller than the PNG frames) and
# about +0.15 encode CPU-s per video of 302 frames (benchmarks/clips.py; docs/pipeline.md)
DEFAULT_GOP = 2


@dataclass
class GenerationSettings:
    """The settings of one generated corpus."""

    preset: str = "tiny"
    seed: int = 0
    motion: str | dict = "short"  # frames per set, optionally after a program: "varied:short", "paper", ...
    motion_program: str = "varied"  # varied | paper | procedural (a "kind:" prefix in `motion` sets it)
    driving_clips: str | dict | None = None  # motion "paper": a LivePortrait checkout or head_pose=..,expression=..
    expression_library: str | dict | None = None  # varied: 'smile=a.pkl,frown=b.mp4' tagged expression sources
    still_size: int | None = None  # default: 64 for tiny, 512 for thermvision (the paper)
    still_steps: int = 40
    still_batch: int = 8  # stills per FLUX call; part of the fingerprint since batching changes bits on a GPU
    dtype: str = "auto"
    chunk_size: int = 16  # frames per LivePortrait W+G call
    flux: str | None = None
    flux_base: str | None = None
    lora: str | None = None
    lora_scale: float = 0.9
    lora_allow_ignored_keys: bool = False  # apply a LoRA some of whose keys the FLUX loader cannot map
    liveportrait_dir: str | None = None
    prompt_template: str | None = None
    prompt_template_t5: str | None = None  # a separate T5 text (the CLIP-L one is prompt_template)
    still_noise: str = "identity"  # "workflow": XlabsSampler's CUDA draw (seed 749840386044620, batch 2)
    driving_option: str = "expression-friendly"
    stitching: bool = True
    label_detector: str | None = None  # YOLO-style ONNX face detector: labels the still, and checks every frame
    label_landmarker: str | None = None  # SF-TL54-style ONNX 54-point model for the still
    eye_lip_model: str | None = None  # LivePortrait 203-point ONNX: the still's eye/lip opening for retargeting
    distinct: float | None = None  # reject a still whose embedding cosine similarity to an accepted one exceeds this
    frames: str = "png"  # 'png': lossless PNG frames beside each MP4; 'none': the MP4 alone (decoded when loading)
    video_encoder: str = "auto"  # 'auto': h264_nvenc when the GPU and PyAV build offer it, else libx264; 'x264', 'nvenc'
    video_gop: int | None = DEFAULT_GOP  # frames from one keyframe to the next at most (None: the encoder's 250)

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")
        for name in ("prompt_template", "prompt_template_t5"):
            if getattr(self, name) is not None:
                from generator.stills.prompts import check_template

                check_template(getattr(self, name))
        if isinstance(self.lora_scale, bool) or not isinstance(self.lora_scale, (int, float)) \
                or not math.isfinite(self.lora_scale):
            raise SettingsError(f"lora_scale must be a finite number, got {self.lora_scale!r}")
        for name in ("still_steps", "still_batch", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**6:
                raise SettingsError(f"{name} must be a whole number between 1 and 1,000,000, got {value!r}")
        if self.preset not in PRESETS:
            raise SettingsError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        self.motion_program, frames = split_motion(self.motion, self.motion_program)
        if self.motion_program not in MOTION_KINDS:
            raise SettingsError(f"motion_program must be one of {', '.join(MOTION_KINDS)}, got {self.motion_program!r}")
        self.motion = parse_motion(frames)
        if self.motion_program == "paper":
            from generator.animate.motion.paper import paper_clip_paths

            clips = paper_clip_paths(self.driving_clips)
            missing = sorted(set(self.motion) - set(clips))
            if missing:
                raise SettingsError(f"motion 'paper': no driving clip for {missing}; driving_clips gives {sorted(clips)}")
        if self.expression_library is not None:
            from generator.animate.motion.library import parse_library_spec

            for name, paths in parse_library_spec(self.expression_library).items():
                for path in paths:
                    if not Path(path).expanduser().is_file():
                        raise SettingsFileMissing(f"expression library: {path} ({name}) does not exist")
        if self.still_size is None:
            self.still_size = 64 if self.preset == "tiny" else 512
        if self.still_size % 16:
            raise SettingsError(f"still_size must be a multiple of 16, got {self.still_size}")
        if self.still_batch < 1 or self.chunk_size < 1:
            raise SettingsError("still_batch and chunk_size must be >= 1")
        if self.frames not in ("png", "none"):
            raise SettingsError(f"frames must be 'png' or 'none', got {self.frames!r}")
        if self.video_encoder not in ("auto", "x264", "nvenc"):
            raise SettingsError(f"video_encoder must be 'auto', 'x264' or 'nvenc', got {self.video_encoder!r}")
        if self.video_gop is not None and (isinstance(self.video_gop, bool) or not isinstance(self.video_gop, int)
                                           or not 1 <= self.video_gop <= 1000):
            raise SettingsError(f"video_gop must be a whole number between 1 and 1000 (or None), got {self.video_gop!r}")
        if self.distinct is not None and not 0 < self.distinct <= 1:
            raise SettingsError(f"distinct is a cosine-similarity threshold in (0, 1], got {self.distinct}")
        if self.preset == "thermvision" and not self.liveportrait_dir:
            raise SettingsError("preset 'thermvision' needs liveportrait_dir (--liveportrait-dir): the thermal "
                             "LivePortrait weights folder")
        for name in ("label_detector", "label_landmarker", "eye_lip_model"):
            value = getattr(self, name)
            if value is not None and not Path(value).expanduser().is_file():
                raise SettingsFileMissing(f"{name.replace('_', ' ')} {value} does not exist")

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """sha256 over the settings, with weight paths replaced by (path, size, mtime) of their files."""
        data = self.to_dict()
        if not data["lora_allow_ignored_keys"]:
            del data["lora_allow_ignored_keys"]  # corpora made before the option keep their fingerprint
        if data["frames"] == "png" and data["video_encoder"] == "auto":  # the defaults: as before these options
            del data["frames"], data["video_encoder"]
            data["write_png"] = True
        for key in ("flux", "flux_base", "lora", "liveportrait_dir", "label_detector", "label_landmarker",
                    "eye_lip_model"):
            data[key] = _file_identity(data[key])
        for key, default in (("prompt_template_t5", None), ("still_noise", "identity"), ("video_gop", DEFAULT_GOP)):
            if data[key] == default:
                del data[key]  # added later: corpora made before keep their fingerprint
        if (self.motion_program, self.driving_clips, self.expression_library) == ("procedural", None, None):
            for key in ("motion_program", "driving_clips", "expression_library"):
                del data[key]  # corpora made before motion programs existed keep their fingerprint
        else:
            data["driving_clips"] = _motion_files(self)
            data["expression_library"] = None
            if self.expression_library is not None:
                from generator.animate.motion.library import parse_library_spec

                data["expression_library"] = {name: [_file_identity(p) for p in paths] for name, paths
                                              in sorted(parse_library_spec(self.expression_library).items())}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationSettings":
        data = dict(data)
        if "write_png" in data:  # run.json of earlier versions
            data["frames"] = "png" if data.pop("write_png") else "none"
        return cls(**data)


def default_motion(preset: str) -> str:
    """The motion of a corpus when none is asked for: varied programs at the paper's lengths with real weights,
    short ones with the tiny preset (a CPU run)."""
    return "varied:paper" if preset == "thermvision" else "varied:short"


def generated_corpora_dir() -> Path:
    """Generated corpora live beside the `datasets` cache (or in $THERMVISION_DB_GENERATED), one folder per fingerprint."""
    import datasets

    return Path(os.environ.get("THERMVISION_DB_GENERATED", Path(datasets.config.HF_DATASETS_CACHE) / "thermvision_db_generated"))


def default_output_dir(settings: GenerationSettings) -> Path:
    return generated_corpora_dir() / settings.fingerprint()
