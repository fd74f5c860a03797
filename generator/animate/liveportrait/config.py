"""Hyper-parameters of the five networks in one place (the upstream models.yaml as dataclasses).

The default is the published configuration, so the official and the ThermVision weights load. `tiny()` keeps
the shape constraints between the networks (checked by `validate`) so tests and the CPU benchmark run fast.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from thermvision_db.errors import InputError


@dataclass
class AppearanceConfig:
    """F: 2-D encoder lifted to a 3-D feature volume."""

    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


@dataclass
class MotionConfig:
    """M: ConvNeXt-V2 backbone with pose/expression heads (published: the tiny variant)."""

    image_channel: int = 3
    num_kp: int = 21
    num_bins: int = 66
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)


@dataclass
class DenseMotionConfig:
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4


@dataclass
class WarpingConfig:
    """W: dense motion hourglass + 3-D warp of F's volume + 2-D projection."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    estimate_occlusion_map: bool = True
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


@dataclass
class SpadeConfig:
    """G: SPADE decoder; two hard-coded x2 upsamples plus a pixel shuffle when upscale > 1."""

    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64
    spade_hidden: int = 128

    @property
    def input_channels(self) -> int:
        return min(self.max_features, self.block_expansion * 2**self.num_down_blocks)


@dataclass
class StitchingConfig:
    """S: hidden sizes of the stitching, lip and eye MLPs (input/output sizes follow from num_kp)."""

    stitching_hidden: tuple[int, ...] = (128, 128, 64)
    lip_hidden: tuple[int, ...] = (128, 128, 64)
    eye_hidden: tuple[int, ...] = (256, 256, 128, 128, 64)


@dataclass
class LivePortraitConfig:
    input_size: int = 256
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    warping: WarpingConfig = field(default_factory=WarpingConfig)
    spade: SpadeConfig = field(default_factory=SpadeConfig)
    stitching: StitchingConfig = field(default_factory=StitchingConfig)

    @property
    def num_kp(self) -> int:
        return self.motion.num_kp

    @property
    def output_size(self) -> int:
        feature = self.input_size // 2**self.appearance.num_down_blocks
        return feature * 4 * (2 if self.spade.upscale > 1 else 1)

    @classmethod
    def tiny(cls, input_size: int = 64, num_kp: int = 6) -> "LivePortraitConfig":
        """A few-thousand-parameter config with the published topology (for tests and the CPU benchmark)."""
        cfg = cls(
            input_size=input_size,
            appearance=AppearanceConfig(block_expansion=8, max_features=32, reshape_channel=8, reshape_depth=4,
                                        num_resblocks=2),
            motion=MotionConfig(num_kp=num_kp, depths=(1, 1, 1, 1), dims=(8, 16, 16, 16)),
            warping=WarpingConfig(num_kp=num_kp, max_features=32, reshape_channel=8,
                                  block_expansion=4,
                                  dense_motion=DenseMotionConfig(block_expansion=8, max_features=32, num_blocks=2,
                                                                 reshape_depth=4, compress=2)),
            spade=SpadeConfig(block_expansion=4, max_features=16, out_channels=8, spade_hidden=16),
            stitching=StitchingConfig((16, 16), (16, 16), (16, 16)),
        )
        cfg.validate()
        return cfg

    def validate(self) -> "LivePortraitConfig":
        """Check the cross-network shape constraints; raise a ValueError naming the violated one."""
        a, w, g, m = self.appearance, self.warping, self.spade, self.motion
        problems = []
        if a.reshape_channel * a.reshape_depth != a.max_features:
            problems.append("appearance.reshape_channel * reshape_depth must equal appearance.max_features")
        if w.max_features != a.reshape_channel * a.reshape_depth:
            problems.append("warping.max_features must equal appearance.reshape_channel * reshape_depth")
        if w.reshape_channel != a.reshape_channel:
            problems.append("warping.reshape_channel must equal appearance.reshape_channel")
        if w.dense_motion.reshape_depth != a.reshape_depth:
            problems.append("warping.dense_motion.reshape_depth must equal appearance.reshape_depth")
        if w.num_kp != m.num_kp:
            problems.append("warping.num_kp must equal motion.num_kp")
        if g.input_channels != w.block_expansion * 2**w.num_down_blocks:
            problems.append("spade input channels must equal warping.block_expansion * 2**num_down_blocks")
        feature = self.input_size // 2**a.num_down_blocks
        if self.input_size % 2**a.num_down_blocks or feature % 2**w.dense_motion.num_blocks:
            problems.append(f"feature size {feature} must be divisible by 2**dense_motion.num_blocks")
        if self.input_size % 32:
            problems.append("input_size must be divisible by 32 (ConvNeXt stem x4 and three x2 downsamples)")
        if len(m.depths) != 4 or len(m.dims) != 4:
            problems.append("motion.depths and motion.dims need four stages")
        if problems:
            raise InputError("invalid LivePortrait config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LivePortraitConfig":
        data = dict(data)
        warping = dict(data.get("warping", {}))
        if "dense_motion" in warping:
            warping["dense_motion"] = DenseMotionConfig(**warping["dense_motion"])
        motion = {k: tuple(v) if isinstance(v, list) else v for k, v in data.get("motion", {}).items()}
        stitching = {k: tuple(v) for k, v in data.get("stitching", {}).items()}
        return cls(
            input_size=data.get("input_size", 256),
            appearance=AppearanceConfig(**data.get("appearance", {})),
            motion=MotionConfig(**motion),
            warping=WarpingConfig(**warping),
            spade=SpadeConfig(**data.get("spade", {})),
            stitching=StitchingConfig(**stitching),
        ).validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "LivePortraitConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
