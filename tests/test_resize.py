import numpy as np
import pytest
import torch
from PIL import Image

from sr_cli.engine.resize import output_size, pil_resize


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
