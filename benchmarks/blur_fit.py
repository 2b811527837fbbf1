"""How blurry is a low-resolution input, next to a clean bicubic downsampling of its HR image?

For each LR/HR pair, the Gaussian blur (std ``sigma``, in HR pixels) that, applied to the HR image before srx's
antialiased bicubic x1/scale, best matches the LR image (highest PSNR over the LR, a border of 2 LR pixels left
out): sigma 0 is a clean bicubic input; camera LR/HR pairs (RealSR, Cai et al., ICCV 2019; DRealSR, Wei et
al., ECCV 2020) are blurrier. ``--config RECIPE.yaml`` fits the same on the LR images that the recipe's
``degradation:`` (srx train's Real-ESRGAN pipeline, seeded) makes from the HR images of the first ``--pairs``
set, so a training recipe can be matched to the inputs it is meant for. Prints the quantiles per set.

    python benchmarks/blur_fit.py --pairs REALSR_DIR --pairs DREALSR_DIR --skip 50 --limit 20 \\
        --config configs/lite-camera-l1.yaml

The pairs are found as ``srx evaluate`` finds them (``test_LR/`` + ``test_HR/``, or ``LR/`` + ``HR/``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIGMAS = tuple(round(0.25 * i, 2) for i in range(25))  # 0 .. 6 HR pixels
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of x (B, C, H, W), radius 3 sigma, reflected borders; sigma 0: x itself."""
    from sr_cli.data.kernels import gaussian_blur as blur

    return blur(x, sigma, 2 * max(1, math.ceil(3 * sigma)) + 1)


def fit_sigma(hr: torch.Tensor, lr: torch.Tensor, scale: int, sigmas=SIGMAS) -> float:
    """The sigma of ``sigmas`` whose blurred, bicubic-downsampled ``hr`` is closest (MSE) to ``lr``."""
    from sr_cli.data.resize import bicubic_downsample

    border = 2
    inner = (..., slice(border, -border), slice(border, -border))
    errors = [float(((bicubic_downsample(gaussian_blur(hr, s), scale).clamp(0, 1) - lr)[inner] ** 2).mean())
              for s in sigmas]
    return float(sigmas[int(np.argmin(errors))])


def load(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def recipe_degradation(config: Path, scale: int):
    """The (seeded) degradation a training recipe's ``degradation:`` block describes."""
    import yaml

    from sr_cli.data.degradation import DegradationConfig, RealESRGANDegradation

    block = (yaml.safe_load(config.read_text()) or {}).get("degradation") or {}
    return RealESRGANDegradation(DegradationConfig(scale=scale, **block))


def main() -> None:
    from sr_cli.evaluate.datasets import folder_set

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, action="append", required=True, help="folder of LR/HR pairs (repeatable)")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N pairs of each set")
    ap.add_argument("--limit", type=int, default=None, help="at most N pairs of each set")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--config", type=Path, help="a training recipe: fit its degradation on the first set's HR images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    def report(name: str, sigmas: list[float]) -> None:
        q = np.quantile(sigmas, QUANTILES)
        print(f"{name:<34} n={len(sigmas):<4} " + "  ".join(f"p{int(p * 100)}={v:.2f}" for p, v in zip(QUANTILES, q)))

    first_hr: list[torch.Tensor] = []
    for folder in args.pairs:
        samples = folder_set(folder).samples[args.skip:]
        samples = samples[:args.limit] if args.limit else samples
        sigmas = []
        for sample in samples:
            if sample.hr is None:
                raise SystemExit(f"{folder}: {sample.lr.name} has no HR image")
            hr, lr = load(sample.hr), load(sample.lr)
            sigmas.append(fit_sigma(hr, lr, args.scale))
            if folder == args.pairs[0]:
                first_hr.append(hr)
        report(folder.name, sigmas)
    if args.config:
        degrade = recipe_degradation(args.config, args.scale)
        generator = torch.Generator().manual_seed(args.seed)
        fitted = [fit_sigma(hr, degrade(hr, generator), args.scale) for hr in first_hr]
        report(f"{args.config.name} on {args.pairs[0].name}", fitted)


if __name__ == "__main__":
    main()
