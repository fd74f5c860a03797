"""Head-pose conventions: angles in degrees <-> the row-vector rotation matrices applied as `kp @ R`.

Upstream builds `Rz(roll) @ Ry(yaw) @ Rx(pitch)` and returns its transpose, because keypoints are row vectors.
"""

from __future__ import annotations

import math

import torch


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B,) angles in degrees -> (B, 3, 3) = (Rz(roll) Ry(yaw) Rx(pitch))^T."""
    # degrees / 180 * pi in that order, as upstream (one rounding step fewer would differ in the last bit)
    p, y, r = (torch.as_tensor(a, dtype=torch.float32).reshape(-1) / 180 * math.pi for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], 1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).view(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], 1).view(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)


def matrix_to_degrees(rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `rotation_matrix` (yaw in (-90, 90)): (B, 3, 3) -> pitch, yaw, roll in degrees."""
    m = rot.float().transpose(1, 2)  # back to Rz Ry Rx
    yaw = torch.asin((-m[:, 2, 0]).clamp(-1, 1))
    pitch = torch.atan2(m[:, 2, 1], m[:, 2, 2])
    roll = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    deg = 180 / math.pi
    return pitch * deg, yaw * deg, roll * deg
