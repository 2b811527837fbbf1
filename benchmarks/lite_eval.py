"""Quality, speed and seam checks of a small model (the embedded `lite` by default) against bicubic/Lanczos.

    python benchmarks/lite_eval.py --val /path/to/held-out/HR --json lite_eval.json

For each held-out HR image (center-cropped to --crop px): x4 LR made two ways — clean (PIL bicubic
downsampling) and Real-ESRGAN-degraded (seeded) — then PSNR/SSIM on the Y channel of YCbCr (pyiqa with the
papers' settings when installed, else BT.601 PSNR only) for the model, bicubic and Lanczos upsampling;
NIQE when pyiqa has its weights. Then the wall time of a 512x512 -> 2048x2048 upscale with default tiling,
and the PSNR between tiled (512/64) and untiled outputs of the same image.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def quantize(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


def y_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """BT.601 luma PSNR (the fallback when pyiqa is absent; pyiqa's ycbcr Y gives the same)."""
    w = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255
    ya, yb = (a * w).sum(1) + 16 / 255, (b * w).sum(1) + 16 / 255
    mse = ((ya - yb) ** 2).mean().item()
    return 10 * np.log10(1 / mse)


class Metrics:
    def __init__(self):
        self.psnr = self.ssim = self.niqe = None
        try:
            import pyiqa

            self.psnr = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", device="cpu")
            self.ssim = pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", device="cpu")
            try:
                self.niqe = pyiqa.create_metric("niqe", device="cpu")
            except Exception as e:  # weights not downloadable offline
                print(f"(NIQE unavailable: {type(e).__name__})")
        except ImportError:
            print("(pyiqa not installed: PSNR-Y only)")

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        sr, hr = quantize(sr), quantize(hr)
        out = {"psnr_y": float(self.psnr(sr, hr)) if self.psnr else y_psnr(sr, hr)}
        if self.ssim:
            out["ssim_y"] = float(self.ssim(sr, hr))
        if self.niqe:
            out["niqe"] = float(self.niqe(sr))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lite")
    ap.add_argument("--val", required=True, help="folder of held-out high-quality images")
    ap.add_argument("--crop", type=int, default=512, help="center crop of each HR image (multiple of 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from sr_cli import load_model
    from sr_cli.data.degradation import DegradationConfig, RealESRGANDegradation
    from sr_cli.engine.pipeline import UpscaleOptions

    torch.set_grad_enabled(False)
    model = load_model(args.model, device="cpu", dtype="fp32")
    metrics = Metrics()
    degrade = RealESRGANDegradation(DegradationConfig(scale=4))
    rows = {"clean": {}, "degraded": {}}
    files = sorted(p for p in Path(args.val).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    for i, path in enumerate(files):
        hr_im = Image.open(path).convert("RGB")
        c = min(args.crop, *hr_im.size) // 4 * 4
        left, top = (hr_im.width - c) // 2, (hr_im.height - c) // 2
        hr_im = hr_im.crop((left, top, left + c, top + c))
        hr = to_tensor(hr_im)
        lr_clean = to_tensor(hr_im.resize((c // 4, c // 4), Image.Resampling.BICUBIC))
        lr_deg = degrade(hr, torch.Generator().manual_seed(args.seed + i))
        for kind, lr in (("clean", lr_clean), ("degraded", lr_deg)):
            lr_im = to_pil(lr)
            outs = {
                "bicubic": to_tensor(lr_im.resize((c, c), Image.Resampling.BICUBIC)),
                "lanczos": to_tensor(lr_im.resize((c, c), Image.Resampling.LANCZOS)),
                model.name: model.upscale_tensor(quantize(lr), UpscaleOptions()),
            }
            for method, sr in outs.items():
                rows[kind].setdefault(method, []).append(metrics(sr, hr))
    report: dict = {"model": model.name, "images": len(files), "crop": args.crop, "tables": {}}
    for kind, by_method in rows.items():
        print(f"\n{kind} x4 inputs ({len(files)} held-out images, {args.crop}px HR crops)")
        table = {}
        for method, vals in by_method.items():
            mean = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
            table[method] = mean
            print(f"  {method:10s} " + "  ".join(f"{k}={v:.4f}" for k, v in mean.items()))
        base = table["bicubic"]["psnr_y"]
        print(f"  {model.name} - bicubic PSNR-Y: {table[model.name]['psnr_y'] - base:+.3f} dB; "
              f"lanczos - bicubic: {table['lanczos']['psnr_y'] - base:+.3f} dB")
        report["tables"][kind] = table

    if not args.skip_speed:
        src = Image.open(files[0]).convert("RGB")
        src = src.resize((512, 512), Image.Resampling.BICUBIC)
        lr = to_tensor(src)
        model.upscale_tensor(lr[:, :, :64, :64])  # warm-up
        t = time.perf_counter()
        big = model.upscale_tensor(lr)
        wall = time.perf_counter() - t
        print(f"\nspeed: 512x512 -> {big.shape[-1]}x{big.shape[-2]} with default tiling: {wall:.2f} s "
              f"({torch.get_num_threads()} threads)")
        small = lr[:, :, :256, :256]
        tiled = model.upscale_tensor(small, UpscaleOptions(tile=512, overlap=64))
        whole = model.upscale_tensor(small, UpscaleOptions(tile=0))
        seam = 10 * np.log10(1 / ((tiled - whole) ** 2).mean().item())
        print(f"seams: tiled (512/64) vs untiled, 256x256 -> 1024x1024: PSNR {seam:.2f} dB")
        report |= {"seconds_512_to_2048": wall, "tiled_vs_untiled_psnr": seam}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
