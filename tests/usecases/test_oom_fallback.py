"""Out of memory on one image: the retry order, and a retry that fits gives the image and a note."""

import pytest
import torch

from sr_cli.engine.pipeline import UpscaleOptions
from sr_cli.usecases.oom_fallback import (
    fallback_settings,
    is_out_of_memory,
    upscale_fitting_memory,
)


def test_tile_batch_halves_first_then_tile_size_down_to_the_floor():
    assert fallback_settings(512, 4) == [(512, 2), (512, 1), (256, 1), (128, 1)]
    assert fallback_settings(512, 1) == [(256, 1), (128, 1)]
    assert fallback_settings(128, 1) == []  # already at the floor: the file fails
    assert fallback_settings(200, 3, floor=64) == [(200, 1), (96, 1)]  # multiples of 8 only
    assert fallback_settings(0, 1) == [(1024, 1), (512, 1), (256, 1), (128, 1)]  # untiled: tiles first


def test_out_of_memory_errors_are_recognised_and_others_are_not():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def _lite():
    from sr_cli.models.loading import load_model

    return load_model("lite", device="cpu")


def test_an_image_that_fits_only_in_small_tiles_is_written_with_a_note():
    sr = _lite()
    lr = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    options = UpscaleOptions(tile=128, tile_batch=2, overlap=16)
    expected = sr.upscale_tensor(lr, UpscaleOptions(tile=128, tile_batch=1, overlap=16))
    tried = []

    def device_with_little_memory(opts):  # the real torch error, as a GPU raises it, above one tile at a time
        tried.append((opts.tile, opts.tile_batch))
        if opts.tile_batch > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return sr.upscale_tensor(lr, opts)

    notes: list[str] = []
    out = upscale_fitting_memory(device_with_little_memory, options, options.resolved(sr.spec), notes)
    assert tried == [(128, 2), (128, 1)]
    assert notes == ["out of memory: retried with --tile 128 --tile-batch 1"]
    assert torch.equal(out, expected)


def test_when_nothing_fits_the_out_of_memory_error_fails_the_file():
    sr = _lite()
    options = UpscaleOptions(tile=256, tile_batch=1)
    tried = []

    def no_memory(opts):
        tried.append(opts.tile)
        raise torch.OutOfMemoryError("CUDA out of memory")

    notes: list[str] = []
    with pytest.raises(torch.OutOfMemoryError):
        upscale_fitting_memory(no_memory, options, options.resolved(sr.spec), notes)
    assert tried == [256, 128] and notes == []


def test_other_errors_are_not_retried():
    sr = _lite()
    calls = []

    def broken(opts):
        calls.append(opts)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        upscale_fitting_memory(broken, UpscaleOptions(), UpscaleOptions().resolved(sr.spec), [])
    assert len(calls) == 1
