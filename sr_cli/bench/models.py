"""What ``srx bench`` runs without downloads: one-step SD models of real sizes with random weights, and a
photo-like synthetic input (shared by the benchmark and its reference-style peer loop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=768,
    scaling_factor=0.18215,
)
TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8, cross_attention_dim=32, norm_num_groups=8,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
    sample_size=64, scaling_factor=0.18215,
)
RANDOM_CONFIGS = {"sd21": (SD21_UNET, SD21_VAE), "tiny-sd": (TINY_UNET, TINY_VAE)}


def random_sd(config: str, merge: bool = True, seed: int = 0):
    """A one-step SD model of the given size with random weights and OSEDiff's LoRA adapters (rank 4)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from ..engine.sd_onestep import OneStepSD
    from ..models.checkpoints import PEFT_DEFAULT_LORA_ALPHA, AdapterSpec
    from ..models.lora import attach_adapters, merge_adapters, osediff_unet_targets, osediff_vae_targets

    unet_cfg, vae_cfg = RANDOM_CONFIGS[config]
    torch.manual_seed(seed)
    unet, vae = UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg)
    enc, dec, others = osediff_unet_targets(unet)
    alpha = float(PEFT_DEFAULT_LORA_ALPHA)  # OSEDiff's adapters: peft's default alpha at rank 4
    attach_adapters(unet, [AdapterSpec("default_encoder", 4, alpha, tuple(enc)),
                           AdapterSpec("default_decoder", 4, alpha, tuple(dec)),
                           AdapterSpec("default_others", 4, alpha, tuple(others))])
    attach_adapters(vae, [AdapterSpec("default_encoder", 4, alpha, tuple(osediff_vae_targets(vae)))])
    if merge:
        merge_adapters(unet)
        merge_adapters(vae)
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    text = torch.randn(1, 77, unet_cfg["cross_attention_dim"]) * 0.1  # a fixed condition: no text encoder
    return OneStepSD(vae, unet, sched.alphas_cumprod, text_embedding=text).eval().requires_grad_(False)


def synthetic_image(path: Path, size: int, seed: int = 0) -> Path:
    """A photo-like test image: smooth color fields plus fine texture."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((size // 16 + 2, size // 16 + 2, 3)) * 255).astype(np.uint8))
    arr = np.asarray(base.resize((size, size), Image.Resampling.BICUBIC)).astype(np.float32)
    arr += rng.normal(0, 6, arr.shape)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path
