"""The VQGAN f4 autoencoder of ResShift/SinSR (arXiv:2307.12348, arXiv:2311.14760) as a diffusers ``VQModel``.

The authors' ``VQModelTorch`` is the latent-diffusion VQ-f4 (the same architecture as the VQ-VAE
of CompVis' LDM super-resolution, which diffusers runs as ``VQModel``): encoder and decoder with
channel multipliers [1, 2, 4], two ResBlocks per level, an attention block in the middle, a
3-channel latent and an 8192-entry codebook. ``encode`` returns the *unquantized* latent (after
``quant_conv``); ``decode`` quantizes to the nearest codebook entry first, as the authors do.

Their checkpoint uses the latent-diffusion key names (``encoder.down.0.block.0``...); diffusers
ships the conversion to its own names (``convert_ldm_vae_checkpoint``), which covers everything
but the codebook.
"""

from __future__ import annotations

from typing import Any

import torch

# ResShift configs/realsr_swinunet_realesrgan256.yaml, autoencoder.params, in diffusers' terms.
VQ_F4_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [128, 256, 512],
    "layers_per_block": 2,
    "latent_channels": 3,
    "num_vq_embeddings": 8192,
    "vq_embed_dim": 3,
    "norm_num_groups": 32,
    "scaling_factor": 1.0,  # ResShift's latent scale is 1
}


def build_vq_model(config: dict[str, Any] | None = None):
    from diffusers import VQModel

    return VQModel(**(config or VQ_F4_CONFIG))


def convert_ldm_vq_state_dict(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Latent-diffusion VQ keys -> diffusers ``VQModel`` keys (``module.`` prefixes accepted)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    clean = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        clean[k] = v
    out = convert_ldm_vae_checkpoint(clean, config)
    out["quantize.embedding.weight"] = clean["quantize.embedding.weight"]
    return out
