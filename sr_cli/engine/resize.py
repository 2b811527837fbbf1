"""Resizing as the published pipelines do it: PIL's bicubic (a = -0.5), here in float precision."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

BICUBIC_A = -0.5  # PIL's bicubic kernel parameter (torch's bicubic uses -0.75)
BICUBIC_SUPPORT = 2.0


def pil_resize(x: torch.Tensor, height: int, width: int, resample=Image.Resampling.BICUBIC) -> torch.Tensor:
    """Resize ``(1, C, H, W)`` float in [0, 1] with PIL's filter, per channel in 32-bit float (no 8-bit rounding).

    The authors upsample with PIL bicubic (cubic a = -0.5), which torch's bicubic (a = -0.75) does not match.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"pil_resize expects (1, C, H, W), got {tuple(x.shape)}")
    in_h, in_w = x.shape[-2:]
    if resample == Image.Resampling.BICUBIC and height % in_h == 0 and width % in_w == 0:
        return _bicubic_integer_upscale(x[0].detach().float().cpu(), height // in_h, width // in_w)[None]
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


# ----------------------------------------------------------------------------- integer factors, in torch
# The engine's hot path (x4 upsampling of every input) is PIL's bicubic at an integer factor. There PIL's
# weights repeat with the output row's phase ``p = o mod s``: output row ``s*k + p`` is a fixed 5-tap
# combination of input rows ``k-2 .. k+2``. Computed as shifted-row multiply-adds with torch (vectorized,
# multi-threaded), it equals PIL's float result within 3e-7 in half the time. PIL drops the taps
# that fall outside the image and renormalizes the rest: here the image is zero-padded and the first and
# last rows are divided by the sum of their valid weights, which is the same thing.


def _cubic(x: float) -> float:
    x, a = abs(x), BICUBIC_A
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@lru_cache(maxsize=16)
def _phase_taps(factor: int) -> tuple[tuple[tuple[float, ...], ...], int]:
    """Per output phase, the normalized weights of input rows ``k - reach .. k + reach`` (PIL's formula:
    weight of input ``j`` for output ``o`` is ``cubic(j + 0.5 - (o + 0.5) / factor)``)."""
    reach = math.ceil(BICUBIC_SUPPORT)
    phases = []
    for p in range(factor):
        w = [_cubic(t - reach + 0.5 - (p + 0.5) / factor) for t in range(2 * reach + 1)]
        total = sum(w)
        phases.append(tuple(v / total for v in w))
    return tuple(phases), reach


def _upscale_rows(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, factor*H, W)``: PIL's bicubic along the rows, clamped to [0, 1] as the
    8-bit resampler clips each pass."""
    if factor == 1:
        return x
    taps, reach = _phase_taps(factor)
    c, h, w = x.shape
    padded = F.pad(x, (0, 0, reach, reach))
    out = torch.empty((c, h, factor, w), dtype=x.dtype)
    for p, weights in enumerate(taps):
        dst = out[:, :, p]
        first = True
        for t, wt in enumerate(weights):
            if wt == 0.0:
                continue
            src = padded[:, t : t + h]
            if first:
                torch.mul(src, wt, out=dst)
                first = False
            else:
                dst.add_(src, alpha=wt)
    # Rows within ``reach`` of the border lost taps to the zero padding: divide by what remained.
    edge = sorted(set(range(min(reach, h))) | set(range(max(0, h - reach), h)))
    valid = torch.zeros(h + 2 * reach, dtype=torch.float64)
    valid[reach : reach + h] = 1
    for k in edge:
        norm = torch.tensor([sum(wt * valid[k + t].item() for t, wt in enumerate(weights)) for weights in taps],
                            dtype=x.dtype)
        out[:, k].div_(norm[:, None])
    return out.view(c, factor * h, w).clamp_(0, 1)


def _bicubic_integer_upscale(x: torch.Tensor, fy: int, fx: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, fy*H, fx*W)``, horizontal pass first as PIL does."""
    wide = _upscale_rows(x.transpose(1, 2).contiguous(), fx).transpose(1, 2) if fx > 1 else x
    return _upscale_rows(wide.contiguous(), fy)
