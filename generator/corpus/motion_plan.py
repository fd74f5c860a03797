"""Which motion drives identity i's video of a set, and its per-frame labels: the corpus side of the motion
programs (varied per identity, the paper's clips, or the procedural sweep of older corpora)."""

from __future__ import annotations

from dataclasses import replace

from generator.animate.liveportrait.template import MotionSequence
from generator.corpus.settings import GenerationSettings, motion_sequence

VARIED_FPS = 30.0


class MotionPlan:
    """One per corpus run: loads the expression library and the paper's clip templates once, lazily."""

    def __init__(self, settings: GenerationSettings, animator, cache_dir=None):
        self.settings = settings
        self.animator = animator
        self.cache_dir = cache_dir
        self._library = None
        self._clips: dict[str, tuple[MotionSequence, dict]] = {}

    def library(self):
        if self._library is None and self.settings.expression_library is not None:
            from generator.animate.motion.library import ExpressionLibrary, parse_library_spec

            self._library = ExpressionLibrary.load(parse_library_spec(self.settings.expression_library),
                                                   pipeline=self.animator, cache_dir=self.cache_dir)
        return self._library

    def clip(self, set_name: str) -> tuple[MotionSequence, dict]:
        if set_name not in self._clips:
            from generator.animate.motion.paper import clip_template, paper_clip_paths

            path = paper_clip_paths(self.settings.driving_clips)[set_name]
            self._clips[set_name] = clip_template(path, self.animator, self.cache_dir)
        return self._clips[set_name]

    @staticmethod
    def reads_files(settings: GenerationSettings) -> bool:
        """Whether the run's motion comes from files (the paper's clips, an expression library)."""
        return settings.motion_program == "paper" or settings.expression_library is not None

    @staticmethod
    def check_templates(settings: GenerationSettings) -> None:
        """The library's template files checked without a model (values, frames, links): what a driver that never
        loads LivePortrait (the Ray engine's) can check before any still; videos and keypoint counts wait for the
        model."""
        if settings.expression_library is not None:
            from generator.animate.motion.library import ExpressionLibrary, parse_library_spec

            ExpressionLibrary.load(parse_library_spec(settings.expression_library), skip_videos=True)

    def check_files(self) -> None:
        """Every motion and library file the run will use, loaded and checked now, before any still: finite
        values, at least one frame, keypoints that fit the loaded model, no link leaving its folder. A failing
        cache is extracted again; a user's file stops the run naming it (rather than failing each identity)."""
        self.library()
        if self.settings.motion_program == "paper":
            for set_name in self.settings.motion:
                self.clip(set_name)

    def sequence(self, index: int, set_name: str, frames: int, source, options
                 ) -> tuple[MotionSequence, str, list[dict] | None, dict, object]:
        """(motion, driving_template name, per-frame labels or None, record for identity.json, the animation
        options to use: varied programs turn eye/lip retargeting on explicitly, since a program with library
        expressions also carries `exp`, for which upstream's default leaves retargeting off)."""
        kind = self.settings.motion_program
        if kind == "procedural":
            motion, name = motion_sequence(set_name, frames)
            return motion, name, procedural_labels(motion), {"program": "procedural"}, options
        if kind == "paper":
            motion, record = self.clip(set_name)
            motion = motion.slice(0, min(frames, len(motion)))
            return motion, f"{motion.name}.mp4", None, {"program": "paper", **record}, options
        from generator.animate.motion.varied import varied_program

        program = varied_program(self.settings.seed, index, set_name, frames, fps=VARIED_FPS, library=self.library())
        eye = sum(options.source_eye_ratio) / 2
        motion = program.bind(source.info.exp[0].detach().cpu().numpy(), eye, options.source_lip_ratio)
        name = f"varied(seed={self.settings.seed}, identity={index}, {set_name}, {frames})"
        record = {"program": "varied", "params": program.params,
                  "segments": [list(s) for s in program.segments]}
        options = replace(options, eye_retargeting=True, lip_retargeting=True)
        return motion, name, program.frame_labels(), record, options


def procedural_labels(motion: MotionSequence) -> list[dict]:
    """The procedural programs' known eye/lip ratios (expression names are not segmented there)."""
    eye = None if motion.eye_ratio is None else motion.eye_ratio[:, 0]
    lip = None if motion.lip_ratio is None else motion.lip_ratio[:, 0]
    return [{"expression": None, "eye_open": None if eye is None else float(eye[t]),
             "mouth_open": None if lip is None else float(lip[t])} for t in range(len(motion))]
