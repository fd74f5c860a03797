"""Carry 2-D points on the source image into animated frames (label propagation).

The motion is known only at the K implicit keypoints. A point is lifted to 3-D with a depth interpolated from
the nearest source keypoints, moved by the frame's similarity (R_s^T R_new, s_new / s_s, t_new - t_s), then
corrected by the interpolated residual of the keypoints (expression, stitching). Exact at the keypoints, smooth
in between; an approximation of the dense warp, good for boxes and coarse landmarks.
"""

from __future__ import annotations

import numpy as np
import torch


def _idw_weights(query: torch.Tensor, anchors: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """(N, 2) x (K, 2) -> (N, K) inverse-distance weights, one-hot where a query hits an anchor."""
    d = torch.cdist(query, anchors)
    hit = d < 1e-6
    w = 1.0 / d.clamp_min(1e-6) ** power
    w = torch.where(hit.any(1, keepdim=True), hit.float(), w)
    return w / w.sum(1, keepdim=True)


def map_points(source, points: np.ndarray, keypoints: dict, input_size: int, output_size: int) -> np.ndarray:
    """(N, 2) pixel (x, y) on the source image -> (T, N, 2) pixels in the animated frames."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    crop = source.crop
    if crop is not None:
        pts = pts @ crop.M_o2c[:, :2].T + crop.M_o2c[:, 2]
        size_h = size_w = crop.crop_size
    else:
        size_h, size_w = source.image.shape[:2]
    g = torch.tensor(np.stack([(2 * pts[:, 0] + 1) / size_w - 1, (2 * pts[:, 1] + 1) / size_h - 1], 1),
                     dtype=torch.float32)
    info = source.info
    x_s = info.x_s[0].float().cpu()
    w = _idw_weights(g, x_s[:, :2])
    p = torch.cat([g, (w @ x_s[:, 2:])], 1)  # (N, 3)
    R_new, s_new = keypoints["R"].float().cpu(), keypoints["scale"].float().cpu()
    t_new, x_d = keypoints["t"].float().cpu(), keypoints["x_d"].float().cpu()
    t_s = torch.cat([info.t[0, :2].float().cpu(), torch.zeros(1)])
    A = (s_new.reshape(-1, 1, 1) / info.scale.float().cpu().reshape(1, 1, 1)) * (info.R[0].float().cpu().T @ R_new)

    def rigid(q: torch.Tensor) -> torch.Tensor:  # (M, 3) -> (T, M, 3)
        return (q - t_s) @ A + t_new[:, None, :]

    residual = x_d - rigid(x_s)  # (T, K, 3)
    moved = rigid(p) + w @ residual  # (T, N, 3)
    xy = moved[..., :2].numpy().astype(np.float64)
    if crop is None:
        out_h, out_w = output_size, output_size
        return np.stack([((xy[..., 0] + 1) * out_w - 1) / 2, ((xy[..., 1] + 1) * out_h - 1) / 2], -1)
    u = ((xy[..., 0] + 1) * crop.crop_size - 1) / 2
    v = ((xy[..., 1] + 1) * crop.crop_size - 1) / 2
    M = crop.M_c2o
    return np.stack([M[0, 0] * u + M[0, 1] * v + M[0, 2], M[1, 0] * u + M[1, 1] * v + M[1, 2]], -1)
