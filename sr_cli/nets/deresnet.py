"""The degradation estimator S3Diff conditions on: MM-RealSR's ``DEResNet`` (Mou et al., Metric Learning based
Interactive Modulation for Real-World Super-Resolution, ECCV 2022, arXiv:2205.05065).

One branch per degradation (S3Diff uses two: blur and noise), each a plain ResNet without batch norm on the
low-resolution image in [0, 1], global average pooling and a two-layer head ending in a sigmoid: one score in
(0, 1) per degradation. Parameter names follow the published ``de_net.pth`` (``conv_first.N``, ``body.N.M.conv1``,
``fc_degree.N.0``/``.2``) so it loads as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlockNoBN(nn.Module):
    """3x3 conv - ReLU - 3x3 conv with an identity shortcut (BasicSR's block of the same name)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class DEResNet(nn.Module):
    """Scores ``num_degradation`` degradations of an image; ``forward`` returns ``(B, num_degradation)``.

    The defaults are the published network's (the authors build it as ``DEResNet(num_in_ch=3, num_degradation=2)``).
    """

    def __init__(self, num_in_ch: int = 3, num_degradation: int = 2, num_feats=(64, 64, 64, 128),
                 num_blocks=(2, 2, 2, 2), downscales=(1, 1, 2, 1)):
        super().__init__()
        if not len(num_feats) == len(num_blocks) == len(downscales):
            raise ValueError("num_feats, num_blocks and downscales need one entry per stage")
        self.conv_first = nn.ModuleList(nn.Conv2d(num_in_ch, num_feats[0], 3, 1, 1) for _ in range(num_degradation))
        self.body = nn.ModuleList(self._branch(num_feats, num_blocks, downscales) for _ in range(num_degradation))
        self.fc_degree = nn.ModuleList(
            nn.Sequential(nn.Linear(num_feats[-1], 512), nn.ReLU(inplace=True), nn.Linear(512, 1), nn.Sigmoid())
            for _ in range(num_degradation))

    @staticmethod
    def _branch(num_feats, num_blocks, downscales) -> nn.Sequential:
        layers: list[nn.Module] = []
        last = len(num_feats) - 1
        for stage, (feats, blocks, down) in enumerate(zip(num_feats, num_blocks, downscales)):
            layers += [ResidualBlockNoBN(feats) for _ in range(blocks)]
            nxt = num_feats[min(stage + 1, last)]
            if down == 2:
                layers.append(nn.Conv2d(feats, nxt, 3, 2, 1))
            elif down != 1:
                raise ValueError(f"downscales: only 1 and 2 are supported, got {down}")
            elif stage < last and feats != nxt:
                layers.append(nn.Conv2d(feats, nxt, 3, 1, 1))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = []
        for first, body, head in zip(self.conv_first, self.body, self.fc_degree):
            feat = F.adaptive_avg_pool2d(body(first(x)), 1).flatten(1)
            scores.append(head(feat).squeeze(-1))
        return torch.stack(scores, dim=1)
