"""W: the warping network. Warps F's 3-D volume by the dense motion and projects it to a 2-D feature map.

(B, 32, 16, 64, 64) volume + x_s, x_d (B, K, 3) -> `out` (B, 256, 64, 64), `deformation`, `occlusion_map`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import WarpingConfig
from .blocks import SameBlock2d
from .dense_motion import DenseMotionNetwork


class WarpingNetwork(nn.Module):
    def __init__(self, cfg: WarpingConfig):
        super().__init__()
        self.cfg = cfg
        self.dense_motion_network = DenseMotionNetwork(cfg.dense_motion, cfg.num_kp, cfg.reshape_channel,
                                                       cfg.estimate_occlusion_map)
        channels = cfg.block_expansion * 2**cfg.num_down_blocks
        self.third = SameBlock2d(cfg.max_features, channels, lrelu=True)
        self.fourth = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        dense = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        deformation = dense["deformation"]
        out = F.grid_sample(feature_3d, deformation.to(feature_3d.dtype), align_corners=False)
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(b, c * d, h, w)))
        occlusion = dense.get("occlusion_map")
        if occlusion is not None:
            out = out * occlusion
        return {"out": out, "deformation": deformation, "occlusion_map": occlusion}
