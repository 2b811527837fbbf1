"""Resizing of the degradation: random up/down/keep scales, per-sample interpolation modes, and the plain
bicubic downsampling that clean samples get instead."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .draws import choice, uniform, uniform_choice

RESIZE_DIRECTIONS: tuple[str, ...] = ("up", "down", "keep")
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")


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
    direction = RESIZE_DIRECTIONS[choice(generator, resize_prob)]
    if direction == "up":
        scale = uniform(generator, 1.0, resize_range[1])
    elif direction == "down":
        scale = uniform(generator, resize_range[0], 1.0)
    else:
        scale = 1.0
    return {"direction": direction, "scale": scale, "modes": [uniform_choice(generator, modes) for _ in range(batch)]}


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

