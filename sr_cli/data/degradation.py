"""Real-ESRGAN's second-order degradation, written in torch: clean crops in, realistic low-quality inputs out.

Real-world SR models (Real-ESRGAN, OSEDiff, Hero-SR, ...) are trained on pairs synthesised from clean
images: a classic degradation (blur -> resize -> noise -> JPEG) applied *twice*, then a resize to the target
size together with a sinc filter (ringing and overshoot) and a last JPEG, in random order. Two rounds cover
images that were already degraded before being degraded again (photos of photos, re-uploads).

Defaults are Real-ESRGAN's x4 recipe as OSEDiff ships it (``dataloaders/params_realesrgan.yml``); what that
file leaves to code (kernel sizes 7..21, sinc cut-offs, rotation range, the 50/50 order of the last steps,
the resize modes) follows Real-ESRGAN's code and paper (Wang et al., "Real-ESRGAN", ICCV-W 2021).

JPEG, like the reference, is the JPEG math in float (``jpeg="reference"``, see ``sr_cli.data.jpeg``): real
qualities, unrounded tables, no 8-bit rounding per round. ``jpeg="libjpeg"`` runs real libjpeg instead
(integer qualities, 8-bit images in and out), which adds ~0.3 levels of rounding noise to every sample and
changes the chroma (fancy upsampling, rounded tables): measurably off the reference's noise and colour
statistics (``benchmarks/degradation_stats.py``).

Deliberate differences from the reference code:

* Every random draw comes from the caller's ``torch.Generator``: the same (hq, seed) gives the same LQ.
* Kernels, resize modes, noise type / level / gray, JPEG qualities, the second blur, the final order and the
  final sinc are drawn per sample. The two intermediate resize *scales* are drawn once per batch (as
  Real-ESRGAN's batched training does), because a batch tensor has one spatial size.
* Reflect padding is undefined when a kernel's half-width reaches the image size (tiny intermediate images);
  there the filter falls back to replicate padding instead of failing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from ..errors import UsageError
from .jpeg import float_jpeg

KERNEL_TYPES: tuple[str, ...] = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
KERNEL_PROB: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
KERNEL_SIZES: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
RESIZE_DIRECTIONS: tuple[str, ...] = ("up", "down", "keep")
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")
ROTATION_RANGE: tuple[float, float] = (-math.pi, math.pi)
SINC_CUTOFF_SMALL: tuple[float, float] = (math.pi / 3, math.pi)  # blur sinc, kernels smaller than 13
SINC_CUTOFF_LARGE: tuple[float, float] = (math.pi / 5, math.pi)  # blur sinc, kernels of 13 and more
FINAL_SINC_CUTOFF: tuple[float, float] = (math.pi / 3, math.pi)
GRAY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601)
JPEG_MODES: tuple[str, ...] = ("reference", "libjpeg")


@dataclass
class DegradationConfig:
    """Probabilities and ranges of the degradation; field defaults are Real-ESRGAN's x4 recipe."""

    scale: int = 4  # total downsampling factor: the output is (H // scale, W // scale)
    # --- first degradation ---
    kernel_list: tuple[str, ...] = KERNEL_TYPES  # blur kernel families to draw from
    kernel_prob: tuple[float, ...] = KERNEL_PROB  # probability of each family in kernel_list
    sinc_prob: float = 0.1  # probability that the blur kernel is a sinc (ringing) filter instead
    blur_sigma: tuple[float, float] = (0.2, 3.0)  # Gaussian-family std range along each axis, in pixels
    betag_range: tuple[float, float] = (0.5, 4.0)  # shape exponent range of the generalized Gaussian kernels
    betap_range: tuple[float, float] = (1.0, 2.0)  # shape exponent range of the plateau kernels
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # probability of resizing up, down, keeping size
    resize_range: tuple[float, float] = (0.15, 1.5)  # scale range: down draws in [lo, 1], up in [1, hi]
    gaussian_noise_prob: float = 0.5  # probability of Gaussian noise (else Poisson noise)
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian noise std range, in 8-bit levels (of 255)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)  # multiplier range of the Poisson (shot) noise
    gray_noise_prob: float = 0.4  # probability that the noise is the same on all three channels
    jpeg_range: tuple[int, int] = (30, 95)  # JPEG quality range, both ends included
    # --- second degradation ---
    second_blur_prob: float = 0.8  # probability of blurring again in the second degradation
    kernel_list2: tuple[str, ...] = KERNEL_TYPES  # second blur: kernel families
    kernel_prob2: tuple[float, ...] = KERNEL_PROB  # second blur: probability of each family
    sinc_prob2: float = 0.1  # second blur: probability of a sinc kernel
    blur_sigma2: tuple[float, float] = (0.2, 1.5)  # second blur: std range, in pixels
    betag_range2: tuple[float, float] = (0.5, 4.0)  # second blur: generalized Gaussian exponent range
    betap_range2: tuple[float, float] = (1.0, 2.0)  # second blur: plateau exponent range
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)  # second resize: probability of up, down, keep
    resize_range2: tuple[float, float] = (0.3, 1.2)  # second resize: scale range, relative to the output size
    gaussian_noise_prob2: float = 0.5  # second noise: probability of Gaussian (else Poisson)
    noise_range2: tuple[float, float] = (1.0, 25.0)  # second noise: Gaussian std range, in 8-bit levels
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)  # second noise: Poisson multiplier range
    gray_noise_prob2: float = 0.4  # second noise: probability of gray (channel-shared) noise
    jpeg_range2: tuple[int, int] = (30, 95)  # final JPEG quality range, both ends included
    # --- final step ---
    final_sinc_prob: float = 0.8  # probability of the sinc filter after resizing back (else no filter)
    resize_sinc_first_prob: float = 0.5  # probability of [resize back + sinc] then JPEG (else JPEG first)
    # --- values the yml leaves to Real-ESRGAN's code ---
    kernel_sizes: tuple[int, ...] = KERNEL_SIZES  # odd kernel sizes drawn uniformly (blur and final sinc)
    rotation_range: tuple[float, float] = ROTATION_RANGE  # rotation range of anisotropic kernels, radians
    sinc_cutoff_small: tuple[float, float] = SINC_CUTOFF_SMALL  # blur sinc cut-off range for kernels < 13
    sinc_cutoff_large: tuple[float, float] = SINC_CUTOFF_LARGE  # blur sinc cut-off range for kernels >= 13
    final_sinc_cutoff: tuple[float, float] = FINAL_SINC_CUTOFF  # cut-off range of the final sinc filter
    resize_modes: tuple[str, ...] = RESIZE_MODES  # interpolation modes drawn uniformly for every resize
    jpeg: str = "reference"  # "reference": float JPEG math, real qualities (BasicSR's); "libjpeg": real 8-bit JPEG
    # --- mixing in clean inputs ---
    bicubic_prob: float = 0.0  # probability that a sample gets plain antialiased bicubic x1/scale instead

    def __post_init__(self) -> None:
        # YAML recipes give lists: store tuples so configs compare and hash like the defaults.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        """Fail early, with the field's name, on values the pipeline cannot honour."""
        if not isinstance(self.scale, int) or self.scale < 1:
            raise UsageError(f"degradation scale must be a positive integer, got {self.scale!r}")
        for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob", "second_blur_prob", "sinc_prob2",
                     "gaussian_noise_prob2", "gray_noise_prob2", "final_sinc_prob", "resize_sinc_first_prob",
                     "bicubic_prob"):
            _check_probability(name, getattr(self, name))
        for suffix in ("", "2"):
            kernels, probs = getattr(self, "kernel_list" + suffix), getattr(self, "kernel_prob" + suffix)
            unknown = [k for k in kernels if k not in KERNEL_TYPES]
            if unknown:
                raise UsageError(f"degradation kernel_list{suffix}: unknown kernel types {unknown}")
            _check_weights("kernel_prob" + suffix, probs, len(kernels))
            _check_weights("resize_prob" + suffix, getattr(self, "resize_prob" + suffix), 3)
            lo, hi = _check_range("resize_range" + suffix, getattr(self, "resize_range" + suffix))
            if not 0 < lo <= 1 <= hi:
                raise UsageError(f"degradation resize_range{suffix} must satisfy 0 < lo <= 1 <= hi, got {(lo, hi)}")
            for name in ("blur_sigma", "betag_range", "betap_range", "noise_range", "poisson_scale_range"):
                _check_range(name + suffix, getattr(self, name + suffix), positive=True)
            lo, hi = _check_range("jpeg_range" + suffix, getattr(self, "jpeg_range" + suffix))
            if not (1 <= lo and hi <= 100 and int(lo) == lo and int(hi) == hi):
                raise UsageError(f"degradation jpeg_range{suffix} must be integers in 1..100, got {(lo, hi)}")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise UsageError(f"degradation kernel_sizes must be odd positive sizes, got {self.kernel_sizes}")
        for name in ("rotation_range", "sinc_cutoff_small", "sinc_cutoff_large", "final_sinc_cutoff"):
            _check_range(name, getattr(self, name))
        if not self.resize_modes or any(m not in RESIZE_MODES for m in self.resize_modes):
            raise UsageError(f"degradation resize_modes must be among {RESIZE_MODES}, got {self.resize_modes}")
        if self.jpeg not in JPEG_MODES:
            raise UsageError(f"degradation jpeg must be one of {JPEG_MODES}, got {self.jpeg!r}")


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise UsageError(f"degradation {name} must be a probability in [0, 1], got {p!r}")


