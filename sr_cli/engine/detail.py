"""How soft an input is, and how much generated detail a two-set model (``lite``) gives it.

A model with a *detail* weight set holds two networks of one architecture fine-tuned from one ancestor: a
faithful one (pixel losses; adds no texture) and a sharp one (adversarial fine-tuning; Real-ESRGAN-like detail).
Per image it runs their blend in weight space, ``theta = (1 - a) * faithful + a * sharp`` -- ESRGAN's network
interpolation (Wang et al., ECCV-W 2018, sec. 3.4), as Real-ESRGAN's ``realesr-general-x4v3`` blends two
weight sets for its ``--denoise_strength``. ``a`` (``--detail``) is 0..1, or ``auto``: taken from the input.

Why from the input: what makes a camera photo sharper (generated texture, stronger edges) lowers the fidelity of
an input that is already clean (a bicubic downsampling, a render, a screenshot), and a small network sees too
little of the image to tell the two apart. The whole image does: a clean downsampling keeps its power up to the
Nyquist frequency, camera optics and demosaicing remove it. ``input_softness`` is the log10 ratio of the luma's
power near Nyquist (0.35-0.5 cycles/pixel) to its power at 0.2-0.3 cycles/pixel, Welch-averaged over Hann
windows. On the dev pairs of RealSR and DRealSR (pairs 51-100; the first 50 stay held out) it separates the camera
LR from bicubic downsamplings of the same HR images and from clean photo crops with an AUC of 0.97 (medians -1.32
and -1.71 against -0.81 to -0.89; the figures and the command are in the README, "The sharp lite").
Measured on the whole image before tiling: tiled and untiled runs use the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

WINDOW = 128  # Welch window (pixels): 1/128 cycle/pixel bins, many windows on a photo
MIN_SIDE = 32  # smaller images are not measured (no detail added)
MAX_WINDOWS = 64  # spread over the image on a grid: the cost stays ~ms whatever its size
HIGH_BAND = (0.35, 0.5)  # cycles/pixel, radial
MID_BAND = (0.2, 0.3)
# Mid-band power (per pixel, luma in [0, 1]) below which there is nothing to judge: a constant image. (Noise of
# one 8-bit level is ~7e-6 and white, which already reads as clean; the softest camera LR of RealSR/DRealSR 1e-5.)
MIN_MID_POWER = 1e-9


@dataclass(frozen=True)
class DetailCurve:
    """``auto`` detail from the input's softness ``s``: ``top`` at ``s <= soft``, 0 at ``s >= clean``, linear between."""

    soft: float
    clean: float
    top: float = 1.0

    def __call__(self, softness: float | None) -> float:
        if softness is None:
            return 0.0
        t = (self.clean - softness) / (self.clean - self.soft)
        return self.top * min(1.0, max(0.0, t))


def luma(image: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB images ``(n, 3, h, w)`` (uint8 or float in [0, 1]) as ``(n, h, w)`` float64 in [0, 1]."""
    x = image.double()
    if image.dtype == torch.uint8:
        x = x / 255
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _window_corners(size: int, window: int, count: int) -> list[int]:
    """Up to ``count`` window starts covering ``size`` (first and last flush with the borders)."""
    if size <= window:
        return [0]
    n = min(count, math.ceil(2 * size / window) - 1)  # half-overlapping at most
    return sorted({round(i * (size - window) / (n - 1)) for i in range(n)})


def input_softness(image: torch.Tensor) -> float | None:
    """log10(power at 0.35-0.5 / power at 0.2-0.3 cycles/pixel) of the image's luma; lower = softer.

    None when the image is smaller than ``MIN_SIDE`` or has no texture to judge (``MIN_MID_POWER``).
    """
    h, w = image.shape[-2:]
    if min(h, w) < MIN_SIDE:
        return None
    win = min(WINDOW, h, w) // 2 * 2
    per_axis = max(1, int(math.sqrt(MAX_WINDOWS)))
    tops, lefts = _window_corners(h, win, per_axis), _window_corners(w, win, per_axis)
    # The windows first, then their luma: the cost does not grow with the image.
    crops = luma(torch.cat([image[:, :, t:t + win, left:left + win] for t in tops for left in lefts]))
    crops = crops - crops.mean(dim=(-2, -1), keepdim=True)
    hann = torch.hann_window(win, periodic=False, dtype=torch.float64)
    power = torch.fft.rfft2(crops * (hann[:, None] * hann[None, :])).abs().square().mean(0)
    fy = torch.fft.fftfreq(win, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(win, dtype=torch.float64)[None, :]
    radius = (fy.square() + fx.square()).sqrt()
    # rfft2 keeps half the columns: interior columns stand for two bins, as in the full spectrum.
    weight = torch.full_like(fx, 2.0).expand_as(radius).clone()
    weight[:, 0] = 1
    if win % 2 == 0:
        weight[:, -1] = 1

    def band(lo: float, hi: float) -> float:
        m = ((radius > lo) & (radius < hi)) * weight
        return float((power * m).sum() / m.sum())

    norm = float((hann.square().sum()) ** 2)  # power per pixel of a unit-variance white image
    mid = band(*MID_BAND)
    if mid / norm < MIN_MID_POWER:
        return None
    return math.log10(max(band(*HIGH_BAND), 1e-30) / mid)
