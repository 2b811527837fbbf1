"""The SD one-step family (OSEDiff, Hero-SR, DFOSD-style): VAE encode -> one UNet step -> decode.

For a batch ``x`` in [-1, 1] (OSEDiff, arXiv:2406.08177; docs/engine.md)::

    z   = vae.encode(x).mean * scaling_factor          (a posterior sample when a generator is given)
    eps = unet(z, t, text_embedding)
    z0  = (z - sqrt(1 - a_t) * eps) / sqrt(a_t)        a_t = alphas_cumprod[t], computed in float64
    y   = vae.decode(z0 / scaling_factor).clamp(-1, 1)

This equals ``DDPMScheduler.step`` with a single inference step. ``t`` is fixed (999 for OSEDiff)
or chosen per image by Hero-SR's Dynamic Time-Step Module.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointFormatError
from ..models.checkpoints import ConvertedCheckpoint
from ..models.lora import attach_adapters, load_component_state, merge_adapters
from ..nets.dtsm import DynamicTimestepModule
from .devices import exact_dtype, vae_dtype_for
from .tensors import move_module, pad_to_multiple


class OneStepSD(nn.Module):
    """Components of a one-step SD super-resolution model, and its forward pass on a tile batch."""

    def __init__(self, vae, unet, alphas_cumprod: torch.Tensor, text_encoder=None, tokenizer=None,
                 dtsm: DynamicTimestepModule | None = None, text_embedding: torch.Tensor | None = None):
        super().__init__()
        self.vae = vae
        self.unet = unet
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.dtsm = dtsm
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.learned_text_embedding = None if text_embedding is None else nn.Parameter(text_embedding, requires_grad=False)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self._text_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, base_dir: str | Path, ckpt: ConvertedCheckpoint | None = None, merge_lora: bool = True,
                        needs_text_encoder: bool = True) -> "OneStepSD":
        """Load the base model (diffusers layout) and apply a one-step checkpoint to it, on the CPU in fp32."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        base_dir = Path(base_dir)
        vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
        unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
        # The base model's DDPM schedule (sd-turbo ships an Euler config; its betas are the same kind).
        scheduler = DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler")
        text_encoder = tokenizer = None
        if needs_text_encoder:
            from transformers import AutoTokenizer, CLIPTextModel

            tokenizer = AutoTokenizer.from_pretrained(base_dir, subfolder="tokenizer")
            text_encoder = CLIPTextModel.from_pretrained(base_dir, subfolder="text_encoder")
        ckpt = ckpt or ConvertedCheckpoint()
        attach_adapters(unet, ckpt.unet_adapters)
        attach_adapters(vae, ckpt.vae_adapters)
        load_component_state(unet, ckpt.component_state("unet"), "unet")
        load_component_state(vae, ckpt.component_state("vae"), "vae")
        dtsm = None
        if ckpt.dtsm is not None:
            dtsm = DynamicTimestepModule(**ckpt.dtsm)
            state = ckpt.component_state("dtsm")
            try:
                dtsm.load_state_dict(state)
            except RuntimeError as e:
                raise CheckpointFormatError(f"dtsm: {str(e).splitlines()[0]}") from None
        text_embedding = ckpt.tensors.get("text_embedding")
        if merge_lora:
            merge_adapters(unet)
            merge_adapters(vae)
        model = cls(vae, unet, scheduler.alphas_cumprod, text_encoder, tokenizer, dtsm, text_embedding)
        return model.eval().requires_grad_(False)

    def place(self, device: torch.device, dtype: torch.dtype) -> "OneStepSD":
        """Move to ``device``: UNet in ``dtype``, VAE in ``dtype`` (fp32 if fp16), text encoder and DTSM in fp32."""
        self.compute_device, self.dtype, self.vae_dtype = device, dtype, vae_dtype_for(dtype)
        move_module(self.unet, device, dtype, "unet")
        move_module(self.vae, device, self.vae_dtype, "vae")
        if self.text_encoder is not None:
            move_module(self.text_encoder, device, torch.float32)
        if self.dtsm is not None:
            move_module(self.dtsm, device, torch.float32)
        if self.learned_text_embedding is not None:
            self.learned_text_embedding.data = self.learned_text_embedding.data.to(device)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        self._text_cache.clear()
        return self

    # ------------------------------------------------------------------ per-image conditions
    def encode_text(self, text: str) -> torch.Tensor:
        """CLIP last hidden state (after the final LayerNorm) of ``text`` padded to 77 tokens, no mask."""
        if text not in self._text_cache:
            if self.text_encoder is None:
                raise ValueError("this model has no text encoder loaded")
            ids = self.tokenizer(text, max_length=self.tokenizer.model_max_length, padding="max_length",
                                 truncation=True, return_tensors="pt").input_ids
            with torch.inference_mode():
                emb = self.text_encoder(ids.to(self.text_encoder.device))[0]
            self._text_cache[text] = emb.float()
        return self._text_cache[text]

    def text_condition(self, text: str | None) -> torch.Tensor:
        """The learned embedding when the model has one, else the encoded text."""
        if self.learned_text_embedding is not None:
            return self.learned_text_embedding.float()  # differentiable when training it (DFOSD)
        return self.encode_text(text or "")

    def choose_timesteps(self, x: torch.Tensor, fixed: int | None) -> torch.Tensor:
        """Timesteps ``(B,)`` float32: the fixed one, or the DTSM's argmax for each image ``x`` in [-1, 1]."""
        if fixed is not None:
            return torch.full((x.shape[0],), float(fixed), device=x.device)
        if self.dtsm is None:
            raise ValueError("no fixed timestep and no dynamic time-step module")
        # The DTSM first resizes its input (nearest) to a small fixed size: done here, where the image is
        # (the host, for the whole upsampled image), so only the small copy goes to the device and device
        # memory does not grow with the image. Nearest picks the same pixels on every device.
        side = self.dtsm.input_size
        small = F.interpolate(x.float(), size=(side, side), mode="nearest")
        with torch.inference_mode():
            return self.dtsm(small.to(next(self.dtsm.parameters()).device)).float()

    # ------------------------------------------------------------------ the one step
    def x0_from_eps(self, z: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return x0_from_eps(self.alphas_cumprod, z, eps, timesteps)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, text_embedding: torch.Tensor,
                generator: torch.Generator | None = None, **step) -> torch.Tensor:
        """One-step SR of ``x`` ``(B, 3, H, W)`` in [-1, 1] (any size: padded to the VAE's multiple, cropped back).

        ``timesteps`` has one entry per image (or one for all); returns ``(B, 3, H, W)`` in [-1, 1], float32.
        ``step``: options of a variant's ``latent_step`` (e.g. PiSA-SR's guidance scales).
        """
        return self.one_step(x, timesteps, text_embedding, generator, **step)[0]

    def one_step(self, x: torch.Tensor, timesteps: torch.Tensor, text_embedding: torch.Tensor,
                 generator: torch.Generator | None = None, sample: bool | None = None,
                 **step) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` that also returns the predicted clean latent ``z0`` (training's losses read it).

        ``sample``: draw the VAE posterior (with ``generator``, or the global RNG when None) instead of taking
        its mean; by default it samples exactly when a generator is given.
        """
        b, _, h, w = x.shape
        sample = generator is not None if sample is None else sample
        z = self.encode(pad_to_multiple(x, self.downscale), generator, sample)
        vae_cfg = self.vae.config
        shift = getattr(vae_cfg, "shift_factor", None) or 0.0
        t = timesteps.to(z.device).float().expand(b) if timesteps.numel() == 1 else timesteps.to(z.device).float()
        cond = text_embedding.to(z.device, self.dtype).expand(b, -1, -1)
        z0 = self.latent_step(z, t, cond, **step)
        y = self.vae.decode((z0 / vae_cfg.scaling_factor + shift).to(self.vae_dtype)).sample
        return y[:, :, :h, :w].float().clamp(-1, 1), z0

    def latent_step(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The clean latent from the UNet's noise prediction at ``t`` (variants predict it otherwise)."""
        eps = self.unet(z.to(self.dtype), t, encoder_hidden_states=cond).sample
        return self.x0_from_eps(z, eps, t)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:
        """The diffusion latent of ``x`` in [-1, 1] (sides a multiple of ``downscale``): the VAE posterior's mean
        (or a sample), shifted and scaled as the UNet expects."""
        posterior = self.vae.encode(x.to(self.vae_dtype)).latent_dist
        z = posterior.sample(generator) if sample else posterior.mean
        vae_cfg = self.vae.config
        return (z - (getattr(vae_cfg, "shift_factor", None) or 0.0)) * vae_cfg.scaling_factor


def x0_from_eps(alphas_cumprod: torch.Tensor, z: torch.Tensor, eps: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
    """The DDPM clean-sample prediction ``(z - sqrt(1 - a_t) eps) / sqrt(a_t)``, in the device's widest float."""
    wide = exact_dtype(z.device)
    a_t = alphas_cumprod.to(z.device, wide)[timesteps.long()].view(-1, 1, 1, 1)
    return (z.to(wide) - (1 - a_t).sqrt() * eps.to(wide)) / a_t.sqrt()
