"""Motion sources for the animation stage, each returning a `MotionSequence`.

- `procedural`: `head_pose_sweep` (exact yaw, then pitch, then roll) and `expression_set` (blinks, mouth).
- `templates`: upstream LivePortrait `.pkl` templates in every upstream layout (`liveportrait_pkl`, restricted
  unpickler) and the project's `.npz` / `.safetensors`; `load_motion` picks by suffix; `load_lip_array`.
- `driving_video`: `motion_from_video` through the driving motion extractor, `OnnxFaceDetector` to crop;
  `motion_from_image` for one driving image.
"""

from generator.animate.liveportrait.template import MotionSequence
from generator.animate.motion.driving_video import OnnxFaceDetector, motion_from_image, motion_from_video
from generator.animate.motion.procedural import expression_set, head_pose_sweep
from generator.animate.motion.templates import (
           load_lip_array,
           load_liveportrait_pkl,
           load_motion,
           load_template,
           save_template,
)
from generator.safe_pickle import UnsafePickleError

__all__ = ["MotionSequence", "head_pose_sweep", "expression_set", "motion_from_video", "motion_from_image",
           "load_liveportrait_pkl", "load_lip_array",
           "save_template", "load_template", "OnnxFaceDetector", "load_motion", "UnsafePickleError"]
