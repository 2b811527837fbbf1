"""Hero-SR's Dynamic Time-Step Module (DTSM).

A small CNN looks at the upsampled low-resolution image (in [-1, 1], resized to 128x128 with
nearest interpolation) and scores a fixed list of candidate timesteps. Training picks one with a
hard Gumbel-Softmax; inference takes the argmax so that srx is deterministic (the public Hero-SR
code draws Gumbel noise at inference too; we deliberately do not).

Parameter names follow the published ``state_dict_time_adaptive`` layout
(``conv1.0``, ``conv1.1``, ``blocks.N.conv1`` ... ``fc.3``) so the checkpoint loads as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The candidate set of the public code: 1, then 9, 19, ..., 999 (101 values).
HERO_SR_TIMESTEPS: tuple[int, ...] = (1,) + tuple(range(9, 1000, 10))


class DTSMResBlock(nn.Module):
    """3x3 conv-BN-SiLU-conv-BN with an identity shortcut, then SiLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.silu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.silu(out + x)


class DynamicTimestepModule(nn.Module):
    """Scores candidate timesteps for an image; ``forward`` returns one timestep per image.

    Args:
        timesteps: candidate timesteps (the network's output size).
        channels: width of the convolutional trunk.
        num_blocks: residual blocks in the trunk.
        pool_size: side of the adaptive average pool before the MLP.
        hidden: width of the MLP's hidden layer.
        input_size: side the input is resized to (nearest) before the trunk.
    """

    def __init__(
        self,
        timesteps: tuple[int, ...] | list[int] = HERO_SR_TIMESTEPS,
        channels: int = 64,
        num_blocks: int = 3,
        pool_size: int = 7,
        hidden: int = 1000,
        input_size: int = 128,
        tau: float = 1.0,
    ):
        super().__init__()
        self.input_size = input_size
        self.tau = tau
        self.register_buffer("time_list", torch.as_tensor(list(timesteps), dtype=torch.float32))
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.SiLU())
        self.blocks = nn.Sequential(*[DTSMResBlock(channels) for _ in range(num_blocks)])
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.SiLU())
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        n = len(timesteps)
        self.fc = nn.Sequential(
            nn.Linear(channels * pool_size * pool_size, hidden), nn.SiLU(), nn.Linear(hidden, n), nn.LayerNorm(n)
        )

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, num_candidates)`` for images ``(B, 3, H, W)`` in [-1, 1]."""
        x = F.interpolate(image, size=(self.input_size, self.input_size), mode="nearest")
        x = self.conv2(self.blocks(self.conv1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Timesteps ``(B,)`` as float32: argmax in eval mode, hard Gumbel-Softmax in train mode.

        In train mode the result stays differentiable through the one-hot (straight-through).
        """
        scores = self.logits(image).float()
        if self.training:
            one_hot = F.gumbel_softmax(scores, tau=self.tau, hard=True)
        else:
            one_hot = F.one_hot(scores.argmax(dim=1), scores.shape[1]).to(scores.dtype)
        return (one_hot * self.time_list).sum(dim=1)
