"""G: the SPADE decoder. W's feature map (B, 256, 64, 64), used as both input and segmap -> (B, 3, 512, 512) in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SpadeConfig
from .blocks import SPADEResnetBlock


class SPADEDecoder(nn.Module):
    def __init__(self, cfg: SpadeConfig):
        super().__init__()
        self.cfg = cfg
        cin, hidden = cfg.input_channels, cfg.spade_hidden
        self.fc = nn.Conv2d(cin, 2 * cin, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * cin, 2 * cin, cin, hidden))
        self.up_0 = SPADEResnetBlock(2 * cin, cin, cin, hidden)
        self.up_1 = SPADEResnetBlock(cin, cfg.out_channels, cin, hidden)
        if cfg.upscale > 1:
            self.conv_img = nn.Sequential(nn.Conv2d(cfg.out_channels, 3 * 4, kernel_size=3, padding=1), nn.PixelShuffle(2))
        else:
            self.conv_img = nn.Conv2d(cfg.out_channels, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))
