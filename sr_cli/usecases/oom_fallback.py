"""Out of GPU memory on one image: retry it with smaller work units instead of failing the file.

The order (as ComfyUI's tiled upscalers do): halve the tile batch down to 1, then halve the tile size down to a
floor; a model run untiled first tries tiles of ``UNTILED_FIRST_TILE``. The job gets a note saying what it took.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable

TILE_FLOOR = 128  # smaller tiles cost more in seams and overhead than they save in memory
UNTILED_FIRST_TILE = 1024


def fallback_settings(tile: int, tile_batch: int, floor: int = TILE_FLOOR) -> list[tuple[int, int]]:
    """The (tile, tile_batch) settings to try, in order, after running out of memory with ``(tile, tile_batch)``.

    ``tile`` 0 means untiled. Tile sizes stay multiples of 8 (what the engine accepts) and never go below ``floor``.
    """
    steps: list[tuple[int, int]] = []
    batch = tile_batch
    while batch > 1:
        batch //= 2
        steps.append((tile, batch))
    size = UNTILED_FIRST_TILE if tile == 0 else tile
    if tile == 0:
        steps.append((size, batch))
    while (smaller := size // 2 // 8 * 8) >= floor:
        size = smaller
        steps.append((size, batch))
    return steps


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError``, and MPS's, which is a plain RuntimeError saying so."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "MPS backend out of memory" in str(error)


def upscale_fitting_memory(upscale: Callable, options, resolved, notes: list[str]):
    """``upscale(options)``, retried with the fallback settings while it runs out of memory.

    ``options``: what the user asked for (``UpscaleOptions``); ``resolved``: the same with the model's defaults
    filled in (the tile and tile batch that ran out). A retry that fits adds a note to ``notes``; when none fits,
    the last out-of-memory error is raised (the file fails, the batch goes on).
    """
    try:
        return upscale(options)
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        last = error
    for tile, batch in fallback_settings(resolved.tile, resolved.tile_batch):
        _release_cached_memory()
        overlap = resolved.overlap if resolved.overlap < tile else tile // 4
        retry = dataclasses.replace(options, tile=tile, tile_batch=batch, overlap=overlap)
        try:
            result = upscale(retry)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            last = error
            continue
        notes.append(f"out of memory: retried with --tile {tile} --tile-batch {batch}")
        return result
    raise last


def _release_cached_memory() -> None:
    """What the failed attempt held, back to the allocator before the smaller retry."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()
