"""S3Diff: one-step SR on SD-Turbo with degradation-guided LoRA (Zhang et al., arXiv:2409.17058).

A degradation estimator (MM-RealSR's ``DEResNet``, ``nets/deresnet.py``) scores the low-resolution image for blur
and noise. Those two scores, through a Fourier embedding and small MLPs fused with one learned embedding per
network block, give every block an ``r x r`` matrix ``M`` that sits between the LoRA factors::

    layer(x) = W x + B (M (A x)) * alpha / r          (A: r x in, B: out x r, M per image and block)

so the adapters change with each image's degradation and cannot be merged into the base weights. LoRA is on the
VAE encoder and the UNet. One step at t = 999 with classifier-free guidance between a positive and a negative
prompt (scale 1.07), as the authors' inference::

    z   = vae.encode(x).mean * scaling_factor          (a posterior sample when a generator is given)
    eps = eps_neg + g * (eps_pos - eps_neg)
    y   = vae.decode(x0(z, eps, t) / scaling_factor).clamp(-1, 1)

The input is padded (reflect) to a multiple of 64 first, as theirs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointFormatError
from ..models.lora import load_component_state
from ..nets.deresnet import DEResNet
from .sd_onestep import OneStepSD
from .tensors import move_module, pad_to_multiple

GUIDANCE_SCALE = 1.07  # the authors' classifier-free guidance scale (S3Diff.guidance_scale)
PAD_MULTIPLE = 64  # the authors pad the upsampled image to a multiple of 64 (reflect) before the VAE
UNET_BLOCKS = 10  # UNet block embeddings: down 0-3, mid 4, up 5-8, everything else (conv_out) 9
VAE_BLOCKS = 6  # VAE encoder block embeddings: down 0-3, mid 4, everything else (conv_in, conv_out) 5


def unet_block(name: str) -> int:
    """The block embedding a UNet LoRA layer takes (the authors' ``forward``: by the module path)."""
    parts = name.split(".")
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "mid_block":
        return 4
    if parts[0] == "up_blocks":
        return int(parts[1]) + 5
    return UNET_BLOCKS - 1


def vae_block(name: str) -> int:
    """The block embedding a VAE LoRA layer takes (``encoder.down_blocks.N`` -> N, mid -> 4, others -> 5)."""
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "down_blocks":
        return int(parts[2])
    if len(parts) > 1 and parts[1] == "mid_block":
        return VAE_BLOCKS - 2
    return VAE_BLOCKS - 1


class ModulatedLoRA(nn.Module):
    """A linear or convolutional layer with a LoRA whose rank space is mixed by a per-image matrix.

    The factors are shaped as peft's (``lora_A`` has the layer's kernel, stride and padding; ``lora_B`` is 1x1);
    ``modulation`` ``(B or 1, r, r)`` is set before each forward (``S3DiffSD.modulate``).
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, block: int):
        super().__init__()
        self.base = base
        if isinstance(base, nn.Conv2d):
            self.lora_A = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            self.lora_B = nn.Conv2d(rank, base.out_channels, 1, 1, bias=False)
        elif isinstance(base, nn.Linear):
            self.lora_A = nn.Linear(base.in_features, rank, bias=False)
            self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        else:
            raise CheckpointFormatError(f"LoRA on a {type(base).__name__}: only Linear and Conv2d layers are supported")
        self.scaling = alpha / rank
        self.block = block
        self.modulation: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        h = self.lora_A(x.to(self.lora_A.weight.dtype))
        m = self.modulation.to(h.dtype)
        # m has one row per image, or one for the whole batch (one image cut in tiles, and the guidance pair).
        if isinstance(self.lora_A, nn.Conv2d):  # (B, r, H, W): mix the channels
            h = torch.einsum("bkhw,bkr->brhw", h, m.expand(h.shape[0], -1, -1))
        elif h.dim() == 2:  # (B, r)
            h = torch.matmul(h[:, None], m).squeeze(1)
        else:  # (B, tokens, r)
            h = torch.matmul(h, m)
        return out + (self.lora_B(h) * self.scaling).to(out.dtype)


def install_modulated_lora(model: nn.Module, state: dict, rank: int, alpha: float, block_of, component: str) -> None:
    """Wrap every layer named by a ``<path>.lora_A.weight`` key of ``state`` and load its factors; the other keys
    (the UNet's retrained ``conv_in``) replace base weights."""
    lora = {k: v for k, v in state.items() if ".lora_A.weight" in k or ".lora_B.weight" in k}
    paths = sorted({k.rsplit(".lora_", 1)[0] for k in lora})
    for path in paths:
        try:
            base = model.get_submodule(path)
        except AttributeError:
            raise CheckpointFormatError(f"{component}: LoRA on {path}, which the base model does not have") from None
        layer = ModulatedLoRA(base, rank, alpha, block_of(path))
        for factor in ("lora_A", "lora_B"):
            key = f"{path}.{factor}.weight"
            if key not in lora:
                raise CheckpointFormatError(f"{component}: {key} is missing")
            param = getattr(layer, factor).weight
            if param.shape != lora[key].shape:
                raise CheckpointFormatError(f"{component}: {key} has shape {tuple(lora[key].shape)}, the model "
                                            f"expects {tuple(param.shape)} (wrong base model or rank?)")
            param.data.copy_(lora[key])
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    load_component_state(model, {k: v for k, v in state.items() if k not in lora}, component)


class DegradationModulation(nn.Module):
    """The authors' degradation and block MLPs: scores ``(B, 2)`` -> one ``r x r`` matrix per block and image.

    Parameter names as in ``s3diff.pkl`` (``W``, ``vae_de_mlp.0``, ``unet_fuse_mlp``, ``unet_block_embeddings``...).
    """

    def __init__(self, rank_unet: int, rank_vae: int, num_degradations: int = 2, fourier: int = 64,
                 block_dim: int = 64, unet_blocks: int = UNET_BLOCKS, vae_blocks: int = VAE_BLOCKS):
        super().__init__()
        self.rank_unet, self.rank_vae = rank_unet, rank_vae
        self.W = nn.Parameter(torch.zeros(fourier), requires_grad=False)  # Fourier frequencies (random, fixed)
        width = 2 * fourier * num_degradations
        self.vae_de_mlp = nn.Sequential(nn.Linear(width, 256), nn.ReLU(True))
        self.unet_de_mlp = nn.Sequential(nn.Linear(width, 256), nn.ReLU(True))
        self.vae_block_mlp = nn.Sequential(nn.Linear(block_dim, 64), nn.ReLU(True))
        self.unet_block_mlp = nn.Sequential(nn.Linear(block_dim, 64), nn.ReLU(True))
        self.vae_fuse_mlp = nn.Linear(256 + 64, rank_vae**2)
        self.unet_fuse_mlp = nn.Linear(256 + 64, rank_unet**2)
        self.vae_block_embeddings = nn.Embedding(vae_blocks, block_dim)
        self.unet_block_embeddings = nn.Embedding(unet_blocks, block_dim)

    def forward(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(vae (B, vae_blocks, r, r), unet (B, unet_blocks, r, r))`` for degradation scores ``(B, D)``."""
        proj = scores[..., None] * self.W[None, None, :] * 2 * torch.pi  # the authors' order of products
        proj = torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)  # (B, D, 2F)
        proj = proj.flatten(1)  # degradation 0's sin/cos, then degradation 1's

        def fuse(de_mlp, block_mlp, fuse_mlp, embeddings, rank):
            de = de_mlp(proj)  # (B, 256)
            blocks = block_mlp(embeddings.weight)  # (N, 64)
            joint = torch.cat([de[:, None].expand(-1, blocks.shape[0], -1),
                               blocks[None].expand(de.shape[0], -1, -1)], dim=-1)
            return fuse_mlp(joint).reshape(de.shape[0], blocks.shape[0], rank, rank)

        return (fuse(self.vae_de_mlp, self.vae_block_mlp, self.vae_fuse_mlp, self.vae_block_embeddings, self.rank_vae),
                fuse(self.unet_de_mlp, self.unet_block_mlp, self.unet_fuse_mlp, self.unet_block_embeddings,
                     self.rank_unet))


class S3DiffSD(OneStepSD):
    """S3Diff's networks: the SD one-step components with modulated LoRA, the estimator and the modulation MLPs."""

    def __init__(self, vae, unet, alphas_cumprod, text_encoder, tokenizer, estimator: DEResNet,
                 modulation: DegradationModulation, guidance_scale: float = GUIDANCE_SCALE):
        super().__init__(vae, unet, alphas_cumprod, text_encoder, tokenizer)
        self.estimator = estimator
        self.modulation = modulation
        self.guidance_scale = guidance_scale
        self.vae_lora = [m for m in vae.modules() if isinstance(m, ModulatedLoRA)]
        self.unet_lora = [m for m in unet.modules() if isinstance(m, ModulatedLoRA)]

    @classmethod
    def from_checkpoint(cls, base_dir: str | Path, ckpt) -> "S3DiffSD":
        """The base model (diffusers layout) with a converted S3Diff checkpoint, on the CPU in fp32.

        ``ckpt.net``: ``rank_unet``, ``rank_vae``, ``lora_alpha``; tensors ``unet.``/``vae.`` (``<layer>.lora_A/B.weight``
        and retrained base weights), ``estimator.`` (``de_net.pth``) and ``modulation.`` (the MLPs).
        """
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        base_dir = Path(base_dir)
        net = ckpt.net or {}
        try:
            rank_unet, rank_vae, alpha = int(net["rank_unet"]), int(net["rank_vae"]), float(net["lora_alpha"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointFormatError(f"not an S3Diff checkpoint (network settings: {e})") from None
        vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
        unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler")
        tokenizer = AutoTokenizer.from_pretrained(base_dir, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(base_dir, subfolder="text_encoder")
        install_modulated_lora(unet, ckpt.component_state("unet"), rank_unet, alpha, unet_block, "unet")
        install_modulated_lora(vae, ckpt.component_state("vae"), rank_vae, alpha, vae_block, "vae")
        estimator = DEResNet()
        modulation = DegradationModulation(rank_unet, rank_vae)
        for module, prefix in ((estimator, "estimator"), (modulation, "modulation")):
            try:
                module.load_state_dict(ckpt.component_state(prefix))
            except RuntimeError as e:
                raise CheckpointFormatError(f"{prefix}: {str(e).splitlines()[0]}") from e
        model = cls(vae, unet, scheduler.alphas_cumprod, text_encoder, tokenizer, estimator, modulation)
        return model.eval().requires_grad_(False)

    def place(self, device: torch.device, dtype: torch.dtype) -> "S3DiffSD":
        """As ``OneStepSD.place``; the estimator and the modulation MLPs stay in fp32 (they are tiny)."""
        super().place(device, dtype)
        move_module(self.estimator, device, torch.float32)
        move_module(self.modulation, device, torch.float32)
        return self

    # ------------------------------------------------------------------ per-image conditions
    def estimate_degradation(self, lr: torch.Tensor) -> torch.Tensor:
        """Blur and noise scores ``(B, 2)`` of the low-resolution image ``lr`` in [0, 1] (fp32)."""
        device = next(self.estimator.parameters()).device
        with torch.inference_mode():
            return self.estimator(lr.to(device, torch.float32))

    def modulate(self, scores: torch.Tensor) -> None:
        """Set every LoRA layer's matrix for the images of ``scores`` ``(B, 2)`` (B = 1 serves any tile batch)."""
        with torch.inference_mode():
            vae_m, unet_m = self.modulation(scores.to(self.modulation.W.device, torch.float32))
        for layers, mats in ((self.vae_lora, vae_m), (self.unet_lora, unet_m)):
            for layer in layers:
                layer.modulation = mats[:, layer.block]

    # ------------------------------------------------------------------ the one step
    def forward(self, x: torch.Tensor, scores: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                timesteps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-step SR of ``x`` ``(B, 3, H, W)`` in [-1, 1] for degradation ``scores`` (one row, or one per image)
        and the positive/negative text embeddings; returns ``(B, 3, H, W)`` in [-1, 1], float32."""
        b, _, h, w = x.shape
        self.modulate(scores)
        z = self.encode(pad_to_multiple(x, PAD_MULTIPLE), generator, generator is not None)
        t = timesteps.to(z.device).float().expand(2 * b)
        cond = torch.cat([positive.to(z.device, self.dtype).expand(b, -1, -1),
                          negative.to(z.device, self.dtype).expand(b, -1, -1)])
        eps_pos, eps_neg = self.unet(torch.cat([z, z]).to(self.dtype), t, encoder_hidden_states=cond).sample.chunk(2)
        eps = eps_neg + self.guidance_scale * (eps_pos - eps_neg)
        z0 = self.x0_from_eps(z, eps, t[:b])
        vae_cfg = self.vae.config
        shift = getattr(vae_cfg, "shift_factor", None) or 0.0
        y = self.vae.decode((z0 / vae_cfg.scaling_factor + shift).to(self.vae_dtype)).sample
        return y[:, :, :h, :w].float().clamp(-1, 1)


def bilinear_upsample(lr: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The authors' input upsampling: ``F.interpolate(bilinear, align_corners=False)`` of the float image in [0, 1]
    (not PIL's bicubic like the other SD-family models)."""
    return F.interpolate(lr.float(), size=(height, width), mode="bilinear", align_corners=False)
