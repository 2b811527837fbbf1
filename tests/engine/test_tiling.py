"""Tiling and blending as pure tensor functions."""

import pytest
import torch
import torch.nn.functional as F

from sr_cli.engine.tiling import Tile, plan_tiles, run_tiled, tile_starts, tile_weights


def local_op(x: torch.Tensor) -> torch.Tensor:
    """A size-preserving operator with a 5x5 receptive field (radius 2, far below the overlap)."""
    c = x.shape[1]
    k = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5).sin().expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=c)


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (33, 32, 8), (32, 32, 8), (5, 32, 8), (257, 64, 16)])
def test_tile_starts_cover_and_snap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all()
    for a, b in zip(starts, starts[1:]):
        assert b - a <= tile - overlap  # consecutive tiles overlap by at least `overlap`


def test_plan_tiles_same_size_for_batching():
    tiles = plan_tiles(70, 130, 32, 8)
    assert {(t.height, t.width) for t in tiles} == {(32, 32)}
    assert len(tiles) == len(tile_starts(70, 32, 8)) * len(tile_starts(130, 32, 8))
    assert plan_tiles(20, 50, 32, 8)[0] == Tile(0, 0, 20, 32)
    assert plan_tiles(20, 50, 0, 8) == [Tile(0, 0, 20, 50)]


@pytest.mark.parametrize("h,w", [(70, 130), (33, 97), (64, 64)])
def test_normalized_weights_sum_to_one(h, w):
    tiles = plan_tiles(h, w, 32, 8)
    acc = torch.zeros(h, w)
    for t in tiles:
        acc[t.top : t.top + t.height, t.left : t.left + t.width] += tile_weights(t, h, w, 8)
    assert acc.min() > 0
    total = torch.zeros(h, w)
    for t in tiles:
        total[t.top : t.top + t.height, t.left : t.left + t.width] += (
            tile_weights(t, h, w, 8) / acc[t.top : t.top + t.height, t.left : t.left + t.width]
        )
    assert torch.allclose(total, torch.ones(h, w), atol=1e-6)


def test_weights_are_one_inside_and_ramp_only_toward_neighbours():
    t = Tile(0, 0, 32, 32)  # top-left corner tile of a larger image
    w = tile_weights(t, 100, 100, 8)
    assert torch.equal(w[0, :24], torch.ones(24))  # image border: no ramp
    assert w[0, 23] == 1 and torch.all(w[0, 24:30].diff() <= 0)
    assert torch.equal(w[0, 30:], torch.zeros(2))  # the tile's own edge (overlap // 4) never contributes


def test_ramp_is_a_partition_of_unity():
    from sr_cli.engine.tiling import ramp_up

    for overlap in (1, 4, 8, 13, 64):
        r = ramp_up(overlap)
        assert torch.allclose(r + r.flip(0), torch.ones(overlap), atol=1e-6)
        assert r.min() >= 0 and r.max() <= 1


@pytest.mark.parametrize("h,w,tile,overlap,batch", [
    (70, 130, 32, 8, 1), (70, 130, 32, 8, 4), (33, 47, 16, 9, 3), (100, 100, 40, 12, 2), (31, 29, 64, 8, 2),
])
def test_tiled_equals_untiled_for_local_operator(h, w, tile, overlap, batch):
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    whole = local_op(x)
    seen = []

    def fn(crops):
        seen.append(crops.shape[0])
        return local_op(crops)

    tiled = run_tiled(x, fn, tile=tile, overlap=overlap, batch=batch)
    assert tiled.shape == whole.shape
    # The receptive radius (2) is at most overlap // 4: a tile's unreliable edge has weight 0.
    assert (tiled - whole).abs().max() <= 1e-3
    assert max(seen) <= batch


def test_single_tile_and_no_tiling_call_once():
    x = torch.rand(1, 3, 20, 30)
    calls = []
    out = run_tiled(x, lambda t: calls.append(t.shape) or t * 2, tile=0)
    assert calls == [(1, 3, 20, 30)] and torch.equal(out, x * 2)
    calls.clear()
    run_tiled(x, lambda t: calls.append(t.shape) or t, tile=64)
    assert calls == [(1, 3, 20, 30)]


def test_output_channels_may_differ():
    x = torch.rand(1, 3, 50, 50)
    out = run_tiled(x, lambda t: t[:, :1] * 3, tile=16, overlap=4, out_channels=1)
    assert out.shape == (1, 1, 50, 50)
    assert torch.allclose(out, x[:, :1] * 3, atol=1e-6)


def test_bad_overlap_rejected():
    with pytest.raises(ValueError):
        tile_starts(100, 32, 32)


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (2048, 1088, 64), (37, 16, 0), (70, 32, 12)])
def test_blend_weights_sum_to_exactly_one(length, tile, overlap):
    from sr_cli.engine.tiling import blend_weights

    total = torch.zeros(length)
    for start, w in blend_weights(length, tile, overlap).items():
        total[start : start + len(w)] += w
    assert torch.allclose(total, torch.ones(length), atol=1e-6)


@pytest.mark.parametrize("h,w,tile,overlap,batch,scale", [(70, 130, 32, 8, 1, 1), (70, 130, 32, 8, 4, 1),
                                                          (33, 47, 16, 4, 2, 4), (40, 17, 16, 8, 5, 1)])
def test_run_tiled_equals_accumulate_and_normalize(h, w, tile, overlap, batch, scale):
    """The streamed blend (assign fresh areas, accumulate the rest, pre-normalized weights) equals the plain
    definition: sum of weight * tile output over a zeroed image, divided by the sum of weights."""
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))

    def fn(c):  # depends on the tile's position in its input: tiles truly differ in the overlaps
        y = F.interpolate(c, scale_factor=scale, mode="nearest") if scale > 1 else c
        return y * torch.linspace(0.5, 1.5, y.shape[-1]) + torch.linspace(0, 0.2, y.shape[-2])[:, None]

    out = run_tiled(x, fn, tile, overlap, batch, scale=scale)
    acc = torch.zeros(1, 3, h * scale, w * scale)
    acc_w = torch.zeros(1, 1, h * scale, w * scale)
    for t in plan_tiles(h, w, tile, overlap):
        big = Tile(t.top * scale, t.left * scale, t.height * scale, t.width * scale)
        wt = tile_weights(big, h * scale, w * scale, overlap * scale)
        res = fn(x[:, :, t.top : t.top + t.height, t.left : t.left + t.width])
        acc[:, :, big.top : big.top + big.height, big.left : big.left + big.width] += res * wt
        acc_w[:, :, big.top : big.top + big.height, big.left : big.left + big.width] += wt
    assert torch.allclose(out, acc / acc_w, atol=1e-5)
