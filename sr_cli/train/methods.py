"""The training methods: what is trainable, the losses, and the export to an srx model directory.

Each method is an ``nn.Module`` whose ``forward(lq, hq)`` runs the generator (the same ``OneStepSD``
the engine uses for inference) and returns its loss terms, so that accelerate/DDP can wrap it.
Methods with a second network (OSEDiff's fake-score LoRA UNet, DFOSD's discriminator) have an
``aux`` module with its own ``forward`` and optimizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import AdapterSpec, OneStepCheckpoint
from ..engine.sd_onestep import OneStepSD
from ..lora import lora_config, osediff_unet_targets, osediff_vae_targets
from ..nets.dtsm import DynamicTimestepModule
from .config import DISTILL_METHODS, HERO_SR_ATTRIBUTE_PROMPTS, TrainConfig
from .perceptual import CLIPPerception, ea_dists_loss, lpips_loss, make_dists, make_lpips

# Hero-SR's UNet LoRA targets (suffix patterns, peft matching), as in img2img-turbo-style one-step code.
UNET_SUFFIX_TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                       "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj")


def _add_adapter(model: nn.Module, spec: AdapterSpec) -> AdapterSpec:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        model.add_adapter(lora_config(spec), adapter_name=spec.name)
    return spec


def _upsample(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """The generator's input: bicubic x``scale`` of the LR in [-1, 1] (torch bicubic: fast, on the device)."""
    return F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1


