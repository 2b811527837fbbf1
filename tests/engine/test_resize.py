import numpy as np
import pytest
import torch
from PIL import Image

from sr_cli.engine.resize import bicubic_8bit, output_size, pil_resize, upsample_input


def test_matches_pil_bicubic_on_8bit_within_rounding():
    rng = np.random.default_rng(0)
    arr = (rng.random((13, 17, 3)) * 255).round().astype(np.uint8)
    ref = np.asarray(Image.fromarray(arr).resize((68, 52), Image.Resampling.BICUBIC)).astype(np.float32) / 255
    x = torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1)[None]
    ours = pil_resize(x, 52, 68)[0].permute(1, 2, 0).numpy()
    # PIL's 8-bit path rounds after each pass; ours keeps float precision (and clamps like PIL).
    assert np.abs(ours - ref).max() <= 1.5 / 255
    assert ours.min() >= 0 and ours.max() <= 1


def test_keeps_16bit_precision():
    x = torch.linspace(0, 1, 64 * 64).reshape(1, 1, 64, 64)
    y = pil_resize(x, 64, 64)  # same size: identity, no 8-bit quantization
    assert torch.allclose(x, y, atol=1e-7)
    levels = torch.unique((pil_resize(x, 128, 128) * 65535).round())
    assert len(levels) > 256 * 4


def test_output_size_rounds():
    assert output_size(9, 13, 2.5) == (22, 32)
    assert output_size(1, 1, 1.2) == (1, 1)


def pil_float_bicubic(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL's own float bicubic, per channel, horizontal pass then vertical, clipped after each pass."""
    chans = []
    for c in x[0].numpy():
        img = Image.fromarray(c).resize((width, c.shape[0]), Image.Resampling.BICUBIC)
        img = Image.fromarray(np.clip(np.asarray(img), 0, 1)).resize((width, height), Image.Resampling.BICUBIC)
        chans.append(np.clip(np.asarray(img), 0, 1))
    return torch.from_numpy(np.stack(chans))[None]


@pytest.mark.parametrize("h,w,fy,fx", [(37, 53, 4, 4), (1, 7, 4, 4), (2, 2, 4, 4), (5, 3, 4, 4), (9, 11, 2, 3),
                                       (4, 6, 1, 4), (3, 3, 8, 8), (64, 48, 4, 4)])
def test_integer_factor_bicubic_equals_pil_float(h, w, fy, fx):
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    ours = pil_resize(x, fy * h, fx * w)
    ref = pil_float_bicubic(x, fy * h, fx * w)
    assert ours.shape == ref.shape == (1, 3, fy * h, fx * w)
    assert (ours - ref).abs().max() < 1e-6  # float32 vs PIL's double accumulation


def test_non_integer_factors_and_other_filters_still_use_pil():
    x = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(pil_resize(x, 25, 30), pil_float_bicubic(x, 25, 30), atol=1e-7)
    lanczos = pil_resize(x, 40, 48, Image.Resampling.LANCZOS)
    assert not torch.allclose(lanczos, pil_resize(x, 40, 48), atol=1e-3)


# ----------------------------------------------------------------------------- the 8-bit path (the authors' input)


def authors_upsample(arr: np.ndarray, height: int, width: int) -> torch.Tensor:
    """What OSEDiff's and Hero-SR's scripts feed their networks (before ``* 2 - 1``): the 8-bit PIL image
    resized with ``Image.BICUBIC`` (an 8-bit result), then ``transforms.ToTensor()``."""
    from torchvision import transforms

    return transforms.ToTensor()(Image.fromarray(arr).resize((width, height), Image.BICUBIC))[None]


SIZES_8BIT = [(37, 45), (128, 128), (1, 7), (7, 1), (1, 1), (3, 5)]
FACTORS_8BIT = [(2, 2), (3, 3), (4, 4), (8, 8), (4, 3), (1, 4), (4, 1)]


@pytest.mark.parametrize("banded", [False, True])
@pytest.mark.parametrize("h,w", SIZES_8BIT)
def test_8bit_upsampling_is_pil_bit_for_bit(h, w, banded, monkeypatch):
    from sr_cli.engine import resize

    if banded:  # bands of one source row: every band boundary that the split path can have
        monkeypatch.setattr(resize, "_BAND_PIXELS", 1)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    rng = np.random.default_rng(h * 100 + w)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    arr[0, 0], arr[-1, -1] = 0, 255  # the extremes, where the overshoot is clipped
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()
    for fy, fx in FACTORS_8BIT:
        ours = resize.bicubic_8bit(x, h * fy, w * fx)
        ref = authors_upsample(arr, h * fy, w * fx)
        assert ours.dtype == torch.float32 and ours.shape == ref.shape == (1, 3, h * fy, w * fx)
        assert torch.equal(ours, ref), (fy, fx, (ours - ref).abs().max())
        assert torch.equal(resize.upsample_input(x, h * fy, w * fx), ref)


def test_8bit_upsampling_differs_from_the_float_path():
    """The reason for the 8-bit path: PIL rounds to 8 bits after each pass, the float path does not."""
    arr = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    x8 = torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()
    float_path = pil_resize(x8.float() / 255, 148, 180)
    eight_bit = upsample_input(x8, 148, 180)
    assert torch.equal(eight_bit, authors_upsample(arr, 148, 180))
    assert (float_path - eight_bit).abs().max() > 0.5 / 255
    # a 16-bit image (float input) keeps the float path: no 8-bit rounding
    assert torch.equal(upsample_input(x8.float() / 255, 148, 180), float_path)


def test_8bit_upsampling_single_channel_and_wrong_input():
    arr = np.random.default_rng(1).integers(0, 256, (9, 11), dtype=np.uint8)
    x = torch.from_numpy(arr)[None, None]
    ref = torch.from_numpy(np.asarray(Image.fromarray(arr).resize((44, 36), Image.BICUBIC)).astype(np.float32) / 255)
    assert torch.equal(bicubic_8bit(x, 36, 44)[0, 0], ref)
    with pytest.raises(ValueError, match="uint8"):
        bicubic_8bit(x.float(), 36, 44)
