"""Edge energy: the Sobel gradient magnitude of an image's luma, for the ``grad`` loss term and for choosing
teacher patches where photographs have detail."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # BT.601


def sobel_magnitude(y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Sobel gradient magnitude of a one-channel batch (B, 1, H, W), no padding: (B, H - 2, W - 2). ``eps``
    keeps the square root differentiable where the image is flat (0 for a measurement)."""
    k = torch.stack([_SOBEL, _SOBEL.T]).unsqueeze(1).to(y)
    return (F.conv2d(y, k).pow(2).sum(1) + eps).sqrt()


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luma of an RGB batch in [0, 1]: the edge energy that
    ``benchmarks/lite_eval.py`` measures sharpness with, as a per-pixel map. Its L1 (the ``grad`` term) asks
    for edges as strong as the target's where pixel losses settle for a blur (gradient maps as in SPSR, Ma et
    al., CVPR 2020)."""
    return sobel_magnitude((x * _LUMA.to(x).view(1, 3, 1, 1)).sum(1, keepdim=True))
