"""DFOSD: MSE + EA-DISTS + 5e-3 adversarial (noise-aware discriminator, ``aux``); learnable text embedding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ...models.checkpoints import AdapterSpec
from ...models.lora import attach_adapters, osediff_unet_targets
from ..perceptual import ea_dists_loss, make_dists
from .one_step_sd import OneStepSDMethod, lora_alpha, train_only_lora

if TYPE_CHECKING:
    from ..config import TrainConfig


class DFOSDMethod(OneStepSDMethod):
    """LoRA r16 alpha 16, learnable text embedding, lr 5e-5 / 5e-7 (supplement, Table 4)."""

    name = "dfosd"
    summary = "DFOSD: MSE + edge-aware DISTS + noise-aware adversarial loss, learned text embedding"
    defaults = {"lr": 5e-5, "lr_aux": 5e-7}
    loss_weights = {"mse": 1.0, "ea_dists": 1.0, "adv": 5e-3}

    @dataclass
    class Options(OneStepSDMethod.Options):
        lora_rank: int = 16
        lora_alpha: float | None = 16.0

    def __init__(self, cfg: TrainConfig, base_dir: Path):
        super().__init__(cfg, base_dir)
        self.net.learned_text_embedding = nn.Parameter(self.prompt_embedding.clone(), requires_grad=True)
        self.net.text_encoder = self.net.tokenizer = None  # not needed once the embedding is learned
        self.dists = make_dists(cfg.perceptual_pretrained)
        self.aux = NoiseAwareDiscriminator(self.base_dir, self.options.lora_rank, lora_alpha(self.options))

    def text_condition(self):
        return self.net.learned_text_embedding

    def loss_terms(self, lq, hq, clean=None):
        sr, z0 = self.generate(lq)
        with torch.no_grad():
            vae = self.net.vae
            vae.disable_adapters()  # real latents: the base encoder on the ground truth
            try:
                z_real = self.net.encode(hq * 2 - 1)
            finally:
                vae.enable_adapters()
        t = torch.randint(0, len(self.net.alphas_cumprod), (z0.shape[0],), device=z0.device)
        fake_t, real_t = self.noised(z0, t), self.noised(z_real, t)
        ctx = self.text_condition().detach().expand(z0.shape[0], -1, -1)
        terms = {"mse": F.mse_loss(sr, hq), "ea_dists": ea_dists_loss(self.dists, sr, hq),
                 "adv": F.softplus(-self.aux.score(fake_t, t, ctx)).mean()}
        return terms, (real_t.detach(), fake_t.detach(), t, ctx)


class NoiseAwareDiscriminator(nn.Module):
    """DFOSD's discriminator: the base UNet's time embedding, down and mid blocks (with LoRA) read a noised
    latent at a random timestep; an MLP on the pooled mid-block features gives one logit."""

    def __init__(self, base_dir: Path, rank: int, alpha: float):
        super().__init__()
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet").requires_grad_(False)
        unet.up_blocks = nn.ModuleList()  # only the encoder half is used
        unet.conv_norm_out = unet.conv_act = unet.conv_out = None
        enc, _, others = osediff_unet_targets(unet)
        self.adapter = AdapterSpec("disc", rank, alpha, tuple(enc + others))
        attach_adapters(unet, [self.adapter])
        train_only_lora(unet)
        self.unet = unet
        width = unet.config.block_out_channels[-1]
        self.head = nn.Sequential(nn.Linear(width, 256), nn.SiLU(), nn.Linear(256, 1))

    def score(self, z_t: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        u = self.unet
        emb = u.time_embedding(u.time_proj(t).to(z_t.dtype))
        h = u.conv_in(z_t)
        for block in u.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=ctx)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        h = u.mid_block(h, emb, encoder_hidden_states=ctx)
        return self.head(h.mean(dim=(2, 3))).squeeze(1)

    def forward(self, real_t, fake_t, t, ctx) -> dict[str, torch.Tensor]:
        """Non-saturating GAN loss for the discriminator (real: noised GT latents, fake: the generator's)."""
        loss = F.softplus(-self.score(real_t, t, ctx)).mean() + F.softplus(self.score(fake_t.detach(), t, ctx)).mean()
        return {"disc": loss, "total": loss}
