"""M: the motion extractor, a ConvNeXt-V2 backbone with keypoint, pose-bin, translation, expression heads.

Parameters live under `detector.` as in the published checkpoints. Input (B, C, 256, 256) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MotionConfig


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor (ConvNeXt's channels_first variant)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation on channels-last tensors."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    def __init__(self, cfg: MotionConfig):
        super().__init__()
        dims, depths = cfg.dims, cfg.depths
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(cfg.image_channel, dims[0], kernel_size=4, stride=4), LayerNorm(dims[0]))]
            + [nn.Sequential(LayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
               for i in range(3)]
        )
        self.stages = nn.ModuleList(nn.Sequential(*[Block(dims[i]) for _ in range(depths[i])]) for i in range(4))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc_kp = nn.Linear(dims[-1], 3 * cfg.num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_yaw = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_roll = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * cfg.num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        x = self.norm(x.mean([-2, -1]))
        return {
            "pitch": self.fc_pitch(x), "yaw": self.fc_yaw(x), "roll": self.fc_roll(x),
            "t": self.fc_t(x), "exp": self.fc_exp(x), "scale": self.fc_scale(x), "kp": self.fc_kp(x),
        }


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected angle of a (B, 66) bin distribution: sum softmax * k * 3 - 97.5 degrees."""
    idx = torch.arange(logits.shape[-1], dtype=torch.float32, device=logits.device)
    return (F.softmax(logits.float(), dim=-1) * idx).sum(-1) * 3 - 97.5


class MotionExtractor(nn.Module):
    def __init__(self, cfg: MotionConfig):
        super().__init__()
        self.cfg = cfg
        self.detector = ConvNeXtV2(cfg)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw head outputs (logits for the pose bins)."""
        return self.detector(image)

    def keypoint_info(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pose in degrees (B,), scale (B, 1), t (B, 3), exp and canonical kp (B, K, 3), all fp32."""
        return self.refine(self.detector(image))

    @staticmethod
    def refine(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw head outputs -> `keypoint_info`'s dict, in fp32 (upstream converts outside its autocast)."""
        out = {k: v.float() for k, v in raw.items()}
        b = out["kp"].shape[0]
        return {
            "pitch": bins_to_degrees(out["pitch"]), "yaw": bins_to_degrees(out["yaw"]),
            "roll": bins_to_degrees(out["roll"]), "scale": out["scale"], "t": out["t"],
            "exp": out["exp"].reshape(b, -1, 3), "kp": out["kp"].reshape(b, -1, 3),
        }


@torch.no_grad()
def make_near_frontal_(extractor: MotionExtractor, spread: float = 0.02) -> MotionExtractor:
    """Random heads made face-like, in place: positive scale ~1, pose ~0 degrees, small translation and expression.

    Random weights give any scale (negative ones mirror every keypoint) and any pose, so labels propagated through
    the tiny preset's motion came out upside down. Real weights never need this; the tiny preset does, so that its
    label sheets look like faces (a neutral first frame keeps the still's landmarks, a yaw moves them). `spread`
    keeps a little of the random dependence on the image.
    """
    det = extractor.detector
    for head in (det.fc_scale, det.fc_pitch, det.fc_yaw, det.fc_roll, det.fc_t, det.fc_exp):
        head.weight.mul_(spread)
        head.bias.zero_()
    det.fc_scale.bias.fill_(1.0)
    centre = det.fc_yaw.bias.shape[0] / 2 - 0.5  # bins k and k+1 around 0 degrees (32, 33 of 66: 32.5 * 3 - 97.5 = 0)
    for head in (det.fc_pitch, det.fc_yaw, det.fc_roll):
        idx = torch.arange(head.bias.shape[0], dtype=head.bias.dtype)
        head.bias.copy_(-((idx - centre) ** 2) / 2.0)  # a narrow bump centred on 0 degrees
    return extractor
