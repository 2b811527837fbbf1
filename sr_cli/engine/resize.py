"""Resizing as the published pipelines do it: PIL's bicubic (a = -0.5), here in float precision."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image


def pil_resize(x: torch.Tensor, height: int, width: int, resample=Image.Resampling.BICUBIC) -> torch.Tensor:
    """Resize ``(1, C, H, W)`` float in [0, 1] with PIL's filter, per channel in 32-bit float (no 8-bit rounding).

    The authors upsample with PIL bicubic (cubic a = -0.5), which torch's bicubic (a = -0.75) does not match.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"pil_resize expects (1, C, H, W), got {tuple(x.shape)}")
    arr = x[0].detach().float().cpu().numpy()
    out = np.empty((arr.shape[0], height, width), dtype=np.float32)

    def one_channel(c: int) -> None:
        # Horizontal then vertical pass, clamping in between as PIL's 8-bit resampler does
        # (its overshoot is clipped after each pass), but without rounding to 8 bits.
        img = Image.fromarray(arr[c])
        img = Image.fromarray(np.clip(np.asarray(img.resize((width, arr.shape[1]), resample)), 0.0, 1.0))
        out[c] = np.clip(np.asarray(img.resize((width, height), resample)), 0.0, 1.0)

    if arr.shape[0] > 1 and height * width >= 1 << 18:
        # Pillow releases the GIL while resampling: channels run in parallel on multi-core CPUs.
        with ThreadPoolExecutor(max_workers=arr.shape[0]) as pool:
            list(pool.map(one_channel, range(arr.shape[0])))
    else:
        for c in range(arr.shape[0]):
            one_channel(c)
    return torch.from_numpy(out)[None]


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))
