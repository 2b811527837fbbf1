"""The dual-LoRA variant of the SD one-step family (PiSA-SR, Sun et al., CVPR 2025, arXiv:2412.03017): a pixel-level
and a semantic-level LoRA on an SD UNet, whose strengths users set at inference (``--pixel-guidance``,
``--semantic-guidance``; the network is ``engine/sd_dual_lora.py``).

Everything else is the SD one-step family's: the base model, the VAE latent, tiling the bicubic-upsampled input in
output space, the color fix. Published format: PiSA-SR's ``pisa_sr.pkl`` (a torch pickle read with
``checkpoints.safe_torch_load``): six peft adapters ``default_{encoder,decoder,others}_{pix,sem}`` on the UNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..errors import CheckpointFormatError
from ..models.checkpoints import PEFT_DEFAULT_LORA_ALPHA, AdapterSpec, ConvertedCheckpoint
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

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        pixel, semantic = self.guidance_defaults
        return super().describe_defaults(spec) + [("pixel guidance", str(pixel)), ("semantic guidance", str(semantic))]


FAMILY = SDDualLoRAFamily()
