"""Blur kernels of the degradation (Gaussian, generalized Gaussian, plateau, sinc), their random draws as
Real-ESRGAN makes them, and per-sample filtering of a batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .draws import bernoulli, choice, uniform, uniform_choice

KERNEL_TYPES: tuple[str, ...] = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
KERNEL_PROB: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
KERNEL_SIZES: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
ROTATION_RANGE: tuple[float, float] = (-math.pi, math.pi)
SINC_CUTOFF_SMALL: tuple[float, float] = (math.pi / 3, math.pi)  # blur sinc, kernels smaller than 13
SINC_CUTOFF_LARGE: tuple[float, float] = (math.pi / 5, math.pi)  # blur sinc, kernels of 13 and more
FINAL_SINC_CUTOFF: tuple[float, float] = (math.pi / 3, math.pi)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets from the kernel centre as (x across columns, y down rows), float64."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """``p^T Sigma^-1 p`` on the grid, Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T.

    The shared core of every Gaussian-like kernel: rotating the offsets into the kernel's principal axes
    turns the inverse covariance into a per-axis division.
    """
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalized(kernel: torch.Tensor) -> torch.Tensor:
    """Float32 kernel summing to one, so blurring keeps the image's mean brightness."""
    return (kernel / kernel.sum()).float()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> torch.Tensor:
    """Anisotropic Gaussian ``exp(-q / 2)``; isotropic when ``sigma_x == sigma_y``."""
    return _normalized(torch.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> torch.Tensor:
    """Generalized Gaussian ``exp(-q^beta / 2)``: flatter top (beta > 1) or heavier tails (beta < 1)."""
    return _normalized(torch.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> torch.Tensor:
    """Plateau-shaped ``1 / (1 + q^beta)``: a flat core with slowly decaying tails."""
    return _normalized(1.0 / (1.0 + _quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def circular_lowpass_kernel(cutoff: float, size: int, pad_to: int = 0) -> torch.Tensor:
    """2-D circularly symmetric sinc: the ideal low-pass with cut-off ``cutoff`` (radians, pi = Nyquist).

    ``k(r) = cutoff * J1(cutoff * r) / (2 pi r)``, with the limit ``cutoff^2 / (4 pi)`` at r = 0, normalized.
    Truncating it produces the ringing and overshoot artefacts of sharpened or resampled real images.
    ``pad_to`` (odd, larger than ``size``) zero-pads the result to a common size.
    """
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe_r) / (2 * math.pi * safe_r)
    kernel = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), kernel)
    return pad_kernel(_normalized(kernel), pad_to)


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a centred odd kernel to ``size`` (no-op when already that large), so kernels can be stacked."""
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad)) if pad > 0 else kernel


def pulse_kernel(size: int) -> torch.Tensor:
    """The identity filter: filtering with it leaves an image exactly unchanged."""
    kernel = torch.zeros(size, size)
    kernel[size // 2, size // 2] = 1.0
    return kernel


def _sample_beta(generator: torch.Generator, lo: float, hi: float) -> float:
    """Real-ESRGAN's shape exponent: half the draws below 1, half above, when the range straddles 1."""
    if lo <= 1.0 <= hi:
        return uniform(generator, lo, 1.0) if bernoulli(generator, 0.5) else uniform(generator, 1.0, hi)
    return uniform(generator, lo, hi)


def random_blur_kernel(
    generator: torch.Generator,
    kernel_list: Sequence[str] = KERNEL_TYPES,
    kernel_prob: Sequence[float] = KERNEL_PROB,
    blur_sigma: tuple[float, float] = (0.2, 3.0),
    betag_range: tuple[float, float] = (0.5, 4.0),
    betap_range: tuple[float, float] = (1.0, 2.0),
    sinc_prob: float = 0.1,
    kernel_sizes: Sequence[int] = KERNEL_SIZES,
    rotation_range: tuple[float, float] = ROTATION_RANGE,
    sinc_cutoff_small: tuple[float, float] = SINC_CUTOFF_SMALL,
    sinc_cutoff_large: tuple[float, float] = SINC_CUTOFF_LARGE,
    pad_to: int = 0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One random blur kernel as Real-ESRGAN draws it, and the parameters drawn.

    Returns the normalized float32 kernel (zero-padded to ``pad_to`` if larger) and a dict with ``type``
    (a kernel family or ``"sinc"``), ``size``, ``sigma_x``, ``sigma_y``, ``theta``, ``beta`` and ``cutoff``;
    entries that do not apply to the drawn type are None.
    """
    size = uniform_choice(generator, kernel_sizes)
    info: dict[str, Any] = {"type": "sinc", "size": size, "sigma_x": None, "sigma_y": None, "theta": None,
                            "beta": None, "cutoff": None}
    if bernoulli(generator, sinc_prob):
        # Small kernels cannot represent low cut-offs (the main lobe would be truncated), hence two ranges.
        info["cutoff"] = uniform(generator, *(sinc_cutoff_small if size < 13 else sinc_cutoff_large))
        return circular_lowpass_kernel(info["cutoff"], size, pad_to), info

    kind = kernel_list[choice(generator, kernel_prob)]
    sigma_x = uniform(generator, *blur_sigma)
    if kind.endswith("aniso"):
        sigma_y, theta = uniform(generator, *blur_sigma), uniform(generator, *rotation_range)
    else:
        sigma_y, theta = sigma_x, 0.0
    info.update(type=kind, sigma_x=sigma_x, sigma_y=sigma_y, theta=theta)
    if kind.startswith("generalized"):
        info["beta"] = _sample_beta(generator, *betag_range)
        kernel = generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, info["beta"])
    elif kind.startswith("plateau"):
        info["beta"] = _sample_beta(generator, *betap_range)
        kernel = plateau_kernel(size, sigma_x, sigma_y, theta, info["beta"])
    else:
        kernel = gaussian_kernel(size, sigma_x, sigma_y, theta)
    return pad_kernel(kernel, pad_to), info


def random_sinc_kernel(
    generator: torch.Generator,
    kernel_sizes: Sequence[int] = KERNEL_SIZES,
    cutoff_range: tuple[float, float] = FINAL_SINC_CUTOFF,
    pad_to: int = 0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The final sinc filter: a random size and cut-off. Returns the kernel and ``{"size", "cutoff"}``."""
    size = uniform_choice(generator, kernel_sizes)
    cutoff = uniform(generator, *cutoff_range)
    return circular_lowpass_kernel(cutoff, size, pad_to), {"size": size, "cutoff": cutoff}


def _trim_common_border(kernels: torch.Tensor) -> torch.Tensor:
    """Drop the zero rings all kernels share, so small kernels padded to 21 do not cost a 21x21 conv."""
    centre = kernels.shape[-1] // 2
    rows, cols = (kernels != 0).any(0).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return kernels
    radius = int(torch.maximum((rows - centre).abs().max(), (cols - centre).abs().max()))
    return kernels[:, centre - radius:centre + radius + 1, centre - radius:centre + radius + 1]


def apply_kernels(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter every sample of ``x`` (B, C, H, W) with its own kernel (B, k, k), or one kernel (k, k) for all.

    One grouped convolution does the whole batch. Borders are reflect-padded as Real-ESRGAN does (replicate
    where the image is too small for reflection). Convolution here is correlation, which is the same thing
    for these kernels: all of them are point-symmetric.
    """
    b, c, h, w = x.shape
    if kernels.dim() == 2:
        kernels = kernels.expand(b, -1, -1)
    if kernels.shape[0] != b or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0:
        raise ValueError(f"expected {b} square odd kernels, got {tuple(kernels.shape)}")
    if b == 0:
        return x
    kernels = _trim_common_border(kernels)
    pad = kernels.shape[-1] // 2
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect" if pad < min(h, w) else "replicate")
    weight = kernels.to(device=x.device, dtype=x.dtype).repeat_interleave(c, dim=0).unsqueeze(1)
    out = F.conv2d(x.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c)
    return out.view(b, c, h, w)



def gaussian_blur(x: torch.Tensor, sigma: float, size: int) -> torch.Tensor:
    """Isotropic Gaussian blur of x (B, C, H, W): ``apply_kernels`` with ``gaussian_kernel(size, sigma, sigma)``
    (reflected borders), as two 1-D passes, which is the same filter at 2 * size instead of size^2 taps per
    pixel; sigma 0: x itself."""
    if sigma <= 0:
        return x
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = (g / g.sum()).to(x)
    c, pad = x.shape[1], size // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def stack_kernels(kernels: list[torch.Tensor], size: int) -> torch.Tensor:
    """Stack kernels into (B, size, size); an empty batch gives (0, size, size)."""
    return torch.stack(kernels) if kernels else torch.zeros(0, size, size)
