import numpy as np
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
