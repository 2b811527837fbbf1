"""The dual-LoRA variant of the SD one-step family (PiSA-SR, Sun et al., CVPR 2025, arXiv:2412.03017): a pixel-level
and a semantic-level LoRA on an SD UNet, whose strengths users set at inference (``--pixel-guidance``,
``--semantic-guidance``; the network is ``engine/sd_dual_lora.py``).

Everything else is the SD one-step family's: the base model, the VAE latent, tiling the bicubic-upsampled input in
output space, the color fix. Published format: PiSA-SR's ``pisa_sr.pkl`` (a torch pickle read with
``checkpoints.safe_torch_load``): six peft adapters ``default_{encoder,decoder,others}_{pix,sem}`` on the UNet.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from ..errors import CheckpointFormatError
from ..models.checkpoints import (
    PEFT_DEFAULT_LORA_ALPHA,
    AdapterSpec,
    ConvertedCheckpoint,
)
from .base import TilePlan
from .sd_onestep import SDOneStepFamily, prefixed_tensors, require_keys, unique_names

_PARTS = ("encoder", "decoder", "others")
_KINDS = ("pix", "sem")


def convert_pisa_sr(ckpt: dict, path: Path) -> ConvertedCheckpoint:
    """PiSA-SR ``pisa_sr.pkl``: per kind (pix, sem) a rank and three UNet adapters (encoder/decoder/others),
    all LoRA weights in ``state_dict_unet`` under their peft names; no VAE adapter. The authors never set
    ``lora_alpha``: peft's default (8) applies, a scale of 8 / r."""
    keys = tuple(f"unet_lora_{part}_modules_{kind}" for kind in _KINDS for part in _PARTS)
    keys += ("lora_rank_unet_pix", "lora_rank_unet_sem", "state_dict_unet")
    require_keys(ckpt, keys, "PiSA-SR", path)
    adapters = [
        AdapterSpec(f"default_{part}_{kind}", int(ckpt[f"lora_rank_unet_{kind}"]), PEFT_DEFAULT_LORA_ALPHA,
                    unique_names(ckpt[f"unet_lora_{part}_modules_{kind}"]))
        for kind in _KINDS  # pixel first: the authors merge it first
        for part in _PARTS
        if ckpt[f"unet_lora_{part}_modules_{kind}"]
    ]
    if not any(a.name.endswith("_sem") for a in adapters) or not any(a.name.endswith("_pix") for a in adapters):
        raise CheckpointFormatError(f"{path}: a PiSA-SR checkpoint needs both a pixel and a semantic LoRA")
    tensors = prefixed_tensors("unet", ckpt["state_dict_unet"], path)
    return ConvertedCheckpoint(adapters, [], tensors, None, "pisa-sr-pkl")


# test_pisasr.py enlarges an input whose shorter side is under process_size / upscale (512 / 4) pixels.
ENLARGE_BELOW = 128


def enlarged_plan(family, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
    """test_pisasr.py on a small input: PIL bicubic to a shorter side of 128 (``int()`` of the scaled sides), x4
    bicubic, Lanczos to multiples of 8, the network, ``ToPILImage``, the color fix against that enlarged input, and
    PIL bicubic back to 4x the input. One piece for the pipeline: the network is tiled inside (``opts.tile``)."""
    import numpy as np
    import torch
    from PIL import Image

    from ..engine.color import apply_color_fix
    from ..engine.pipeline import truncate_to_8bit
    from ..engine.resize import pil_resize, to_unit_float
    from ..engine.tiling import run_tiled

    h, w = lr.shape[-2:]
    eight_bit = lr.dtype == torch.uint8
    factor = ENLARGE_BELOW / min(w, h)
    w2, h2 = int(factor * w), int(factor * h)
    w8, h8 = 4 * w2 - 4 * w2 % 8, 4 * h2 - 4 * h2 % 8
    if eight_bit:  # the authors' 8-bit PIL images, each resize rounding to 8 bits
        image = Image.fromarray(lr[0].permute(1, 2, 0).contiguous().numpy())
        image = image.resize((w2, h2), Image.Resampling.BICUBIC).resize((4 * w2, 4 * h2), Image.Resampling.BICUBIC)
        image = image.resize((w8, h8), Image.Resampling.LANCZOS)
        enlarged = to_unit_float(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].contiguous())
    else:  # 16-bit inputs: the same filters in float
        enlarged = pil_resize(pil_resize(lr.clamp(0, 1), h2, w2), 4 * h2, 4 * w2)
        enlarged = pil_resize(enlarged, h8, w8, Image.Resampling.LANCZOS)
    inner = SDOneStepFamily.plan(family, model, lr, opts, (h8, w8), requested)
    inner = replace(inner, source=enlarged, color_reference=lambda: enlarged)

    def run(_native: torch.Tensor) -> torch.Tensor:
        out = run_tiled(inner.source, inner.tile_fn, tile=inner.tile, overlap=inner.overlap, batch=opts.tile_batch)
        out = out[:, :, :h8, :w8].clamp_(0, 1)
        quantize = truncate_to_8bit if eight_bit else (lambda x: x)
        out = quantize(out)
        if opts.color_fix != "none":
            out = quantize(apply_color_fix(opts.color_fix, out, enlarged))
        if eight_bit:  # back to 4x the input as the authors' 8-bit PIL image
            arr = (out[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            small = Image.fromarray(arr).resize((size[1], size[0]), Image.Resampling.BICUBIC)
            return to_unit_float(torch.from_numpy(np.array(small)).permute(2, 0, 1)[None].contiguous())
        return pil_resize(out, *size)

    # The native-size reference only gives the pipeline the output's size: ``run`` works from ``lr``.
    native = torch.zeros(1, 3, *size)
    return TilePlan(native, run, 0, 0, lambda: native, authors_8bit_levels=eight_bit, color_fixed=True)


class SDDualLoRAFamily(SDOneStepFamily):
    name = "sd-dual-lora"
    formats: ClassVar = {"pisa-sr-pkl": convert_pisa_sr}
    guidance_defaults = (1.0, 1.0)  # the paper's default setting: both LoRAs at full strength, one UNet pass

    def detect(self, obj: Any) -> str | None:
        if isinstance(obj, dict) and "unet_lora_encoder_modules_pix" in obj:
            return "pisa-sr-pkl"
        return None

    def network_class(self):
        from ..engine.sd_dual_lora import DualLoRASD

        return DualLoRASD

    def step_options(self, opts) -> dict[str, Any]:
        return {"guidance": (opts.pixel_guidance, opts.semantic_guidance)}

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        """As the SD family, except for inputs with a side under ``ENLARGE_BELOW`` pixels: the authors' script
        (``--process_size 512``) enlarges those first (``enlarged_plan``)."""
        if min(lr.shape[-2:]) >= ENLARGE_BELOW or size != (4 * lr.shape[-2], 4 * lr.shape[-1]):
            return super().plan(model, lr, opts, size, requested)
        return enlarged_plan(self, model, lr, opts, size, requested)

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        pixel, semantic = self.guidance_defaults
        return super().describe_defaults(spec) + [
            ("pixel guidance", str(pixel)), ("semantic guidance", str(semantic)),
            ("small inputs", (f"a side under {ENLARGE_BELOW} px: enlarged to it first, the result reduced back "
                              "(the authors' process size 512)"))]


FAMILY = SDDualLoRAFamily()
