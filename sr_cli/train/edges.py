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


def usm_sharpen(img: torch.Tensor, weight: float = 0.5, radius: int = 51, threshold: float = 10.0) -> torch.Tensor:
    """Real-ESRGAN's unsharp mask of the training targets (Wang et al., ICCV-W 2021; BasicSR's ``USMSharp``):
    the residual from a Gaussian blur (``radius`` x ``radius``, sigma as OpenCV derives it from the size: 8 for
    51), added with ``weight`` where it exceeds ``threshold`` levels of 255, the mask itself softened by the same
    blur; reflected borders. img: (B, C, H, W) in [0, 1], H and W above radius // 2."""
    from ..data.kernels import gaussian_blur

    sigma = 0.3 * ((radius - 1) * 0.5 - 1) + 0.8  # cv2.getGaussianKernel(radius, 0)
    residual = img - gaussian_blur(img, sigma, radius)
    soft_mask = gaussian_blur((residual.abs() * 255 > threshold).to(img), sigma, radius)
    sharp = (img + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * img


def grid_pattern(x: torch.Tensor, period: int, cells: int | None = None) -> torch.Tensor:
    """The part of ``x`` (B, C, H, W) that repeats every ``period`` pixels: the mean of each of the period x period
    pixel phases less their mean — the spectrum at the grid frequencies k / period. Over the whole image
    (``cells`` None: (B, C, period, period)) or per window of ``cells`` x ``cells`` grid cells ((B, C, rows,
    period, cols, period)): a network that decodes with a pixel-shuffle (lite's latent) can print a pattern
    there (the grain a GAN term teaches it), the same everywhere or varying with the content. Rows and columns
    beyond a whole window are left out."""
    b, c, h, w = x.shape
    size = period * (cells or 1)
    rows, cols = (h // size, w // size) if cells else (1, 1)
    n = cells or (h // period)
    m = cells or (w // period)
    x = x[..., : rows * n * period, : cols * m * period]
    means = x.reshape(b, c, rows, n, period, cols, m, period).mean(dim=(3, 6))
    means = means - means.mean(dim=(3, 5), keepdim=True)
    return means.reshape(b, c, period, period) if not cells else means
