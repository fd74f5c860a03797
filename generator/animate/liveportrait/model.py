"""The five networks together, with `from_config`, `from_pretrained` and `save_pretrained`.

A separate driving motion extractor may be attached: the ThermVision source is thermal, the driving video RGB,
so a thermally tuned M for the source and the upstream M for the driving frames is a sensible pairing.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from thermvision_db.errors import InputError

from . import checkpoint as ckpt
from .config import LivePortraitConfig
from .networks.appearance_feature_extractor import AppearanceFeatureExtractor
from .networks.motion_extractor import MotionExtractor
from .networks.spade_generator import SPADEDecoder
from .networks.stitching_retargeting_network import StitchingRetargeting
from .networks.warping_network import WarpingNetwork

CONFIG_NAME = "liveportrait_config.json"
LAYOUTS = {  # layout -> (suffix, file stem per role)
    "upstream": (".pth", {r: r for r in ckpt.ROLES}),
    "comfyui": (".safetensors", {r: r for r in ckpt.ROLES}),
    "thermvision": (".safetensors", {**{r: r for r in ckpt.ROLES}, "motion_extractor": "thermal_motion_extractor",
                                     "spade_generator": "thermal_spade_generator"}),
}


class LivePortraitNetworks(nn.Module):
    def __init__(self, cfg: LivePortraitConfig, driving_motion_extractor: MotionExtractor | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.appearance_feature_extractor = AppearanceFeatureExtractor(cfg.appearance)
        self.motion_extractor = MotionExtractor(cfg.motion)
        self.warping_module = WarpingNetwork(cfg.warping)
        self.spade_generator = SPADEDecoder(cfg.spade)
        self.stitching_retargeting_module = StitchingRetargeting(cfg.stitching, cfg.num_kp)
        self.driving_motion_extractor = driving_motion_extractor
        self.eval()

    @property
    def driving_extractor(self) -> MotionExtractor:
        return self.driving_motion_extractor or self.motion_extractor

    @classmethod
    def from_config(cls, cfg: LivePortraitConfig | None = None, seed: int | None = 0) -> "LivePortraitNetworks":
        """Random weights (tests, benchmarks). BN running stats are perturbed so eval mode is not a no-op."""
        cfg = cfg or LivePortraitConfig()
        if seed is not None:
            torch.manual_seed(seed)
        model = cls(cfg)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.8, 1.2)
        return model

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        cfg: LivePortraitConfig | None = None,
        driving_motion_extractor: str | os.PathLike | None = None,
        **files: str | os.PathLike,
    ) -> "LivePortraitNetworks":
        """Load a weights folder in any supported layout; `files` may override single roles by path.

        The config is the published one unless a `liveportrait_config.json` sits in the folder or `cfg` is
        given; the input channel count is always read from the weights.
        """
        folder = Path(folder)
        if cfg is None:
            cfg = LivePortraitConfig.load(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else LivePortraitConfig()
        cfg = copy.deepcopy(cfg)
        paths = {role: Path(files[role]) if role in files else ckpt.find_checkpoint(folder, role) for role in ckpt.ROLES}
        unknown = set(files) - set(ckpt.ROLES)
        if unknown:
            raise TypeError(f"unknown weight roles {sorted(unknown)}; expected {ckpt.ROLES}")
        sds = {role: ckpt.load_state_dict(p) for role, p in paths.items()}
        cfg.appearance.image_channel = ckpt.image_channels(sds["appearance_feature_extractor"], "first.conv.weight",
                                                           str(paths["appearance_feature_extractor"]))
        cfg.motion.image_channel = ckpt.image_channels(sds["motion_extractor"], "detector.downsample_layers.0.0.weight",
                                                       str(paths["motion_extractor"]))
        model = cls(cfg)
        for role, sd in sds.items():
            ckpt.load_into(getattr(model, role), sd, str(paths[role]))
        if driving_motion_extractor is not None:
            model.driving_motion_extractor = load_motion_extractor(driving_motion_extractor, cfg)
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike, layout: str = "comfyui") -> Path:
        """Write the five files plus the config in `layout` ('upstream', 'comfyui' or 'thermvision')."""
        if layout not in LAYOUTS:
            raise InputError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        suffix, stems = LAYOUTS[layout]
        for role in ckpt.ROLES:
            ckpt.save_network(getattr(self, role).state_dict(), folder / (stems[role] + suffix), role, layout)
        self.cfg.save(folder / CONFIG_NAME)
        return folder


def load_motion_extractor(path: str | os.PathLike, cfg: LivePortraitConfig) -> MotionExtractor:
    """A stand-alone motion extractor (e.g. the upstream RGB one used for driving frames)."""
    sd = ckpt.load_state_dict(path)
    mcfg = copy.deepcopy(cfg.motion)
    mcfg.image_channel = ckpt.image_channels(sd, "detector.downsample_layers.0.0.weight", str(path))
    m = MotionExtractor(mcfg)
    ckpt.load_into(m, sd, str(path))
    return m.eval()
