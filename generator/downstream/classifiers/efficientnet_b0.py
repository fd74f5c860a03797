"""EfficientNet-B0 (Tan & Le 2019) in plain torch, with torchvision's module names (`features.S.B.block.K...`,
`classifier.1`) so its ImageNet state_dict loads. 5,288,548 parameters at 1000 classes."""

from __future__ import annotations

import torch
from torch import nn

from generator.downstream.classifiers.mobilenet_v2 import conv_bn_act

# expansion, kernel, stride, input channels, output channels, blocks (B0: width and depth multipliers 1.0)
STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class SqueezeExcitation(nn.Module):
    """Channel gates: global average -> 1x1 (fc1) -> SiLU -> 1x1 (fc2) -> sigmoid, times the input."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class MBConv(nn.Module):
    """1x1 expansion (unless 1) -> kxk depthwise -> squeeze-excitation -> linear 1x1 projection; stochastic depth
    on the residual while training (rows dropped at `drop` probability, the rest rescaled)."""

    def __init__(self, expand: int, kernel: int, stride: int, inp: int, oup: int, drop: float):
        super().__init__()
        hidden = inp * expand
        layers = [conv_bn_act(inp, hidden, 1, act=nn.SiLU)] if expand != 1 else []
        layers += [conv_bn_act(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU),
                   SqueezeExcitation(hidden, max(1, inp // 4)), conv_bn_act(hidden, oup, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and inp == oup
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if not self.use_res_connect:
            return out
        if self.training and self.drop > 0:
            keep = torch.empty((out.shape[0], 1, 1, 1), device=out.device).bernoulli_(1 - self.drop)
            out = out * keep / (1 - self.drop)
        return out + x


class EfficientNetB0(nn.Module):
    """features (stem, 7 stages of MBConv, 1x1 to 1280) -> global average pool -> dropout -> linear."""

    head = "classifier.1"

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, stochastic_depth: float = 0.2):
        super().__init__()
        total, index = sum(s[-1] for s in STAGES), 0
        features = [conv_bn_act(3, 32, 3, 2, act=nn.SiLU)]
        for expand, kernel, stride, inp, oup, blocks in STAGES:
            stage = []
            for b in range(blocks):
                stage.append(MBConv(expand, kernel, stride if b == 0 else 1, inp if b == 0 else oup, oup,
                                    stochastic_depth * index / total))
                index += 1
            features.append(nn.Sequential(*stage))
        features.append(conv_bn_act(320, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.out_features ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
