"""Tiled processing with smooth blending (docs/engine.md), as small pure tensor functions.

Tiles are laid out in the coordinates of the image the model works on (the upsampled input,
i.e. output pixels). Every tile runs the whole pipeline; overlaps are blended with raised-cosine
ramps (see ``ramp_up``); tiles at the image border are snapped to it so that every tile has the same size (and
can be batched). Memory: only the output accumulator is image-sized; tiles stream
through ``tile_fn`` ``batch`` at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tile:
    """A window ``[top, top+height) x [left, left+width)`` of the image."""

    top: int
    left: int
    height: int
    width: int


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: stride ``tile - overlap``, the last tile snapped to the end."""
    if tile <= 0 or length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile); got overlap={overlap}, tile={tile}")
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """All tiles covering an image, row-major. ``tile <= 0`` means one tile: the whole image."""
    th = height if tile <= 0 else min(tile, height)
    tw = width if tile <= 0 else min(tile, width)
    return [
        Tile(top, left, th, tw)
        for top in tile_starts(height, tile, overlap)
        for left in tile_starts(width, tile, overlap)
    ]


def ramp_up(overlap: int) -> torch.Tensor:
    """Weights across an overlap band, rising from 0 to 1.

    The first ``overlap // 4`` samples are exactly 0 (a tile's own edge, where its content is least
    reliable, never contributes), then a sin^2 rise over the middle half, then 1. ``ramp_up(i) +
    ramp_up(overlap - 1 - i) == 1``: two tiles overlapping by exactly ``overlap`` blend to a partition
    of unity without renormalization, and a local operator whose receptive radius is at most
    ``overlap // 4`` gives the same result tiled as untiled.
    """
    margin = overlap // 4
    rise = overlap - 2 * margin
    w = torch.ones(overlap, dtype=torch.float32)
    w[:margin] = 0
    if rise > 0:
        w[margin : margin + rise] = torch.sin(0.5 * math.pi * (torch.arange(rise, dtype=torch.float32) + 0.5) / rise) ** 2
    return w


def _axis_weights(n: int, overlap: int, start_ramp: bool, end_ramp: bool) -> torch.Tensor:
    w = torch.ones(n, dtype=torch.float32)
    ramp = ramp_up(min(overlap, n))
    if start_ramp:
        w[: len(ramp)] = ramp
    if end_ramp:
        w[n - len(ramp) :] = torch.minimum(w[n - len(ramp) :], ramp.flip(0))
    return w


def tile_weights(t: Tile, height: int, width: int, overlap: int) -> torch.Tensor:
    """Blending weight ``(height, width)`` of one tile: 1 inside, ramps on sides that meet another tile."""
    wy = _axis_weights(t.height, overlap, t.top > 0, t.top + t.height < height)
    wx = _axis_weights(t.width, overlap, t.left > 0, t.left + t.width < width)
    return wy[:, None] * wx[None, :]


def blend_weights(length: int, tile: int, overlap: int) -> dict[int, torch.Tensor]:
    """Per-axis blending weights of the tiles along one axis, by start offset, normalized so that they sum
    to exactly one at every position (also where the snapped last tile overlaps its neighbour by more than
    ``overlap``). Tiles sit on a grid and their weights are separable, so the products of these are a
    partition of unity over the image: blending needs no image-sized weight accumulator and no division."""
    n = length if tile <= 0 else min(tile, length)
    starts = tile_starts(length, tile, overlap)
    raw = {s: _axis_weights(n, overlap, s > 0, s + n < length) for s in starts}
    total = torch.zeros(length, dtype=torch.float32)
    for s, w in raw.items():
        total[s : s + n] += w
    return {s: w / total[s : s + n] for s, w in raw.items()}


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(tiles), max(1, size)):
        yield tiles[i : i + max(1, size)]


def run_tiled(
    image: torch.Tensor,
    tile_fn: Callable[[torch.Tensor], torch.Tensor],
    tile: int = 512,
    overlap: int = 64,
    batch: int = 1,
    out_channels: int | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    scale: int = 1,
) -> torch.Tensor:
    """Apply ``tile_fn`` (a ``(B, C, h, w) -> (B, C', scale*h, scale*w)`` function) tile by tile.

    ``image`` is ``(1, C, H, W)``; the result is ``(1, C', scale*H, scale*W)`` float32 on ``image``'s device.
    ``tile`` and ``overlap`` are in ``image`` pixels; with ``scale > 1`` (models that work on the LR image)
    the blending ramps span ``scale * overlap`` output pixels.
    An image no larger than one tile (or ``tile <= 0``) goes through ``tile_fn`` whole.
    ``on_tile(done, total)`` is called after each batch (progress reporting).
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"run_tiled expects a (1, C, H, W) tensor, got {tuple(image.shape)}")
    _, c, height, width = image.shape
    tiles = plan_tiles(height, width, tile, overlap)
    if len(tiles) == 1:
        out = tile_fn(image).float()
        if on_tile:
            on_tile(1, 1)
        return out

    out_c = out_channels or c
    s = int(scale)
    out_h, out_w = height * s, width * s
    # Weights in output pixels, keyed by the tile's start in input pixels.
    wy = {top // s: w.to(image.device) for top, w in blend_weights(out_h, tiles[0].height * s, overlap * s).items()}
    wx = {left // s: w.to(image.device) for left, w in blend_weights(out_w, tiles[0].width * s, overlap * s).items()}
    # No zero fill: tiles come row by row, so the part of a tile that no earlier tile touched is a rectangle
    # (below the previous tile row, right of the previous tile in this row), assigned; the rest accumulates.
    acc = torch.empty((1, out_c, out_h, out_w), dtype=torch.float32, device=image.device)
    row_starts = sorted(wy)
    col_starts = sorted(wx)
    th, tw = tiles[0].height * s, tiles[0].width * s
    done = 0
    for group in _batches(tiles, batch):
        crops = torch.cat([image[:, :, t.top : t.top + t.height, t.left : t.left + t.width] for t in group])
        result = tile_fn(crops).float().to(image.device)
        for t, res in zip(group, result):
            w = wy[t.top][:, None] * wx[t.left][None, :]
            i, j = row_starts.index(t.top), col_starts.index(t.left)
            # Tile-local rows / columns [0, fresh_y) / [0, fresh_x) were touched by earlier tiles.
            fresh_y = (row_starts[i - 1] - t.top) * s + th if i else 0
            fresh_x = (col_starts[j - 1] - t.left) * s + tw if j else 0
            region = acc[0, :, t.top * s : t.top * s + th, t.left * s : t.left * s + tw]
            region[:, :fresh_y].addcmul_(res[:, :fresh_y], w[:fresh_y])
            region[:, fresh_y:, :fresh_x].addcmul_(res[:, fresh_y:, :fresh_x], w[fresh_y:, :fresh_x])
            torch.mul(res[:, fresh_y:, fresh_x:], w[fresh_y:, fresh_x:], out=region[:, fresh_y:, fresh_x:])
        done += len(group)
        del crops, result
        if on_tile:
            on_tile(done, len(tiles))
    return acc
