"""Clean-room thermal LivePortrait: networks F, M, W, G, S, checkpoint loading and the retargeting algorithm.

    from generator.animate.liveportrait import LivePortraitNetworks, LivePortraitPipeline
    from generator.animate.motion import head_pose_sweep
    pipe = LivePortraitPipeline(LivePortraitNetworks.from_pretrained("weights/"), dtype="bf16")
    result = pipe.animate(pipe.prepare_source(still), head_pose_sweep())
"""

from .algorithm import AnimationOptions, SourceInfo
from .camera import matrix_to_degrees, rotation_matrix
from .checkpoint import CheckpointError
from .config import LivePortraitConfig
from .crop import CropTransform, crop_from_box
from .model import LivePortraitNetworks
from .output import write_animation
from .pipeline import AnimationResult, LivePortraitPipeline, SourceState
from .template import MotionSequence

__all__ = ["AnimationOptions", "AnimationResult", "CheckpointError", "CropTransform", "LivePortraitConfig",
           "LivePortraitNetworks", "LivePortraitPipeline", "MotionSequence", "SourceInfo", "SourceState",
           "crop_from_box", "matrix_to_degrees", "rotation_matrix", "write_animation"]