def _check_weights(name: str, weights: Sequence[float], n: int) -> None:
    if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UsageError(f"degradation {name} must be {n} non-negative weights with a positive sum, got {weights}")


def _check_range(name: str, rng: Sequence[float], positive: bool = False) -> tuple[float, float]:
    if len(rng) != 2 or rng[0] > rng[1] or (positive and rng[0] <= 0):
        kind = "positive " if positive else ""
        raise UsageError(f"degradation {name} must be a {kind}(lo, hi) pair with lo <= hi, got {rng}")
    return rng[0], rng[1]


# --------------------------------------------------------------------------------------------------
# Random draws. All go through the caller's generator, on the generator's device, so results depend
# only on (input, seed); a CPU generator works for inputs on any device.
# --------------------------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    u = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).item()
    return lo + (hi - lo) * u


def _bernoulli(generator: torch.Generator, p: float) -> bool:
    return _uniform(generator, 0.0, 1.0) < p


def _choice(generator: torch.Generator, weights: Sequence[float]) -> int:
    """Index drawn with probability proportional to ``weights`` (zero weights are never drawn)."""
    u = _uniform(generator, 0.0, 1.0) * sum(weights)
    total = 0.0
    for i, w in enumerate(weights):
        total += w
        if w > 0 and u < total:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)  # u rounded up to the total


