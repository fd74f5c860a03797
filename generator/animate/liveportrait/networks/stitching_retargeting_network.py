"""S: three small MLPs. Stitching keeps the animated face aligned with the source (so paste-back has no seams);
eye and lip retargeting map open/close ratios to keypoint offsets.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import StitchingConfig


class StitchingRetargetingNetwork(nn.Module):
    """[Linear, ReLU] * n + Linear under `mlp.` (keys mlp.0, mlp.2, ...)."""

    def __init__(self, input_size: int, hidden_sizes: tuple[int, ...], output_size: int):
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-1], output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


GROUPS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}


class StitchingRetargeting(nn.Module):
    """The three MLPs together; names `stitching`, `lip`, `eye` (upstream file groups in `GROUPS`)."""

    def __init__(self, cfg: StitchingConfig, num_kp: int):
        super().__init__()
        k3 = 3 * num_kp
        self.num_kp = num_kp
        self.stitching = StitchingRetargetingNetwork(2 * k3, cfg.stitching_hidden, k3 + 2)
        self.lip = StitchingRetargetingNetwork(k3 + 2, cfg.lip_hidden, k3)
        self.eye = StitchingRetargetingNetwork(k3 + 3, cfg.eye_hidden, k3)

    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """x_d + the predicted expression offset and (tx, ty) shift."""
        b, k = kp_source.shape[:2]
        delta = self.stitching(torch.cat([kp_source.reshape(b, -1), kp_driving.reshape(b, -1)], dim=1))
        out = kp_driving + delta[:, : 3 * k].reshape(b, k, 3)
        shift = torch.cat([delta[:, 3 * k: 3 * k + 2], delta.new_zeros(b, 1)], dim=1)
        return out + shift[:, None, :]

    def retarget_eye(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """ratios (B, 3) = [source left eye, source right eye, driving eye] -> offset (B, K, 3)."""
        b, k = kp_source.shape[:2]
        return self.eye(torch.cat([kp_source.reshape(b, -1), ratios], dim=1)).reshape(b, k, 3)

    def retarget_lip(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """ratios (B, 2) = [source lip, driving lip] -> offset (B, K, 3)."""
        b, k = kp_source.shape[:2]
        return self.lip(torch.cat([kp_source.reshape(b, -1), ratios], dim=1)).reshape(b, k, 3)