class OneStepMethod(nn.Module):
    """Common generator: base SD components + LoRA (+ DTSM / learned text embedding)."""

    name = "base"

    def __init__(self, cfg: TrainConfig, base_dir: Path):
        super().__init__()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        self.cfg = cfg
        self.base_dir = Path(base_dir)
        vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
        unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
        self.scheduler = DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler")
        tokenizer = AutoTokenizer.from_pretrained(base_dir, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(base_dir, subfolder="text_encoder")
        vae.requires_grad_(False)
        unet.requires_grad_(False)
        text_encoder.requires_grad_(False)
        alpha = cfg.lora_alpha if cfg.lora_alpha is not None else 8.0
        self.unet_adapters = self.unet_lora_specs(unet, cfg.lora_rank, alpha)
        self.vae_adapters = [AdapterSpec("default_encoder", cfg.lora_rank, alpha, tuple(osediff_vae_targets(vae)))]
        for spec in self.unet_adapters:
            _add_adapter(unet, spec)
        unet.set_adapter([s.name for s in self.unet_adapters])
        _add_adapter(vae, self.vae_adapters[0])
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.net = OneStepSD(vae, unet, self.scheduler.alphas_cumprod, text_encoder, tokenizer,
                             dtsm=self.make_dtsm(), text_embedding=None)
        self.net.dtype = self.net.vae_dtype = torch.float32
        with torch.no_grad():
            self.register_buffer("prompt_embedding", self.net.encode_text(cfg.prompt).clone(), persistent=False)
        for n, p in self.net.named_parameters():
            if "lora_" in n:
                p.requires_grad_(True)

    # --- what each method changes
    def unet_lora_specs(self, unet, rank: int, alpha: float) -> list[AdapterSpec]:
        enc, dec, others = osediff_unet_targets(unet)
        return [AdapterSpec(f"default_{part}", rank, alpha, tuple(t))
                for part, t in (("encoder", enc), ("decoder", dec), ("others", others)) if t]

    def make_dtsm(self) -> DynamicTimestepModule | None:
        return None

    def text_condition(self) -> torch.Tensor:
        return self.prompt_embedding

    def timesteps(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), float(self.cfg.timestep), device=x.device)

    # --- the generator
    def generate(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(SR image in [0, 1], predicted clean latent z0) for a LR batch in [0, 1]."""
        net = self.net
        x = _upsample(lq, self.cfg.scale)
        vae_cfg = net.vae.config
        z = net.vae.encode(x).latent_dist.sample() * vae_cfg.scaling_factor  # the authors sample in training
        t = self.timesteps(x)
        cond = self.text_condition().to(z.dtype).expand(z.shape[0], -1, -1)
        eps = net.unet(z, t, encoder_hidden_states=cond).sample
        z0 = net.x0_from_eps(z, eps, t).to(z.dtype)
        y = net.vae.decode(z0 / vae_cfg.scaling_factor).sample.clamp(-1, 1)
        return (y + 1) / 2, z0

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, lq: torch.Tensor, hq: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # --- export
    def export(self) -> tuple[dict[str, Any], OneStepCheckpoint]:
        """(registry-style spec dict, checkpoint) for srx's model-directory layout."""
        trainable = {n for n, p in self.net.named_parameters() if p.requires_grad}
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (("unet", self.net.unet), ("vae", self.net.vae)):
            for k, v in module.state_dict().items():
                if "lora_" in k or f"{prefix}.{k}" in trainable:
                    tensors[f"{prefix}.{k}"] = v.detach().cpu().clone()
        dtsm_cfg = None
        if self.net.dtsm is not None:
            dtsm_cfg = self.dtsm_config
            tensors |= {f"dtsm.{k}": v.detach().cpu().clone() for k, v in self.net.dtsm.state_dict().items()}
        if self.net.learned_text_embedding is not None:
            tensors["text_embedding"] = self.net.learned_text_embedding.detach().cpu().clone()
        ckpt = OneStepCheckpoint(list(self.unet_adapters), list(self.vae_adapters), tensors, dtsm_cfg, "srx")
        base = self.cfg.base_or_default
        if Path(base).is_dir():
            base_doc = {"path": str(Path(base).resolve())}
        else:
            repo, _, rev = base.partition("@")
            base_doc = {"repo": repo, "revision": rev or "main"}
        spec = {
            "family": "sd-onestep",
            "format": "srx",
            "description": f"trained with `srx train --method {self.cfg.method}`",
            "paper": "",
            "license": "as its base model and training data",
            "base": base_doc,
            "defaults": {
                "scale": self.cfg.scale,
                "timestep": "dtsm" if self.net.dtsm is not None else self.cfg.timestep,
                "text_condition": "learned" if self.net.learned_text_embedding is not None else "prompt",
                "prompt_template": "{prompt}",
                "prompt": self.cfg.prompt,
                "color_fix": "adain",
            },
        }
        return spec, ckpt


class OSEDiffMethod(OneStepMethod):
    """MSE + LPIPS + VSD; the VSD's fake score is a LoRA UNet (``aux``), the real score the frozen base."""

    name = "osediff"

    def __init__(self, cfg: TrainConfig, base_dir: Path):
        super().__init__(cfg, base_dir)
        self.net.unet.conv_in.requires_grad_(True)  # OSEDiff trains the whole conv_in (and its LoRA)
        self.lpips = make_lpips(cfg.lpips_net, cfg.perceptual_pretrained)
        with torch.no_grad():
            self.register_buffer("neg_embedding", self.net.encode_text(cfg.neg_prompt).clone(), persistent=False)
        # Kept outside the module tree: it has its own optimizer (and DDP wrapper); forward uses it directly.
        self._aux_ref = [VSDRegularizer(base_dir, cfg, self.unet_adapters)]

    def forward(self, lq, hq):
        sr, z0 = self.generate(lq)
        terms = {"mse": F.mse_loss(sr, hq), "lpips": lpips_loss(self.lpips, sr, hq)}
        terms["vsd"] = self._aux_ref[0].vsd_loss(z0, self.prompt_embedding, self.neg_embedding, self.cfg.cfg)
        cfg = self.cfg
        terms["total"] = cfg.w_mse * terms["mse"] + cfg.w_lpips * terms["lpips"] + cfg.w_vsd * terms["vsd"]
        terms["aux_inputs"] = (z0.detach(), self.prompt_embedding)
        return terms


class VSDRegularizer(nn.Module):
    """OSEDiff's variational score distillation: the frozen base UNet is the real score (with CFG), the
    same UNet with a LoRA adapter, trained with the diffusion loss on the generator's latents, the fake one."""

    def __init__(self, base_dir: Path, cfg: TrainConfig, adapters: list[AdapterSpec]):
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet").requires_grad_(False)
        self.adapter = AdapterSpec("vsd_fake", cfg.lora_rank, adapters[0].alpha,
                                   tuple(t for a in adapters for t in a.target_modules))
        _add_adapter(unet, self.adapter)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        for n, p in unet.named_parameters():
            p.requires_grad_("lora_" in n)
        self.unet = unet
        self.scheduler = DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler")
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.float(), persistent=False)

    def _x0(self, noisy, eps, t):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (noisy - (1 - a).sqrt() * eps) / a.sqrt()

    def _add_noise(self, z, noise, t):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt() * z + (1 - a).sqrt() * noise

    def vsd_loss(self, z0, emb, neg_emb, guidance: float) -> torch.Tensor:
        b = z0.shape[0]
        t = torch.randint(20, 980, (b,), device=z0.device)
        noisy = self._add_noise(z0, torch.randn_like(z0), t)
        with torch.no_grad():
            eps_fake = self.unet(noisy, t, encoder_hidden_states=emb.expand(b, -1, -1)).sample
            x0_fake = self._x0(noisy, eps_fake, t)
            self.unet.disable_adapters()  # the frozen base model: the real score
            try:
                both = self.unet(torch.cat([noisy] * 2), torch.cat([t] * 2),
                                 encoder_hidden_states=torch.cat([neg_emb.expand(b, -1, -1), emb.expand(b, -1, -1)])).sample
            finally:
                self.unet.enable_adapters()
            uncond, cond = both.chunk(2)
            x0_real = self._x0(noisy, uncond + guidance * (cond - uncond), t)
        weight = (z0 - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
        grad = (x0_fake - x0_real) / weight
        return F.mse_loss(z0, (z0 - grad).detach())

    def forward(self, z0: torch.Tensor, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fake score's diffusion loss on the generator's (detached) latents."""
        z0 = z0.detach()
        b = z0.shape[0]
        noise = torch.randn_like(z0)
        t = torch.randint(0, len(self.alphas_cumprod), (b,), device=z0.device)
        pred = self.unet(self._add_noise(z0, noise, t), t, encoder_hidden_states=emb.expand(b, -1, -1)).sample
        loss = F.mse_loss(pred.float(), noise.float())
        return {"diffusion": loss, "total": loss}

    def export_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.unet.state_dict().items() if "lora_" in k}


class HeroSRMethod(OneStepMethod):
    """2 MSE + 5 LPIPS + 1 TD-PAL + 0.5 ID-SAL; DTSM from scratch (hard Gumbel-Softmax); frozen CLIP."""

    name = "hero-sr"

    def __init__(self, cfg: TrainConfig, base_dir: Path):
        super().__init__(cfg, base_dir)
        self.net.dtsm.requires_grad_(True)
        self.lpips = make_lpips(cfg.lpips_net, cfg.perceptual_pretrained)
        self.clip = CLIPPerception.load(cfg.clip_model, HERO_SR_ATTRIBUTE_PROMPTS, cfg.perceptual_pretrained)

    def unet_lora_specs(self, unet, rank, alpha):
        return [AdapterSpec("default", rank, alpha, UNET_SUFFIX_TARGETS)]

    def make_dtsm(self):
        self.dtsm_config = {"timesteps": [1] + list(range(9, 1000, 10)), "channels": 64, "num_blocks": 3,
                            "pool_size": 7, "hidden": 1000}
        return DynamicTimestepModule(**self.dtsm_config)

    def timesteps(self, x):
        return self.net.dtsm(x.float())  # train mode: hard Gumbel-Softmax, differentiable (straight-through)

    def forward(self, lq, hq):
        sr, _ = self.generate(lq)
        sr_emb = self.clip.embed(sr)
        with torch.no_grad():
            gt_emb = self.clip.embed(hq)
        terms = {"mse": F.mse_loss(sr, hq), "lpips": lpips_loss(self.lpips, sr, hq),
                 "td_pal": self.clip.td_pal(sr_emb), "id_sal": self.clip.id_sal(sr_emb, gt_emb)}
        c = self.cfg
        terms["total"] = (c.w_mse * terms["mse"] + c.w_lpips * terms["lpips"] + c.w_td_pal * terms["td_pal"]
                          + c.w_id_sal * terms["id_sal"])
        return terms


class NoiseAwareDiscriminator(nn.Module):
    """DFOSD's discriminator: the base UNet's time embedding, down and mid blocks (with LoRA) read a noised
    latent at a random timestep; an MLP on the pooled mid-block features gives one logit."""

    def __init__(self, base_dir: Path, cfg: TrainConfig, alpha: float):
        super().__init__()
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet").requires_grad_(False)
        unet.up_blocks = nn.ModuleList()  # only the encoder half is used
        unet.conv_norm_out = unet.conv_act = unet.conv_out = None
        enc, _, others = osediff_unet_targets(unet)
        self.adapter = AdapterSpec("disc", cfg.lora_rank, alpha, tuple(enc + others))
        _add_adapter(unet, self.adapter)
        for n, p in unet.named_parameters():
            p.requires_grad_("lora_" in n)
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


class DFOSDMethod(OneStepMethod):
    """MSE + EA-DISTS + 5e-3 adversarial (noise-aware discriminator); learnable text embedding."""

    name = "dfosd"

    def __init__(self, cfg: TrainConfig, base_dir: Path):
        super().__init__(cfg, base_dir)
        self.net.learned_text_embedding = nn.Parameter(self.prompt_embedding.clone(), requires_grad=True)
        self.net.text_encoder = self.net.tokenizer = None  # not needed once the embedding is learned
        self.dists = make_dists(cfg.perceptual_pretrained)
        alpha = cfg.lora_alpha if cfg.lora_alpha is not None else 8.0
        self._aux_ref = [NoiseAwareDiscriminator(self.base_dir, cfg, alpha)]  # own optimizer, outside the tree

    def text_condition(self):
        return self.net.learned_text_embedding

    def _noised(self, z, t):
        a = self.net.alphas_cumprod.to(z.device)[t].view(-1, 1, 1, 1)
        return a.sqrt() * z + (1 - a).sqrt() * torch.randn_like(z)

    def forward(self, lq, hq):
        sr, z0 = self.generate(lq)
        with torch.no_grad():
            vae = self.net.vae
            vae.disable_adapters()  # real latents: the base encoder on the ground truth
            try:
                z_real = vae.encode(hq * 2 - 1).latent_dist.mean * vae.config.scaling_factor
            finally:
                vae.enable_adapters()
        t = torch.randint(0, len(self.net.alphas_cumprod), (z0.shape[0],), device=z0.device)
        fake_t, real_t = self._noised(z0, t), self._noised(z_real, t)
        ctx = self.text_condition().detach().expand(z0.shape[0], -1, -1)
        disc = self._aux_ref[0]
        terms = {"mse": F.mse_loss(sr, hq), "ea_dists": ea_dists_loss(self.dists, sr, hq),
                 "adv": F.softplus(-disc.score(fake_t, t, ctx)).mean()}
        c = self.cfg
        terms["total"] = c.w_mse * terms["mse"] + c.w_ea_dists * terms["ea_dists"] + c.w_adv * terms["adv"]
        terms["aux_inputs"] = (real_t.detach(), fake_t.detach(), t, ctx)
        return terms


class LiteMethod(nn.Module):
    """srx's lite model: pixel L1 (Charbonnier) of the one-step x0 prediction in the pixel-unshuffle latent."""

    name = "lite"

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        super().__init__()
        from ..engine.lite import OneStepLite
        from ..nets.lite import LiteUNet

        self.cfg = cfg
        self.net_config = {"latent_factor": cfg.scale, "channels": list(cfg.lite_channels), "blocks": cfg.lite_blocks}
        self.net = OneStepLite(LiteUNet(**self.net_config))
        self.net.dtype = torch.float32
        self.net.unet.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, lq: torch.Tensor, hq: torch.Tensor) -> dict[str, torch.Tensor]:
        from ..engine.resize import pil_resize

        # The engine upsamples with PIL's bicubic: train on exactly that input.
        h, w = hq.shape[-2:]
        x = torch.cat([pil_resize(lq[i : i + 1].detach().float().cpu(), h, w) for i in range(lq.shape[0])])
        sr = (self.net(x.to(hq.device) * 2 - 1) + 1) / 2
        l1 = ((sr - hq) ** 2 + 1e-6).sqrt().mean()
        return {"l1": l1, "total": self.cfg.w_l1 * l1}

    def export(self) -> tuple[dict[str, Any], OneStepCheckpoint]:
        tensors = {f"net.{k}": v.detach().cpu().clone() for k, v in self.net.unet.state_dict().items()}
        ckpt = OneStepCheckpoint(tensors=tensors, net=self.net_config, source_format="srx")
        spec = {
            "family": "lite",
            "format": "srx",
            "description": "srx lite: small one-step x0 model in the pixel-unshuffle latent (trained with `srx train --method lite`)",
            "paper": "",
            "license": "Apache-2.0",
            "base": None,
            "defaults": {"scale": self.cfg.scale, "timestep": 0, "text_condition": "prompt", "prompt_template": "",
                         "prompt": "", "color_fix": "none", "tile": 512, "overlap": 64},
        }
        return spec, ckpt


METHOD_CLASSES = {"osediff": OSEDiffMethod, "hero-sr": HeroSRMethod, "dfosd": DFOSDMethod, "lite": LiteMethod}


def build_method(cfg: TrainConfig, base_dir: Path) -> OneStepMethod:
    if cfg.method in DISTILL_METHODS:
        from .distill import HFDiffMethod, SinSRMethod, VPDSRMethod

        return {"sinsr": SinSRMethod, "vpd-sr": VPDSRMethod, "hf-diff": HFDiffMethod}[cfg.method](cfg, base_dir)
    return METHOD_CLASSES[cfg.method](cfg, base_dir)


def aux_module(method: OneStepMethod) -> nn.Module | None:
    ref = getattr(method, "_aux_ref", None)
    return ref[0] if ref else None


