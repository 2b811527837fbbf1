"""Statistics of synthesised training pairs: srx's Real-ESRGAN degradation beside the reference pipeline's.

For random 256-pixel crops of photographs (flipped at random), each pipeline makes the x4 low-quality input
and we measure per sample, in 8-bit units on the 64x64 LR:

* ``noise_luma``: noise sigma of the luma, robust (1.4826 x MAD) on the residual of the 3x3 Laplacian-type
  kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] (Immerkaer), divided by its norm 6;
* ``noise_chroma``: the same on Cb and Cr (averaged); ``noise_chroma_2x``: on 2x2-averaged Cb/Cr;
* ``color_shift``: mean over R, G, B of |mean(LR) - mean(clean LR)|, clean = antialiased bicubic x1/4;
* ``psnr_hr``: PSNR (dB) of the LR upsampled x4 (bicubic) against the HR crop;
* ``hf_ratio``: std of the LR luma's Laplacian over the clean LR's;
* ``blockiness``: mean |step| across 8-pixel block boundaries over the mean |step| elsewhere (luma);
* ``mean_error``: mean(LR - clean LR) (signed).

Each statistic is summarised by its p25/p50/p75/p90 over the samples. With ``--reference-path`` (a BasicSR
checkout, or an installed ``basicsr``) and ``--osediff-path`` (a checkout of OSEDiff's training code), the
reference is OSEDiff's own ``RealESRGAN_degradation`` (BasicSR's functions and DiffJPEG, OSEDiff's option
file), run twice with different seeds. The tolerance of a quantile is the larger of the two reference
runs' difference and three standard errors (bootstrap) of the difference ours - reference; the table marks
quantiles outside it. The reference needs an environment where BasicSR imports (it wants OpenCV, SciPy, and
``torchvision.transforms.functional_tensor``, which torchvision 0.17+ no longer has); keep that environment
outside this project.

    python benchmarks/degradation_stats.py --samples 1000
    python benchmarks/degradation_stats.py --samples 1000 --reference-path BasicSR --osediff-path OSEDiff
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

STATS = ("noise_luma", "noise_chroma", "noise_chroma_2x", "color_shift", "psnr_hr", "hf_ratio", "blockiness",
         "mean_error")
QUANTILES = (0.25, 0.5, 0.75, 0.9)
# scikit-image's bundled colour photographs (installed with scikit-image, no download).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png",
                  "rocket.jpg")
LAPLACIAN_3X3 = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
LAPLACIAN_4 = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


# ------------------------------------------------------------------------------------------ photographs


def load_photos(paths: list[str], min_side: int) -> list[np.ndarray]:
    """RGB float32 HWC arrays in [0, 1] of every readable image in ``paths`` (files or folders)."""
    from PIL import Image

    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}) \
            if p.is_dir() else [p]
    photos = []
    for f in files:
        with Image.open(f) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        if min(arr.shape[:2]) >= min_side:
            photos.append(arr)
    return photos


def default_photo_paths() -> list[str]:
    try:
        import skimage
    except ImportError:
        sys.exit("error: no --images given and scikit-image (whose bundled photographs are the default) is missing")
    data = Path(skimage.__file__).parent / "data"
    return [str(data / name) for name in SKIMAGE_PHOTOS if (data / name).exists()]


def crops(photos: list[np.ndarray], n: int, size: int, seed: int):
    """``n`` random (photo, position, flip) crops, the same sequence for every pipeline (HWC float32)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        top = rng.integers(img.shape[0] - size + 1)
        left = rng.integers(img.shape[1] - size + 1)
        crop = img[top:top + size, left:left + size]
        yield np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)


# ------------------------------------------------------------------------------------------ statistics