def _uniform_choice(generator: torch.Generator, options: Sequence[Any]) -> Any:
    return options[_choice(generator, [1.0] * len(options))]


def _randint(generator: torch.Generator, lo: int, hi: int) -> int:
    """Integer uniform in [lo, hi], both ends included."""
    return int(torch.randint(int(lo), int(hi) + 1, (), generator=generator, device=generator.device).item())


# --------------------------------------------------------------------------------------------------
# Blur kernels
# --------------------------------------------------------------------------------------------------


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
        return _uniform(generator, lo, 1.0) if _bernoulli(generator, 0.5) else _uniform(generator, 1.0, hi)
    return _uniform(generator, lo, hi)


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
    size = _uniform_choice(generator, kernel_sizes)
    info: dict[str, Any] = {"type": "sinc", "size": size, "sigma_x": None, "sigma_y": None, "theta": None,
                            "beta": None, "cutoff": None}
    if _bernoulli(generator, sinc_prob):
        # Small kernels cannot represent low cut-offs (the main lobe would be truncated), hence two ranges.
        info["cutoff"] = _uniform(generator, *(sinc_cutoff_small if size < 13 else sinc_cutoff_large))
        return circular_lowpass_kernel(info["cutoff"], size, pad_to), info

    kind = kernel_list[_choice(generator, kernel_prob)]
    sigma_x = _uniform(generator, *blur_sigma)
    if kind.endswith("aniso"):
        sigma_y, theta = _uniform(generator, *blur_sigma), _uniform(generator, *rotation_range)
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
    size = _uniform_choice(generator, kernel_sizes)
    cutoff = _uniform(generator, *cutoff_range)
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


