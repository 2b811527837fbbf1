"""Random draws of the degradation. All go through the caller's generator, on the generator's device, so
results depend only on (input, seed); a CPU generator works for inputs on any device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    u = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).item()
    return lo + (hi - lo) * u


def bernoulli(generator: torch.Generator, p: float) -> bool:
    return uniform(generator, 0.0, 1.0) < p


def choice(generator: torch.Generator, weights: Sequence[float]) -> int:
    """Index drawn with probability proportional to ``weights`` (zero weights are never drawn)."""
    u = uniform(generator, 0.0, 1.0) * sum(weights)
    total = 0.0
    for i, w in enumerate(weights):
        total += w
        if w > 0 and u < total:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)  # u rounded up to the total


def uniform_choice(generator: torch.Generator, options: Sequence[Any]) -> Any:
    return options[choice(generator, [1.0] * len(options))]


def randint(generator: torch.Generator, lo: int, hi: int) -> int:
    """Integer uniform in [lo, hi], both ends included."""
    return int(torch.randint(int(lo), int(hi) + 1, (), generator=generator, device=generator.device).item())

