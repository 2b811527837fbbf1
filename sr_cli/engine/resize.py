"""Resizing as the published pipelines do it: PIL's bicubic (a = -0.5).

Two paths: ``bicubic_8bit`` is PIL's own 8-bit resize (what the authors' scripts feed their networks for
8-bit images); ``pil_resize`` is the same filter in float precision (16-bit inputs, alpha, outputs).
"""

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


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """A uint8 image tensor as float32 in [0, 1] the way ``torchvision.transforms.ToTensor`` does it
    (``value / 255`` in float32, correctly rounded); float tensors are returned as they are."""
    return x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x


# ----------------------------------------------------------------------------- the 8-bit path: PIL itself
# The authors resize the 8-bit PIL image (``Image.resize(..., Image.BICUBIC)``), whose result is 8-bit: Pillow's
# fixed-point resampler rounds after each of its two passes (horizontal, then vertical when enlarging). That
# arithmetic is only reproduced exactly by Pillow, so Pillow computes it here, split so that both cores work:
# the horizontal pass on bands of source rows (each row is independent), then the vertical pass on bands of
# output rows, each a ``resize`` of the intermediate with a ``box`` of whole rows. Pillow places output row
# ``o`` of a band at ``box_top + (o + 0.5) / f``: with ``1 / f`` exact in binary (power-of-two factors) that is
# the same number as in the whole image, so the bytes are the same; other factors, and images that shrink
# vertically (Pillow may then run the vertical pass first), are resized in one piece. Pillow releases the GIL
# while resampling; the conversion to float runs in the same threads.

_BAND_PIXELS = 1 << 20  # output pixels per band: a few MB of 8-bit temporaries at a time
_CHANNELS = (1, 3)  # PIL modes L and RGB


def bicubic_8bit(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(1, C, H, W)`` uint8 (C = 1 or 3) -> ``(1, C, height, width)`` float32 in [0, 1], bit for bit
    ``ToTensor()(Image.fromarray(image).resize((width, height), Image.BICUBIC))``."""
    if image.dtype != torch.uint8 or image.dim() != 4 or image.shape[0] != 1 or image.shape[1] not in _CHANNELS:
        raise ValueError(f"bicubic_8bit expects a (1, 1 or 3, H, W) uint8 tensor, got {tuple(image.shape)} "
                         f"{image.dtype}")
    c, in_h, in_w = image.shape[1:]
    hwc = image[0].permute(1, 2, 0).contiguous().numpy()
    pil = Image.fromarray(hwc[:, :, 0] if c == 1 else hwc)  # L or RGB
    out = torch.empty((1, c, height, width), dtype=torch.float32)
    planes = out[0].numpy()  # (C, height, width), shares memory with ``out``
    workers = max(1, torch.get_num_threads())

    def to_float(part: Image.Image, rows: slice) -> None:
        arr = np.asarray(part)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        np.divide(arr, np.float32(255), out=planes[:, rows], dtype=np.float32)  # as ToTensor: k / 255 in float32

    factor = height // in_h if height % in_h == 0 else 0
    if workers == 1 or factor == 0 or factor & (factor - 1) or height * width < _BAND_PIXELS:
        to_float(pil.resize((width, height), Image.Resampling.BICUBIC), slice(0, height))
        return out

    def bands(rows: int, per_band: int) -> list[tuple[int, int]]:
        return [(top, min(rows, top + per_band)) for top in range(0, rows, per_band)]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        wide = pil
        if width != in_w:
            inter = np.empty((in_h, width) + (() if c == 1 else (c,)), dtype=np.uint8)

            def horizontal(band: tuple[int, int]) -> None:
                top, bottom = band
                crop = pil.crop((0, top, in_w, bottom))
                inter[top:bottom] = np.asarray(crop.resize((width, bottom - top), Image.Resampling.BICUBIC))

            list(pool.map(horizontal, bands(in_h, max(1, -(-in_h // workers)))))
            wide = Image.fromarray(inter)

        def vertical(band: tuple[int, int]) -> None:
            top, bottom = band
            part = wide.resize((width, (bottom - top) * factor), Image.Resampling.BICUBIC, box=(0, top, width, bottom))
            to_float(part, slice(top * factor, bottom * factor))

        list(pool.map(vertical, bands(in_h, max(1, _BAND_PIXELS // (width * factor)))))
    return out


def upsample_input(lr: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The models' input upsampling: 8-bit images (uint8 tensors) through PIL's 8-bit bicubic, as the authors'
    scripts do; float images (16-bit inputs) with the same filter in float precision, without 8-bit rounding."""
    if lr.dtype == torch.uint8:
        return bicubic_8bit(lr, height, width)
    return pil_resize(lr.clamp(0, 1), height, width)


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
