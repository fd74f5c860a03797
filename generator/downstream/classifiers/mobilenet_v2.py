"""MobileNet-V2 (Sandler et al. 2018) in plain torch, with torchvision's module names (`features.N...`,
`classifier.1`) so its ImageNet state_dict loads. 3,504,872 parameters at 1000 classes."""

from __future__ import annotations

import torch
from torch import nn

# expansion t, output channels c, repeats n, first stride s (the paper's table 2)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_act(inp: int, oup: int, kernel: int = 3, stride: int = 1, groups: int = 1, act=nn.ReLU6) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: conv (no bias) -> BatchNorm -> activation, keys `0.weight`, `1.*`."""
    layers = [nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(oup)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion (unless t = 1) -> 3x3 depthwise -> linear 1x1 projection; a residual when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == oup
        layers = [conv_bn_act(inp, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, oup, 1, bias=False),
                   nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """features (stem, 17 inverted residuals, 1x1 to 1280) -> global average pool -> dropout -> linear."""

    head = "classifier.1"

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        features, inp = [conv_bn_act(3, 32, 3, 2)], 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(conv_bn_act(inp, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))
