"""``lite``: srx's small embedded one-step model.

ResShift-style one-step latent model in an exact, lossless latent: the latent of an image is its
pixel-unshuffle (x4: 48 channels at 1/4 resolution). The LR image, bicubic-upsampled to the output size,
gives ``y``; the one step starts at ``x_T = y`` (kappa * sqrt(eta_T) * eps with eps = 0: deterministic)
and a small UNet predicts ``x0`` as ``x_T`` plus a residual. Decoding is the pixel-shuffle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(x)))


class LiteUNet(nn.Module):
    """x0-predicting UNet on pixel-unshuffled latents: ``forward(latent) -> latent`` (same shape).

    Args:
        latent_factor: pixel-unshuffle factor of the latent (4: 48 channels).
        channels: widths of the three levels (full, 1/2, 1/4 of the latent resolution).
        blocks: residual blocks per level and per direction.
    """

    def __init__(self, latent_factor: int = 4, channels: tuple[int, ...] = (64, 128, 192), blocks: int = 2):
        super().__init__()
        self.latent_factor = latent_factor
        lat = 3 * latent_factor**2
        c0, c1, c2 = channels
        self.conv_in = nn.Conv2d(lat, c0, 3, padding=1)
        self.enc0 = nn.Sequential(*[ResBlock(c0) for _ in range(blocks)])
        self.down0 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.enc1 = nn.Sequential(*[ResBlock(c1) for _ in range(blocks)])
        self.down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.mid = nn.Sequential(*[ResBlock(c2) for _ in range(blocks)])
        self.up1 = nn.Conv2d(c2, c1 * 4, 1)  # followed by pixel-shuffle x2
        self.dec1 = nn.Sequential(*[ResBlock(c1) for _ in range(blocks)])
        self.up0 = nn.Conv2d(c1, c0 * 4, 1)
        self.dec0 = nn.Sequential(*[ResBlock(c0) for _ in range(blocks)])
        self.conv_out = nn.Conv2d(c0, lat, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start as the identity: x0 = x_T
        nn.init.zeros_(self.conv_out.bias)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (latent factor x two downsamplings)."""
        return self.latent_factor * 4

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h0 = self.enc0(self.conv_in(z))
        h1 = self.enc1(self.down0(h0))
        h = self.mid(self.down1(h1))
        h = self.dec1(F.pixel_shuffle(self.up1(h), 2) + h1)
        h = self.dec0(F.pixel_shuffle(self.up0(h), 2) + h0)
        return z + self.conv_out(h)
