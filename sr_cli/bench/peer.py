"""``srx bench --peer``: the same model and image through a plain reference-style loop, timed beside srx.

The loop is written the way the published reference scripts run a one-step SD model (tile by tile at batch 1,
LoRA unmerged, Gaussian blending), with diffusers modules only and no srx engine code, so that the speed-up
srx reports is measured against what users would otherwise run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def reference_style(net, lr: torch.Tensor, tile: int, overlap: int, device, dtype, timestep: int = 999):
    """How the published reference code runs a one-step SD model: PIL-bicubic x4, then tile by tile at
    batch 1 with the LoRA adapters unmerged, each tile encoded, denoised and decoded, blended with
    Gaussian weights (written plainly with diffusers modules; no srx engine code)."""
    from ..engine.resize import pil_resize

    h, w = lr.shape[-2] * 4, lr.shape[-1] * 4
    x = pil_resize(lr, h, w) * 2 - 1
    acc = torch.zeros(1, 3, h, w)
    acc_w = torch.zeros(1, 1, h, w)
    ys = list(range(0, max(h - tile, 0), tile - overlap)) + [max(h - tile, 0)]
    xs = list(range(0, max(w - tile, 0), tile - overlap)) + [max(w - tile, 0)]
    th, tw = min(tile, h), min(tile, w)
    gy = torch.exp(-0.5 * ((torch.arange(th) - (th - 1) / 2) / (0.3 * th)) ** 2)
    gx = torch.exp(-0.5 * ((torch.arange(tw) - (tw - 1) / 2) / (0.3 * tw)) ** 2)
    weight = (gy[:, None] * gx[None, :])[None, None]
    a = net.alphas_cumprod[timestep].double()
    text = net.learned_text_embedding.to(device, dtype)
    for top in ys:
        for left in xs:
            crop = x[:, :, top:top + th, left:left + tw].to(device, dtype)
            z = net.vae.encode(crop).latent_dist.mean * net.vae.config.scaling_factor
            t = torch.tensor([timestep], device=device)
            eps = net.unet(z, t, encoder_hidden_states=text).sample
            z0 = ((z.double() - (1 - a).sqrt() * eps.double()) / a.sqrt()).to(dtype)
            y = net.vae.decode(z0 / net.vae.config.scaling_factor).sample.float().cpu()
            acc[:, :, top:top + th, left:left + tw] += y * weight
            acc_w[:, :, top:top + th, left:left + tw] += weight
    return (acc / acc_w).clamp(-1, 1)


def peer_comparison(args, model, report: dict) -> dict:
    from .models import RANDOM_CONFIGS, random_sd, synthetic_image

    if args.model not in RANDOM_CONFIGS:
        return {"skipped": "the peer loop is written for the SD family with random weights (sd21, tiny-sd)"}
    unmerged = random_sd(args.model, merge=False).to(model.device, model.dtype)
    with tempfile.TemporaryDirectory() as tmp, Image.open(synthetic_image(Path(tmp) / "p.png", args.size)) as im:
        lr = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    opts = report
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup + args.repeat):
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            reference_style(unmerged, lr, opts["tile"], opts["overlap"], model.device, model.dtype)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    ref = min(times[args.warmup:])
    ours = report["total_s"] - report["stages_s"]["read"] - report["stages_s"]["write"]
    return {"reference_s": ref, "srx_s": ours, "speedup": ref / ours}
