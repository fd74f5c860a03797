"""The dense motion network inside W: from source/driving keypoints to a 3-D deformation field and occlusion.

Each keypoint k proposes the flow `grid - x_d[k] + x_s[k]`; an hourglass over the warped, compressed feature
volume and Gaussian heatmaps picks a soft mixture of these proposals per voxel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DenseMotionConfig
from .blocks import Hourglass, kp2gaussian, make_coordinate_grid


class DenseMotionNetwork(nn.Module):
    def __init__(self, cfg: DenseMotionConfig, num_kp: int, feature_channel: int, estimate_occlusion_map: bool = True):
        super().__init__()
        self.num_kp = num_kp
        self.hourglass = Hourglass(cfg.block_expansion, (num_kp + 1) * (cfg.compress + 1), cfg.num_blocks,
                                   cfg.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, cfg.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(cfg.compress, affine=True)
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters * cfg.reshape_depth, 1, kernel_size=7, padding=3)
                          if estimate_occlusion_map else None)

    def sparse_motions(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """(B, K+1, D, H, W, 3): identity for the background, then one flow proposal per keypoint."""
        b, _, d, h, w = feature.shape
        grid = make_coordinate_grid((d, h, w), kp_source).view(1, 1, d, h, w, 3)
        to_source = grid - kp_driving.view(b, self.num_kp, 1, 1, 1, 3) + kp_source.view(b, self.num_kp, 1, 1, 1, 3)
        return torch.cat([grid.expand(b, 1, d, h, w, 3), to_source], dim=1)

    def deformed_features(self, feature: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = feature.shape
        k1 = self.num_kp + 1
        repeated = feature.unsqueeze(1).expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w)
        warped = F.grid_sample(repeated, motions.reshape(b * k1, d, h, w, 3), align_corners=False)
        return warped.view(b, k1, c, d, h, w)

    def heatmaps(self, spatial: tuple[int, int, int], kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        heat = kp2gaussian(kp_driving, spatial, 0.01) - kp2gaussian(kp_source, spatial, 0.01)
        zeros = heat.new_zeros(heat.shape[0], 1, *spatial)
        return torch.cat([zeros, heat], dim=1).unsqueeze(2)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, d, h, w = feature.shape
        feature = F.relu(self.norm(self.compress(feature)))
        motions = self.sparse_motions(feature, kp_driving, kp_source)
        deformed = self.deformed_features(feature, motions)
        heat = self.heatmaps((d, h, w), kp_driving, kp_source).to(deformed.dtype)
        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        deformation = torch.einsum("bkdhwc,bkdhw->bdhwc", motions.to(mask.dtype), mask)
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return out