# --------------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------------


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``int(side * scale)`` per side, as Real-ESRGAN truncates, but at least one pixel."""
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def sample_resize(
    generator: torch.Generator,
    batch: int,
    resize_prob: Sequence[float] = (0.2, 0.7, 0.1),
    resize_range: tuple[float, float] = (0.15, 1.5),
    modes: Sequence[str] = RESIZE_MODES,
) -> dict[str, Any]:
    """Draw one direction and scale for the batch and one interpolation mode per sample.

    Returns ``{"direction": "up" | "down" | "keep", "scale": float, "modes": list[str]}``.
    """
    direction = RESIZE_DIRECTIONS[_choice(generator, resize_prob)]
    if direction == "up":
        scale = _uniform(generator, 1.0, resize_range[1])
    elif direction == "down":
        scale = _uniform(generator, resize_range[0], 1.0)
    else:
        scale = 1.0
    return {"direction": direction, "scale": scale, "modes": [_uniform_choice(generator, modes) for _ in range(batch)]}


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str, scale_factor: float | None = None) -> torch.Tensor:
    # No antialiasing: the aliasing of naive resampling is one of the artefacts being simulated.
    if scale_factor is not None:
        out = F.interpolate(x, scale_factor=scale_factor, mode=mode,
                            align_corners=None if mode == "area" else False)
        if tuple(out.shape[-2:]) == tuple(size):
            return out
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def resize_per_sample(
    x: torch.Tensor, size: tuple[int, int], modes: Sequence[str], scale_factor: float | None = None
) -> torch.Tensor:
    """Resize the batch to ``size``, each sample with its own mode (one call per distinct mode).

    ``scale_factor`` (giving ``size``): bilinear and bicubic sample at that exact ratio rather than at
    ``input / size``, as ``F.interpolate(scale_factor=...)`` does in the reference's first round.
    """
    if len(modes) != x.shape[0]:
        raise ValueError(f"need one resize mode per sample: {len(modes)} modes for {x.shape[0]} samples")
    if tuple(x.shape[-2:]) == tuple(size):
        return x  # every mode is the identity at the same size
    out = x.new_empty(x.shape[0], x.shape[1], *size)
    for mode in dict.fromkeys(modes):
        idx = [i for i, m in enumerate(modes) if m == mode]
        out[idx] = _interpolate(x[idx], size, mode, scale_factor)
    return out


def random_resize(
    x: torch.Tensor,
    generator: torch.Generator,
    resize_prob: Sequence[float] = (0.2, 0.7, 0.1),
    resize_range: tuple[float, float] = (0.15, 1.5),
    modes: Sequence[str] = RESIZE_MODES,
    base_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Randomly resize up, down or not at all (see ``sample_resize``); returns the batch and the draws.

    The output size is ``base_size`` (default: the input's size) times the drawn scale; the second
    degradation resizes relative to the final output size, as Real-ESRGAN does.
    """
    params = sample_resize(generator, x.shape[0], resize_prob, resize_range, modes)
    size = scaled_size(base_size or (x.shape[-2], x.shape[-1]), params["scale"])
    return resize_per_sample(x, size, params["modes"]), params


