"""Color correction of a super-resolved image against its upsampled input (docs/engine.md).

Both functions take ``(B, C, H, W)`` tensors of the same size in [0, 1] and return a tensor
in [0, 1]. They run once on the whole image (never per tile) so tiles agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.spec import COLOR_FIXES


def _mean_std(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(2)
    # Unbiased variance + eps, as in the reference implementation.
    return flat.mean(dim=2)[..., None, None], (flat.var(dim=2, unbiased=True) + eps).sqrt()[..., None, None]


def adain_color_fix(image: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give ``image`` the per-channel mean and standard deviation of ``reference``."""
    mean_i, std_i = _mean_std(image.float(), eps)
    mean_r, std_r = _mean_std(reference.float(), eps)
    out = (image.float() - mean_i) / std_i * std_r + mean_r
    return out.clamp_(0.0, 1.0)


def wavelet_blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """3x3 binomial blur ([1,2,1]x[1,2,1]/16) at a dilation, replicate padding."""
    c = x.shape[1]
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3)
    x = F.pad(x, (dilation,) * 4, mode="replicate")
    return F.conv2d(x, kernel, groups=c, dilation=dilation)


def wavelet_split(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) frequency parts with ``x == high + low``; dilations 1, 2, 4, ..., 2**(levels-1)."""
    low = x
    for i in range(levels):
        low = wavelet_blur(low, 2**i)
    return x - low, low


def wavelet_color_fix(image: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """High frequencies of ``image`` plus low frequencies of ``reference``."""
    high, _ = wavelet_split(image.float(), levels)
    _, low = wavelet_split(reference.float(), levels)
    return (high + low).clamp_(0.0, 1.0)


def apply_color_fix(method: str, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    if method == "adain":
        return adain_color_fix(image, reference)
    if method == "wavelet":
        return wavelet_color_fix(image, reference)
    if method == "none":
        return image
    raise ValueError(f"unknown color fix {method!r}; choose one of {', '.join(COLOR_FIXES)}")
