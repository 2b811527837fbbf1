"""OSEDiff (Wu et al., NeurIPS 2024): MSE + 2 LPIPS + 1 VSD; the VSD's fake score is a LoRA UNet (``aux``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ...engine.sd_onestep import x0_from_eps
from ...models.checkpoints import AdapterSpec
from ...models.lora import attach_adapters
from ..perceptual import lpips_loss, make_lpips
from .one_step_sd import OneStepSDMethod, load_scheduler, train_only_lora

if TYPE_CHECKING:
    from ..config import TrainConfig


class OSEDiffMethod(OneStepSDMethod):
    """SD 2.1-base, LoRA r4 on VAE encoder + UNet (+ full conv_in), MSE + 2 LPIPS + 1 VSD."""

    name = "osediff"
    summary = "OSEDiff: MSE + LPIPS + variational score distillation"
    defaults = {"lr": 5e-5, "lr_aux": 5e-5}
    loss_weights = {"mse": 1.0, "lpips": 2.0, "vsd": 1.0}

    @dataclass
    class Options(OneStepSDMethod.Options):
        neg_prompt: str = ""  # the VSD's negative prompt
        cfg: float = 7.5  # the VSD's classifier-free guidance scale

    def __init__(self, cfg: TrainConfig, base_dir: Path):
        super().__init__(cfg, base_dir)
        self.net.unet.conv_in.requires_grad_(True)  # OSEDiff trains the whole conv_in (and its LoRA)
        self.lpips = make_lpips(self.options.lpips_net, cfg.perceptual_pretrained)
        with torch.no_grad():
            self.register_buffer("neg_embedding", self.net.encode_text(self.options.neg_prompt).clone(), persistent=False)
        self.aux = VSDRegularizer(self.base_dir, self.options, self.unet_adapters)

    def loss_terms(self, lq, hq, clean=None):
        sr, z0 = self.generate(lq)
        terms = {"mse": F.mse_loss(sr, hq), "lpips": lpips_loss(self.lpips, sr, hq),
                 "vsd": self.aux.vsd_loss(z0, self.prompt_embedding, self.neg_embedding, self.options.cfg)}
        return terms, (z0.detach(), self.prompt_embedding)


class VSDRegularizer(nn.Module):
    """OSEDiff's variational score distillation: the frozen base UNet is the real score (with CFG), the
    same UNet with a LoRA adapter, trained with the diffusion loss on the generator's latents, the fake one."""

    def __init__(self, base_dir: Path, options: OSEDiffMethod.Options, adapters: list[AdapterSpec]):
        super().__init__()
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet").requires_grad_(False)
        self.adapter = AdapterSpec("vsd_fake", options.lora_rank, adapters[0].alpha,
                                   tuple(t for a in adapters for t in a.target_modules))
        attach_adapters(unet, [self.adapter])
        if options.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        train_only_lora(unet)
        self.unet = unet
        self.scheduler = load_scheduler(base_dir)

    def x0(self, noisy, eps, t):
        return x0_from_eps(self.scheduler.alphas_cumprod, noisy, eps, t).to(noisy.dtype)

    def vsd_loss(self, z0, emb, neg_emb, guidance: float) -> torch.Tensor:
        b = z0.shape[0]
        t = torch.randint(20, 980, (b,), device=z0.device)
        noisy = self.scheduler.add_noise(z0, torch.randn_like(z0), t)
        with torch.no_grad():
            eps_fake = self.unet(noisy, t, encoder_hidden_states=emb.expand(b, -1, -1)).sample
            x0_fake = self.x0(noisy, eps_fake, t)
            self.unet.disable_adapters()  # the frozen base model: the real score
            try:
                both = self.unet(torch.cat([noisy] * 2), torch.cat([t] * 2),
                                 encoder_hidden_states=torch.cat([neg_emb.expand(b, -1, -1), emb.expand(b, -1, -1)])).sample
            finally:
                self.unet.enable_adapters()
            uncond, cond = both.chunk(2)
            x0_real = self.x0(noisy, uncond + guidance * (cond - uncond), t)
        weight = (z0 - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
        grad = (x0_fake - x0_real) / weight
        return F.mse_loss(z0, (z0 - grad).detach())

    def forward(self, z0: torch.Tensor, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fake score's diffusion loss on the generator's (detached) latents."""
        z0 = z0.detach()
        b = z0.shape[0]
        noise = torch.randn_like(z0)
        t = torch.randint(0, len(self.scheduler.alphas_cumprod), (b,), device=z0.device)
        pred = self.unet(self.scheduler.add_noise(z0, noise, t), t, encoder_hidden_states=emb.expand(b, -1, -1)).sample
        loss = F.mse_loss(pred.float(), noise.float())
        return {"diffusion": loss, "total": loss}
