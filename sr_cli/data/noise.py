"""Noise of the degradation: Gaussian (colour or gray) and Poisson shot noise, drawn per sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .draws import bernoulli, uniform

GRAY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601)


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
        gaussian = bernoulli(generator, gaussian_noise_prob)
        types.append("gaussian" if gaussian else "poisson")
        levels.append(uniform(generator, *(noise_range if gaussian else poisson_scale_range)))
        gray.append(bernoulli(generator, gray_noise_prob))
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

