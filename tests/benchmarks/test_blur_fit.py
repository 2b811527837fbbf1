"""benchmarks/blur_fit.py: the blur fitted to an LR image is the blur that made it."""

import sys

import numpy as np
import pytest
import torch

from tests.helpers.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from blur_fit import fit_sigma, gaussian_blur


def _edges(seed: int, side: int = 192) -> torch.Tensor:
    """A seeded HR image of overlapping flat rectangles: step edges at every scale, as blur needs to show."""
    rng = np.random.default_rng(seed)
    img = np.full((side, side, 3), 0.5, np.float32)
    for _ in range(60):
        y, x = rng.integers(0, side - 8, 2)
        h, w = rng.integers(4, side // 3, 2)
        img[y:y + h, x:x + w] = rng.random(3)
    return torch.from_numpy(img).permute(2, 0, 1)[None]


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.0, 3.5])
def test_the_fitted_sigma_is_the_blur_that_made_the_lr(sigma):
    from sr_cli.data.resize import bicubic_downsample

    hr = _edges(1)
    lr = bicubic_downsample(gaussian_blur(hr, sigma), 4).clamp(0, 1)
    assert fit_sigma(hr, lr, 4) == sigma
