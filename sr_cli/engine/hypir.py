"""HYPIR's inference (Lin et al., arXiv:2507.20590): the SD one-step network, run stage by stage as the authors'
``SD2Enhancer.enhance`` does (docs/engine.md, "HYPIR").

For an input ``lr`` in [0, 1] (8-bit images as ``value / 255``)::

    ref = bicubic(lr, x scale)                torch's bicubic (a = -0.75, not antialiased, not clamped); x4 or any
    x   = ref, its shorter side enlarged to the tile size when it is not larger (antialiased bicubic)
    x   = pad(2x - 1) to a multiple of 8      zeros, right and bottom
    z   = tiled E(x) * s                      posterior mean (a sample with a seed); tiles of `tile` pixels
    z0  = tiled x0(UNet(z, 200, c))           tiles of tile/8 latent pixels, eps-prediction solved for x0
    y   = tiled D(z0 / s), cropped            not clamped
    y   = bicubic_aa((y + 1) / 2, size of ref)
    out = wavelet color fix of y against ref  (the authors always apply it; then clamp and 8-bit truncation)

Each stage blends its overlapping tiles with the same Gaussian weights (``gaussian_tile_weights``), tiles
starting every ``tile - overlap`` pixels with the last one snapped to the border (the authors' patch size 512
and stride 256: ``--tile 512 --overlap 256``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .color import apply_color_fix, wavelet_split

VAE_FACTOR = 8  # the authors' fixed ``vae_scale_factor``: padding and the latent tiles are in these units
GAUSSIAN_VARIANCE = 0.01  # of the tile weights, relative to the tile size


def authors_upsample(lr: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.interpolate(lr, scale_factor=upscale, mode="bicubic")`` as the authors upsample (float in, float out)."""
    return F.interpolate(lr.float(), size=(height, width), mode="bicubic")


def enlarge_to_at_least(x: torch.Tensor, side: int) -> torch.Tensor:
    """The image with its shorter side made ``side`` (aspect kept, the longer side truncated to an integer),
    antialiased bicubic: the authors' ``resize_at_least``, applied when the shorter side is at most ``side``."""
    h, w = x.shape[-2:]
    if h == w:
        size = (side, side)
    elif h < w:
        size = (side, int(w * (side / h)))
    else:
        size = (int(h * (side / w)), side)
    return F.interpolate(x, size=size, mode="bicubic", antialias=True)


def gaussian_tile_weights(size: int) -> torch.Tensor:
    """``(size, size)`` blending weights of one tile: a Gaussian bump (variance 0.01 of the size squared).

    As the authors' (from CCSR) the horizontal profile is centred at ``(size - 1) / 2`` but the vertical one at
    ``size / 2``: half a pixel lower. Computed in float64 as theirs (numpy), then float32.
    """
    pos = torch.arange(size, dtype=torch.float64)
    norm = math.sqrt(2 * math.pi * GAUSSIAN_VARIANCE)

    def profile(mid: float) -> torch.Tensor:
        return torch.exp(-(pos - mid) ** 2 / (size * size) / (2 * GAUSSIAN_VARIANCE)) / norm

    return torch.outer(profile(size / 2), profile((size - 1) / 2)).float()


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Tile starts along one axis: every ``stride``, plus the last window snapped to the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if (length - size) % stride:
        starts.append(length - size)
    return starts


