"""The SD one-step generator every SD-family method trains: the engine's own ``OneStepSD`` with LoRA adapters.

It is built by the engine's loader (``OneStepSD.from_pretrained``), takes its adapters through ``lora.py``,
runs the engine's forward pass (``OneStepSD.one_step``: padding, VAE shift and scaling, the one step) and is
exported as a ``ModelSpec`` whose defaults reproduce the training conditions at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ...engine.sd_onestep import OneStepSD
from ...models.checkpoints import PEFT_DEFAULT_LORA_ALPHA, AdapterSpec, ConvertedCheckpoint
from ...models.lora import attach_adapters, osediff_unet_targets, osediff_vae_targets
from ...models.registry import BaseModel, ModelSpec, get_spec
from ...nets.dtsm import DynamicTimestepModule
from .base import TrainMethod, at_least_one

if TYPE_CHECKING:
    from ..config import TrainConfig


def upsample_input(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """The generator's input: bicubic x``scale`` of the LR in [-1, 1] (torch bicubic: fast, on the device)."""
    return F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1


def load_scheduler(base_dir: Path):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler")


def lora_alpha(options: OneStepSDMethod.Options) -> float:
    return options.lora_alpha if options.lora_alpha is not None else float(PEFT_DEFAULT_LORA_ALPHA)


def train_only_lora(module: torch.nn.Module) -> None:
    for n, p in module.named_parameters():
        p.requires_grad_("lora_" in n)


class OneStepSDMethod(TrainMethod):
    """Base SD components (frozen) + LoRA on the UNet and the VAE encoder (+ DTSM / learned text embedding)."""

    inference_defaults_from = "osediff"  # the registry model whose inference defaults an exported model takes

    @dataclass
    class Options:
        base: str = "stabilityai/stable-diffusion-2-1-base"  # diffusers dir or org/name[@rev]
        lora_rank: int = 4
        lora_alpha: float | None = None  # None: peft's default (8), as the OSEDiff and Hero-SR code leave it
        timestep: int = 999  # fixed timestep (ignored with the DTSM)
        prompt: str = ""  # fixed text condition (no tagger is run)
        lpips_net: str = "vgg"  # LPIPS trunk of the methods with an LPIPS loss (OSEDiff uses vgg)
        gradient_checkpointing: bool = False  # trade compute for memory in the UNet

        def __post_init__(self):
            at_least_one(self, "lora_rank")

    @classmethod
    def base_model(cls, cfg: TrainConfig) -> str:
        return cfg.options.base

    def __init__(self, cfg: TrainConfig, base_dir: Path):
        super().__init__(cfg)
        opts = self.options
        self.base_dir = Path(base_dir)
        self.scheduler = load_scheduler(self.base_dir)
        net = OneStepSD.from_pretrained(self.base_dir, merge_lora=False)  # frozen, fp32, on the CPU
        alpha = lora_alpha(opts)
        self.unet_adapters = self.unet_lora_specs(net.unet, opts.lora_rank, alpha)
        self.vae_adapters = [AdapterSpec("default_encoder", opts.lora_rank, alpha, tuple(osediff_vae_targets(net.vae)))]
        attach_adapters(net.unet, self.unet_adapters)
        attach_adapters(net.vae, self.vae_adapters)
        if opts.gradient_checkpointing:
            net.unet.enable_gradient_checkpointing()
        net.dtsm = self.make_dtsm()
        net.dtype = net.vae_dtype = torch.float32
        self.net = net
        with torch.no_grad():
            self.register_buffer("prompt_embedding", net.encode_text(opts.prompt).clone(), persistent=False)
        for n, p in net.named_parameters():
            if "lora_" in n:
                p.requires_grad_(True)

    # ------------------------------------------------------------------ what each method changes
    def unet_lora_specs(self, unet, rank: int, alpha: float) -> list[AdapterSpec]:
        enc, dec, others = osediff_unet_targets(unet)
        return [AdapterSpec(f"default_{part}", rank, alpha, tuple(t))
                for part, t in (("encoder", enc), ("decoder", dec), ("others", others)) if t]

    def make_dtsm(self) -> DynamicTimestepModule | None:
        return None

    def text_condition(self) -> torch.Tensor:
        return self.prompt_embedding

    def timesteps(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), float(self.options.timestep), device=x.device)

    # ------------------------------------------------------------------ the generator: the engine's forward
    def generate(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(SR image in [0, 1], predicted clean latent z0) for a LR batch in [0, 1]; the VAE posterior is
        sampled (global RNG) as the authors do in training."""
        x = upsample_input(lq, self.cfg.scale)
        y, z0 = self.net.one_step(x, self.timesteps(x), self.text_condition(), sample=True)
        return (y + 1) / 2, z0.float()

    def noised(self, z: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` at timestep ``t`` under the base model's DDPM schedule."""
        return self.scheduler.add_noise(z, torch.randn_like(z) if noise is None else noise, t)

    # ------------------------------------------------------------------ export
    def checkpoint(self) -> ConvertedCheckpoint:
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
        return ConvertedCheckpoint(list(self.unet_adapters), list(self.vae_adapters), tensors, dtsm_cfg, "srx")

    def model_spec(self) -> ModelSpec:
        base = self.options.base
        if Path(base).is_dir():
            base_model = BaseModel(path=str(Path(base).resolve()))
        else:
            repo, _, rev = base.partition("@")
            base_model = BaseModel(repo=repo, revision=rev or "main")
        # The registry model this method reproduces gives the inference defaults (tiles, color fix); the
        # training conditions give the rest (scale, timestep, text condition: the fixed prompt, no tags).
        defaults = replace(
            get_spec(self.inference_defaults_from).defaults,
            scale=self.cfg.scale,
            timestep="dtsm" if self.net.dtsm is not None else self.options.timestep,
            text_condition="learned" if self.net.learned_text_embedding is not None else "prompt",
            prompt_template="{prompt}", prompt=self.options.prompt,
        )
        return ModelSpec(name=Path(self.cfg.output).name, family="sd-onestep", format="srx", base=base_model,
                         weights=None, defaults=defaults,
                         description=f"trained with `srx train --method {self.cfg.method}`",
                         license="as its base model and training data")