def _ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> full-range BT.601 YCbCr in 8-bit units (chroma centred on 0)."""
    m = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    return torch.einsum("kc,bchw->bkhw", m, x * 255.0)


def _robust_sigma(plane: torch.Tensor) -> float:
    """Noise std of a (1, 1, H, W) plane from the MAD of its Laplacian-type residual."""
    r = F.conv2d(plane, LAPLACIAN_3X3.view(1, 1, 3, 3)).flatten()
    return float(1.4826 * (r - r.median()).abs().median() / 6.0)


def _blockiness(y: torch.Tensor) -> float:
    dx = (y[..., :, 1:] - y[..., :, :-1]).abs()  # step between column j and j + 1
    dy = (y[..., 1:, :] - y[..., :-1, :]).abs()
    at_x = torch.zeros(dx.shape[-1], dtype=torch.bool)
    at_x[7::8] = True
    at_y = torch.zeros(dy.shape[-2], dtype=torch.bool)
    at_y[7::8] = True
    boundary = torch.cat([dx[..., at_x].flatten(), dy[..., at_y, :].flatten()]).mean()
    inside = torch.cat([dx[..., ~at_x].flatten(), dy[..., ~at_y, :].flatten()]).mean()
    return float(boundary / inside.clamp_min(1e-6))


def pair_stats(hr: torch.Tensor, lr: torch.Tensor) -> dict[str, float]:
    """The statistics of one (HR (1, 3, H, W), LR (1, 3, H/4, W/4)) pair, both in [0, 1]."""
    clean = F.interpolate(hr, size=lr.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
    ycc, ycc_clean = _ycbcr(lr), _ycbcr(clean)
    chroma_2x = F.avg_pool2d(ycc[:, 1:], 2)
    up = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    mse = float(((up - hr) ** 2).mean())
    lap = LAPLACIAN_4.view(1, 1, 3, 3)
    hf = float(F.conv2d(ycc[:, :1], lap).std() / F.conv2d(ycc_clean[:, :1], lap).std().clamp_min(1e-6))
    return {
        "noise_luma": _robust_sigma(ycc[:, :1]),
        "noise_chroma": (_robust_sigma(ycc[:, 1:2]) + _robust_sigma(ycc[:, 2:3])) / 2,
        "noise_chroma_2x": (_robust_sigma(chroma_2x[:, :1]) + _robust_sigma(chroma_2x[:, 1:])) / 2,
        "color_shift": float(((lr - clean).mean((2, 3)).abs() * 255).mean()),
        "psnr_hr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "hf_ratio": hf,
        "blockiness": _blockiness(ycc[:, :1]),
        "mean_error": float((lr - clean).mean() * 255),
    }


# ------------------------------------------------------------------------------------------ pipelines


def run_ours(photos, n: int, size: int, crop_seed: int, seed: int, jpeg: str) -> list[dict[str, float]]:
    from sr_cli.data.degradation import DegradationConfig, RealESRGANDegradation

    degrade = RealESRGANDegradation(DegradationConfig(jpeg=jpeg))
    generator = torch.Generator().manual_seed(seed)
    out = []
    for crop in crops(photos, n, size, crop_seed):
        hr = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).contiguous()
        out.append(pair_stats(hr, degrade(hr, generator)))
    return out


def load_reference(reference_path: str | None, osediff_path: str):
    """OSEDiff's ``RealESRGAN_degradation`` class, with BasicSR from ``reference_path`` (or installed)."""
    if reference_path:
        sys.path.insert(0, str(Path(reference_path).resolve()))
    module_file = Path(osediff_path) / "dataloaders" / "realesrgan.py"
    spec = importlib.util.spec_from_file_location("osediff_realesrgan", module_file)
    if spec is None or not module_file.exists():
        sys.exit(f"error: {module_file}: not found (--osediff-path must be a checkout of OSEDiff's code)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        sys.exit(f"error: {module_file}: cannot import the reference ({exc})")
    return module.RealESRGAN_degradation


def run_reference(degradation_cls, photos, n: int, size: int, crop_seed: int, seed: int) -> list[dict[str, float]]:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    degrade = degradation_cls()  # OSEDiff's params_realesrgan.yml, CPU, batch 1 as its dataset does
    out = []
    for crop in crops(photos, n, size, crop_seed):
        hr, lr = degrade.degrade_process(crop)  # it flips again at random: stats are flip-invariant
        out.append(pair_stats(hr.float(), lr.float()))
    return out


# ------------------------------------------------------------------------------------------ summary


def quantiles(samples: list[dict[str, float]]) -> dict[str, list[float]]:
    return {k: np.quantile([s[k] for s in samples], QUANTILES).tolist() for k in STATS}


def bootstrap_se(samples: list[dict[str, float]], reps: int = 200, seed: int = 0) -> dict[str, list[float]]:
    """Standard error of each quantile for one run of len(samples) samples."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in STATS:
        values = np.array([s[k] for s in samples])
        boots = np.quantile(values[rng.integers(len(values), size=(reps, len(values)))], QUANTILES, axis=1)
        out[k] = boots.std(axis=1).tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=1000, help="crops per pipeline run")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--images", nargs="*", help="photographs (files or folders); default: scikit-image's")
    ap.add_argument("--seed", type=int, default=0, help="pipeline seed (the reference also runs seed + 1)")
    ap.add_argument("--crop-seed", type=int, default=1234)
    ap.add_argument("--jpeg", default="reference", choices=("reference", "libjpeg"), help="our JPEG stage")
    ap.add_argument("--reference-path", help="BasicSR checkout (its root folder) when basicsr is not installed")
    ap.add_argument("--osediff-path", help="OSEDiff checkout: compare against its RealESRGAN_degradation")
    ap.add_argument("--json", help="also write the per-sample statistics and quantiles here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    photos = load_photos(args.images or default_photo_paths(), args.crop)
    if not photos:
        sys.exit(f"error: no photograph of at least {args.crop} pixels found")
    runs: dict[str, list[dict[str, float]]] = {}
    t0 = time.time()
    runs["ours"] = run_ours(photos, args.samples, args.crop, args.crop_seed, args.seed, args.jpeg)
    print(f"ours ({args.jpeg} JPEG): {args.samples} samples in {time.time() - t0:.0f} s", file=sys.stderr)
    if args.osediff_path:
        cls = load_reference(args.reference_path, args.osediff_path)
        for name, seed in (("ref_a", args.seed), ("ref_b", args.seed + 1)):
            t0 = time.time()
            runs[name] = run_reference(cls, photos, args.samples, args.crop, args.crop_seed, seed)
            print(f"reference seed {seed}: {args.samples} samples in {time.time() - t0:.0f} s", file=sys.stderr)

    q = {name: quantiles(samples) for name, samples in runs.items()}
    print(f"{len(photos)} photographs, {args.samples} random {args.crop}-pixel crops per run, batch 1, "
          f"values in 8-bit units (psnr_hr in dB)")
    if "ref_a" not in runs:
        print(f"{'statistic':<16}" + "".join(f"{f'p{int(p * 100)}':>9}" for p in QUANTILES))
        for k in STATS:
            print(f"{k:<16}" + "".join(f"{v:9.3f}" for v in q["ours"][k]))
    else:
        pooled = quantiles(runs["ref_a"] + runs["ref_b"])
        se = bootstrap_se(runs["ref_a"])
        print(f"{'statistic':<16}{'q':>4}{'ours':>9}{'ref':>9}{'ref a':>9}{'ref b':>9}{'tol':>8}  ok")
        failures = 0
        for k in STATS:
            for i, p in enumerate(QUANTILES):
                a, b, ours, ref = q["ref_a"][k][i], q["ref_b"][k][i], q["ours"][k][i], pooled[k][i]
                # ours (n samples) - pooled reference (2n samples): std = se * sqrt(1 + 1/2)
                tol = max(abs(a - b), 3 * se[k][i] * math.sqrt(1.5))
                ok = abs(ours - ref) <= tol
                failures += not ok
                print(f"{k:<16}{f'p{int(p * 100)}':>4}{ours:9.3f}{ref:9.3f}{a:9.3f}{b:9.3f}{tol:8.3f}  "
                      f"{'yes' if ok else 'NO'}")
        print(f"{len(STATS) * len(QUANTILES) - failures} of {len(STATS) * len(QUANTILES)} quantiles within tolerance")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "quantiles": q, "samples": runs}))


if __name__ == "__main__":
    main()