def blend_tiles(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int, stride: int,
                up: int = 1, down: int = 1, out_channels: int | None = None, batch: int = 1) -> torch.Tensor:
    """``fn`` applied to ``size``-pixel tiles of ``x`` (``(1, C, H, W)``), results blended with Gaussian weights.

    ``fn`` maps a tile to one ``up / down`` times its size; ``size`` 0, or an image no larger than one tile
    (both sides), goes through ``fn`` whole. Tiles go through ``fn`` ``batch`` at a time in row-major order
    (1 where a seeded posterior sample must draw its numbers tile by tile, as the authors' code does).
    Accumulates in float32 on ``x``'s device.
    """
    _, c, h, w = x.shape
    if size <= 0 or (h <= size and w <= size):
        return fn(x).float()

    def scale(n: int) -> int:  # the authors' coordinate map
        return n * up // down

    weights = gaussian_tile_weights(scale(size)).to(x.device)
    out = torch.zeros((1, out_channels or c, scale(h), scale(w)), dtype=torch.float32, device=x.device)
    count = torch.zeros((1, 1, scale(h), scale(w)), dtype=torch.float32, device=x.device)
    windows = [(top, left) for top in window_starts(h, size, stride) for left in window_starts(w, size, stride)]
    for i in range(0, len(windows), max(1, batch)):
        group = windows[i : i + max(1, batch)]
        results = fn(torch.cat([x[:, :, top : top + size, left : left + size] for top, left in group])).float()
        for (top, left), result in zip(group, results):
            rows = slice(scale(top), scale(top + size))
            cols = slice(scale(left), scale(left + size))
            out[:, :, rows, cols] += result * weights
            count[:, :, rows, cols] += weights
    return out / count


def hypir_enhance(net, reference: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor, *, tile: int,
                  overlap: int, color_fix: str, generator: torch.Generator | None = None,
                  tile_batch: int = 1) -> torch.Tensor:
    """The authors' ``enhance`` after upsampling: ``reference`` (``(1, 3, H, W)``, [0, 1], the bicubic input)
    -> the color-fixed result ``(1, 3, H, W)`` on the CPU, not clamped (the caller clamps and quantizes).

    ``net`` is the SD one-step network (``OneStepSD``) with HYPIR's LoRA; ``tile`` 0 runs every stage whole
    (and enlarges the shorter side to 512, the authors' default patch size). ``tile_batch`` tiles go through the
    UNet and the decoder together, and through the encoder when it takes the posterior mean (no generator).
    """
    device = net.alphas_cumprod.device
    h0, w0 = reference.shape[-2:]
    side = tile if tile > 0 else 512
    x = reference.to(device)
    if min(h0, w0) <= side:
        x = enlarge_to_at_least(x, side)
    h1, w1 = x.shape[-2:]
    x = F.pad(x * 2 - 1, (0, (-w1) % VAE_FACTOR, 0, (-h1) % VAE_FACTOR), mode="constant", value=0)
    stride = tile - overlap
    # The authors' strides in latent pixels (floored); at least 1 where they would fail (tiles < 8 pixels apart).
    latent_tile, latent_stride = tile // VAE_FACTOR, max(1, stride // VAE_FACTOR)
    sample = generator is not None
    cond = text.to(device, net.dtype)
    t = timesteps.to(device).float()

    def denoise(z: torch.Tensor) -> torch.Tensor:
        eps = net.unet(z.to(net.dtype), t.expand(z.shape[0]), encoder_hidden_states=cond.expand(z.shape[0], -1, -1)).sample
        return net.x0_from_eps(z, eps, t.expand(z.shape[0]))

    def decode(z0: torch.Tensor) -> torch.Tensor:
        return net.vae.decode((z0 / net.vae.config.scaling_factor).to(net.vae_dtype)).sample

    z = blend_tiles(lambda p: net.encode(p, generator, sample), x, tile, stride, down=VAE_FACTOR,
                    out_channels=net.vae.config.latent_channels, batch=1 if sample else tile_batch)
    z0 = blend_tiles(denoise, z, latent_tile, latent_stride, batch=tile_batch)
    y = blend_tiles(decode, z0, latent_tile, latent_stride, up=VAE_FACTOR, out_channels=3, batch=tile_batch)
    y = (y[:, :, :h1, :w1] + 1) / 2
    y = F.interpolate(y, size=(h0, w0), mode="bicubic", antialias=True)
    if color_fix == "wavelet":  # the authors' own (on the unclamped result): not apply_color_fix, which clamps
        y = wavelet_split(y)[0] + wavelet_split(reference.to(device).float())[1]
    elif color_fix != "none":
        y = apply_color_fix(color_fix, y.clamp(0, 1), reference.to(device))
    return y.cpu()