def bicubic_downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Plain antialiased bicubic x1/scale, clamped: the clean-input alternative to the degradation."""
    size = (x.shape[-2] // scale, x.shape[-1] // scale)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


# --------------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------------


def _per_sample(value: float | Sequence[float] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar or per-sample sequence as a (B, 1, 1, 1) tensor broadcasting over the batch."""
    t = torch.as_tensor(value, dtype=x.dtype).to(x.device)
    return t.expand(x.shape[0]).reshape(-1, 1, 1, 1) if t.dim() == 0 else t.reshape(-1, 1, 1, 1)


def _share_first_channel(noise: torch.Tensor, gray: bool | Sequence[bool] | torch.Tensor) -> torch.Tensor:
    """Gray noise: samples flagged ``gray`` get their first channel's noise on every channel."""
    mask = _per_sample(gray, noise).bool()
    return torch.where(mask, noise[:, :1].expand_as(noise), noise)


def _to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W) with torchvision's weights."""
    weights = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _count_levels(x8: torch.Tensor) -> torch.Tensor:
    """Number of distinct 8-bit values per sample (B,), as a batched histogram instead of a unique() loop."""
    levels = (x8 * 255).round().long().clamp(0, 255).flatten(1)
    hist = torch.zeros(x8.shape[0], 256, dtype=x8.dtype, device=x8.device).scatter_(1, levels, 1.0)
    return (hist > 0).sum(1)


