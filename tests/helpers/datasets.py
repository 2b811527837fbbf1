"""Small paired LR/HR datasets on disk, for the evaluation tests of every folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(rng, h: int, w: int) -> np.ndarray:
    """A smooth random RGB image (h, w, 3) uint8: coarse noise enlarged with bicubic."""
    base = rng.random((h // 8 + 1, w // 8 + 1, 3))
    img = Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img)


def make_pairs(root: Path, n=3, hr_size=(64, 48), lr_name="LR", hr_name="HR", seed=0, hr_suffix="") -> Path:
    """``root/LR`` and ``root/HR`` with ``n`` pairs; each LR is its HR reduced x4 with bicubic."""
    rng = np.random.default_rng(seed)
    (root / lr_name).mkdir(parents=True, exist_ok=True)
    (root / hr_name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        hr = Image.fromarray(smooth_image(rng, hr_size[1], hr_size[0]))
        hr.save(root / hr_name / f"img{i}{hr_suffix}.png")
        hr.resize((hr_size[0] // 4, hr_size[1] // 4), Image.Resampling.BICUBIC).save(root / lr_name / f"img{i}.png")
    return root
