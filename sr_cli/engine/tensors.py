"""Tensor helpers every model family's engine uses: placing modules on a device, padding to a multiple."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .devices import use_channels_last


def move_module(module: nn.Module, device: torch.device, dtype: torch.dtype, component: str | None = None) -> None:
    """Move and cast ``module``; convolutional components named by ``component`` also take the memory format
    that is fastest for them on ``device`` (``devices.use_channels_last``)."""
    # Cast only when needed: diffusers warns on every dtype cast through .to().
    p = next(module.parameters())
    if p.dtype != dtype:
        module.to(dtype=dtype)
    if p.device != device:
        module.to(device=device)
    if component is not None:
        fmt = torch.channels_last if use_channels_last(device, component) else torch.contiguous_format
        module.to(memory_format=fmt)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad right/bottom to a multiple (reflect where the image is large enough, else replicate)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