def add_gaussian_noise(
    x: torch.Tensor,
    sigma: float | Sequence[float] | torch.Tensor,
    gray: bool | Sequence[bool] | torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Add zero-mean Gaussian noise of std ``sigma`` (8-bit levels, scalar or per sample), clamped to [0, 1].

    Samples flagged ``gray`` get the same noise on all channels (luminance noise of a sensor) instead of
    independent colour noise.
    """
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
    noise = _share_first_channel(noise.to(device=x.device, dtype=x.dtype), gray)
    return (x + noise * _per_sample(sigma, x) / 255.0).clamp(0, 1)


def add_poisson_noise(
    x: torch.Tensor,
    scale: float | Sequence[float] | torch.Tensor,
    gray: bool | Sequence[bool] | torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Add shot noise, as Real-ESRGAN models it, times ``scale`` (scalar or per sample); clamped to [0, 1].

    The 8-bit image is read as photon counts: with ``n`` distinct levels in the sample, intensities are
    multiplied by ``2^ceil(log2 n)``, Poisson-sampled, and divided back, so the noise grows with brightness.
    Gray samples draw the noise from their luma and add it to all channels.
    """
    gray_mask = _per_sample(gray, x).bool()
    source = torch.where(gray_mask, _to_gray(x).expand_as(x), x)
    source = (source.clamp(0, 1) * 255).round() / 255
    vals = torch.exp2(torch.ceil(torch.log2(_count_levels(source).to(x.dtype)))).view(-1, 1, 1, 1)
    rate = (source * vals).to(device=generator.device, dtype=torch.float32)
    counts = torch.poisson(rate, generator=generator).to(device=x.device, dtype=x.dtype)
    noise = _share_first_channel(counts / vals - source, gray)
    return (x + noise * _per_sample(scale, x)).clamp(0, 1)


def sample_noise(
    generator: torch.Generator,
    batch: int,
    gaussian_noise_prob: float = 0.5,
    noise_range: tuple[float, float] = (1.0, 30.0),
    poisson_scale_range: tuple[float, float] = (0.05, 3.0),
    gray_noise_prob: float = 0.4,
) -> dict[str, list]:
    """Per sample: noise type, its level (Gaussian std in 8-bit levels, or Poisson scale) and the gray flag."""
    types, levels, gray = [], [], []
    for _ in range(batch):
        gaussian = _bernoulli(generator, gaussian_noise_prob)
        types.append("gaussian" if gaussian else "poisson")
        levels.append(_uniform(generator, *(noise_range if gaussian else poisson_scale_range)))
        gray.append(_bernoulli(generator, gray_noise_prob))
    return {"type": types, "level": levels, "gray": gray}


def apply_noise(
    x: torch.Tensor, types: Sequence[str], levels: Sequence[float], gray: Sequence[bool], generator: torch.Generator
) -> torch.Tensor:
    """Add each sample's drawn noise (see ``sample_noise``): Gaussian and Poisson samples in one call each."""
    out = x.clone()
    for kind, add in (("gaussian", add_gaussian_noise), ("poisson", add_poisson_noise)):
        idx = [i for i, t in enumerate(types) if t == kind]
        if idx:
            out[idx] = add(x[idx], [levels[i] for i in idx], [gray[i] for i in idx], generator)
    return out


# --------------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------------


def jpeg_compress(x: torch.Tensor, quality: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Real JPEG round trip (libjpeg through torchvision) at an integer quality, scalar or per sample.

    Encoding runs on CPU 8-bit images (the input is clamped and rounded first); the decoded batch is
    returned on ``x``'s device and dtype, so it holds 8-bit levels.
    """
    b = x.shape[0]
    qualities = [int(q) for q in torch.as_tensor(quality).reshape(-1).expand(b).tolist()]
    images = (x.detach().clamp(0, 1) * 255).round().to(device="cpu", dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec; they still work, and a warning per
        # training sample would drown the logs.
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities", category=DeprecationWarning)
        decoded = [decode_jpeg(encode_jpeg(img.contiguous(), quality=q), mode=ImageReadMode.RGB)
                   for img, q in zip(images, qualities)]
    if not decoded:
        return x
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255.0


def sample_jpeg(
    generator: torch.Generator, batch: int, jpeg_range: tuple[int, int] = (30, 95), integer: bool = True
) -> list[int] | list[float]:
    """Per-sample JPEG qualities uniform in ``jpeg_range``: integers (both ends included) for libjpeg, or real
    numbers, as the reference draws them for its float JPEG (``integer=False``)."""
    if integer:
        return [_randint(generator, *jpeg_range) for _ in range(batch)]
    return [_uniform(generator, *jpeg_range) for _ in range(batch)]


def apply_jpeg(x: torch.Tensor, quality: Sequence[float], mode: str = "reference") -> torch.Tensor:
    """The JPEG stage: the reference's float JPEG (``sr_cli.data.jpeg.float_jpeg``) or real libjpeg."""
    if mode == "libjpeg":
        return jpeg_compress(x, [int(q) for q in quality])
    return float_jpeg(x.clamp(0, 1), list(quality))


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp and round to 8-bit levels, like a saved low-quality image (Real-ESRGAN's last step)."""
    return torch.clamp((x * 255.0).round(), 0, 255) / 255.0


def _subset(params: dict[str, Any], idx: list[int]) -> dict[str, Any]:
    """The per-sample parameters of the samples ``idx`` (lists and batch-first tensors)."""
    return {k: v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in idx] for k, v in params.items()}


class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation of a batch; ``last_params`` records the latest call's draws.

    ``last_params`` maps names to per-sample lists (or batch-first tensors for the kernel weights), e.g.
    ``bicubic``, ``kernel1`` (dicts from ``random_blur_kernel``), ``resize1_scale``, ``noise1_type``,
    ``noise1_level``, ``jpeg1_quality``, ``blur2``, ``final_order``, ``final_sinc``, ``jpeg2_quality``.
    The resize scales are shared by the batch and repeated per sample.
    """

    def __init__(self, config: DegradationConfig | None = None):
        self.config = config or DegradationConfig()
        self.last_params: dict[str, Any] = {}

    @torch.no_grad()
    def __call__(self, hq: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """hq: (B, 3, H, W) float in [0, 1] on any device (H, W multiples of scale).

        Returns the low-quality batch (B, 3, H // scale, W // scale) in [0, 1], on hq's device, float32.
        Deterministic: the same hq and a generator seeded the same give exactly the same output.
        """
        x = self._checked(hq)
        b, _, h, w = x.shape
        s = self.config.scale
        params = self.sample_params(b, generator)
        self.last_params = params
        out = x.new_empty(b, 3, h // s, w // s)
        bicubic = [i for i in range(b) if params["bicubic"][i]]
        degraded = [i for i in range(b) if not params["bicubic"][i]]
        if bicubic:
            out[bicubic] = bicubic_downsample(x[bicubic], s)
        if degraded:
            out[degraded] = self.degrade(x[degraded], _subset(params, degraded), generator)
        return out

    def _checked(self, hq: torch.Tensor) -> torch.Tensor:
        s = self.config.scale
        if hq.dim() != 4 or hq.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got {tuple(hq.shape)}")
        if hq.shape[-2] % s or hq.shape[-1] % s:
            raise ValueError(f"H and W must be multiples of the scale {s}, got {tuple(hq.shape[-2:])}")
        if not hq.is_floating_point():
            raise ValueError(f"expected a float batch in [0, 1], got {hq.dtype}")
        return hq.float()

    def sample_params(self, batch: int, generator: torch.Generator) -> dict[str, Any]:
        """Draw every random choice of one call, per sample, before any image work."""
        c = self.config
        pad = max(c.kernel_sizes)
        blur = {"kernel_sizes": c.kernel_sizes, "rotation_range": c.rotation_range, "pad_to": pad,
                "sinc_cutoff_small": c.sinc_cutoff_small, "sinc_cutoff_large": c.sinc_cutoff_large}
        p: dict[str, Any] = {"bicubic": [_bernoulli(generator, c.bicubic_prob) for _ in range(batch)]}

        k1 = [random_blur_kernel(generator, c.kernel_list, c.kernel_prob, c.blur_sigma, c.betag_range, c.betap_range,
                                 c.sinc_prob, **blur) for _ in range(batch)]
        p["kernel1"], p["kernel1_weights"] = [i for _, i in k1], _stack([k for k, _ in k1], pad)
        p.update(self._sample_resize_noise_jpeg(generator, batch, stage=1))

        p["blur2"] = [_bernoulli(generator, c.second_blur_prob) for _ in range(batch)]
        k2 = [random_blur_kernel(generator, c.kernel_list2, c.kernel_prob2, c.blur_sigma2, c.betag_range2,
                                 c.betap_range2, c.sinc_prob2, **blur) for _ in range(batch)]
        p["kernel2"] = [i for _, i in k2]
        p["kernel2_weights"] = _stack([k if on else pulse_kernel(pad) for (k, _), on in zip(k2, p["blur2"])], pad)
        p.update(self._sample_resize_noise_jpeg(generator, batch, stage=2))

        p["final_order"] = ["resize_first" if _bernoulli(generator, c.resize_sinc_first_prob) else "jpeg_first"
                            for _ in range(batch)]
        p["final_resize_mode"] = [_uniform_choice(generator, c.resize_modes) for _ in range(batch)]
        p["final_sinc"] = [_bernoulli(generator, c.final_sinc_prob) for _ in range(batch)]
        sincs = [random_sinc_kernel(generator, c.kernel_sizes, c.final_sinc_cutoff, pad) if on
                 else (pulse_kernel(pad), None) for on in p["final_sinc"]]
        p["sinc"], p["sinc_weights"] = [i for _, i in sincs], _stack([k for k, _ in sincs], pad)
        return p

    def _sample_resize_noise_jpeg(self, generator: torch.Generator, batch: int, stage: int) -> dict[str, Any]:
        """The draws of one degradation round after its blur: resize, noise and JPEG (stage 1 or 2)."""
        c, sfx = self.config, "" if stage == 1 else "2"
        resize = sample_resize(generator, batch, getattr(c, "resize_prob" + sfx), getattr(c, "resize_range" + sfx),
                               c.resize_modes)
        noise = sample_noise(generator, batch, getattr(c, "gaussian_noise_prob" + sfx), getattr(c, "noise_range" + sfx),
                             getattr(c, "poisson_scale_range" + sfx), getattr(c, "gray_noise_prob" + sfx))
        quality = sample_jpeg(generator, batch, getattr(c, "jpeg_range" + sfx), integer=c.jpeg == "libjpeg")
        return {
            f"resize{stage}_direction": [resize["direction"]] * batch,
            f"resize{stage}_scale": [resize["scale"]] * batch,
            f"resize{stage}_mode": resize["modes"],
            f"noise{stage}_type": noise["type"],
            f"noise{stage}_level": noise["level"],
            f"noise{stage}_gray": noise["gray"],
            f"jpeg{stage}_quality": quality,
        }

    def degrade(self, x: torch.Tensor, p: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Apply drawn parameters ``p`` (per-sample, as from ``sample_params``) to x (B, 3, H, W)."""
        h, w = x.shape[-2:]
        out_size = (h // self.config.scale, w // self.config.scale)
        # First round: blur, resize relative to the input, noise, JPEG.
        out = apply_kernels(x, p["kernel1_weights"])
        # A scale factor, not a size, as the reference resizes: bilinear/bicubic then sample at its exact ratio.
        out = resize_per_sample(out, scaled_size((h, w), p["resize1_scale"][0]), p["resize1_mode"],
                                scale_factor=p["resize1_scale"][0])
        out = apply_noise(out, p["noise1_type"], p["noise1_level"], p["noise1_gray"], generator)
        out = apply_jpeg(out, p["jpeg1_quality"], self.config.jpeg)
        # Second round: blur (pulse kernels where skipped), resize relative to the output, noise.
        out = apply_kernels(out, p["kernel2_weights"])
        out = resize_per_sample(out, scaled_size(out_size, p["resize2_scale"][0]), p["resize2_mode"])
        out = apply_noise(out, p["noise2_type"], p["noise2_level"], p["noise2_gray"], generator)
        return quantize_8bit(self._final_steps(out, p, out_size, self.config.jpeg))

    @staticmethod
    def _final_steps(x: torch.Tensor, p: dict[str, Any], size: tuple[int, int], jpeg: str) -> torch.Tensor:
        """[resize back + sinc] and the last JPEG, in each sample's drawn order.

        Real-ESRGAN keeps resize and sinc together: other interleavings produce twisted lines.
        """
        out = x.new_empty(x.shape[0], x.shape[1], *size)

        def resize_and_sinc(y: torch.Tensor, idx: list[int]) -> torch.Tensor:
            y = resize_per_sample(y, size, [p["final_resize_mode"][i] for i in idx])
            return apply_kernels(y, p["sinc_weights"][idx])

        for order in ("resize_first", "jpeg_first"):
            idx = [i for i, o in enumerate(p["final_order"]) if o == order]
            if not idx:
                continue
            quality = [p["jpeg2_quality"][i] for i in idx]
            if order == "resize_first":
                out[idx] = apply_jpeg(resize_and_sinc(x[idx], idx), quality, jpeg)
            else:
                out[idx] = resize_and_sinc(apply_jpeg(x[idx], quality, jpeg), idx)
        return out


def _stack(kernels: list[torch.Tensor], size: int) -> torch.Tensor:
    """Stack kernels into (B, size, size); an empty batch gives (0, size, size)."""
    return torch.stack(kernels) if kernels else torch.zeros(0, size, size)
