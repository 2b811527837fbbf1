"""Edge energy: the Sobel gradient magnitude of an image's luma, for the ``grad`` loss term and for choosing
teacher patches where photographs have detail."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # BT.601


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luma of an RGB batch in [0, 1] (no padding): the edge energy that
    ``benchmarks/lite_eval.py`` measures sharpness with, as a per-pixel map. Its L1 (the ``grad`` term) asks
    for edges as strong as the target's where pixel losses settle for a blur (gradient maps as in SPSR, Ma et
    al., CVPR 2020)."""
    y = (x * _LUMA.to(x).view(1, 3, 1, 1)).sum(1, keepdim=True)
    k = torch.stack([_SOBEL, _SOBEL.T]).unsqueeze(1).to(x)
    g = F.conv2d(y, k)
    return (g.pow(2).sum(1) + 1e-6).sqrt()
