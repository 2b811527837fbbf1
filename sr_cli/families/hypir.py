"""The HYPIR family (Lin et al., arXiv:2507.20590): the SD one-step network (``engine/sd_onestep.py``) with one
UNet LoRA, run as the authors' ``test.py`` runs it (``engine/hypir.py``).

Published format: ``HYPIR_sd2.pth`` on the Hugging Face Hub (``lxq007/HYPIR``), a torch pickle holding only the
UNet's LoRA factors under peft's keys (``<module>.lora_A.default.weight``, ``...lora_B.default.weight``), read with
``weights_only=True``. Rank, scale and target modules are not in the file: they are the authors' inference
settings (rank 256 with ``lora_alpha`` = rank, so scale 1; the 13 module names of ``configs/sd2_gradio.yaml``).

Upscaling differs from the SD one-step family's: torch's bicubic upsampling (not PIL's), small images enlarged to
the tile size, the encoder, UNet and decoder each tiled with Gaussian weights, and the wavelet color fix on the
unclamped result, so the whole pipeline runs as one piece (``TilePlan.color_fixed``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..errors import CheckpointFormatError
from ..models.checkpoints import AdapterSpec, ConvertedCheckpoint
from .base import TilePlan
from .sd_onestep import SDOneStepFamily, prefixed_tensors

HYPIR_FORMAT = "hypir-pth"
# The authors' --lora_modules (README, configs/sd2_gradio.yaml); peft matches each as a module-name suffix.
HYPIR_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                      "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj")
ADAPTER = "default"  # the peft adapter name in the published keys (diffusers' add_adapter default)
_FACTOR_SUFFIXES = (f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight")
_BATCH_NOTE = ("--tile-batch tiles at a time through the UNet and the decoder (the encoder too without --seed: "
               "a seeded posterior sample is drawn tile by tile)")


def _is_hypir_state(obj: Any) -> bool:
    """A non-empty dict of UNet LoRA factors only, under the ``default`` adapter (nothing else in the file)."""
    return (isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and k.endswith(_FACTOR_SUFFIXES)
                                                        for k in obj)
            and any(k.startswith(("down_blocks.", "up_blocks.", "mid_block.")) for k in obj))


def convert_hypir(ckpt: dict, path: Path) -> ConvertedCheckpoint:
    """``HYPIR_sd2.pth``: the UNet adapter ``default`` (rank read off the factors, alpha = rank as the authors')."""
    if not _is_hypir_state(ckpt):
        odd = next((k for k in ckpt if not (isinstance(k, str) and k.endswith(_FACTOR_SUFFIXES))), None)
        why = "it is empty" if not ckpt else (f"unexpected key {odd!r}" if odd is not None else "no UNet block keys")
        raise CheckpointFormatError(f"{path}: not a HYPIR LoRA state dict ({why})")
    tensors = prefixed_tensors("unet", ckpt, path)
    ranks = {int(v.shape[0]) for k, v in ckpt.items() if k.endswith(_FACTOR_SUFFIXES[0])}
    if len(ranks) != 1:
        raise CheckpointFormatError(f"{path}: the LoRA factors have different ranks ({sorted(ranks)})")
    rank = ranks.pop()
    adapter = AdapterSpec(ADAPTER, rank, float(rank), HYPIR_LORA_TARGETS)
    return ConvertedCheckpoint([adapter], [], tensors, None, HYPIR_FORMAT)


class HYPIRFamily(SDOneStepFamily):
    """The SD one-step family's network and loading; HYPIR's own formats and upscaling plan."""

    name = "hypir"
    any_scale = True  # the authors' --upscale takes any factor (1 in their Gradio app and Cog predictor)
    formats: ClassVar = {HYPIR_FORMAT: convert_hypir}

    def detect(self, obj: Any) -> str | None:
        return HYPIR_FORMAT if _is_hypir_state(obj) else None

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        import torch

        from ..engine.hypir import authors_upsample, hypir_enhance
        from ..engine.resize import to_unit_float

        # [0, 1] as ToTensor gives it, upsampled in float by torch's bicubic: the input and the color-fix reference.
        reference = authors_upsample(to_unit_float(lr.cpu()), *size)
        timesteps = model.net.choose_timesteps(reference[:, :, :1, :1], model.fixed_timestep())
        text = model.net.text_condition(model.prompt_for(reference, requested))
        generator = None if opts.seed is None else torch.Generator(device=model.device).manual_seed(opts.seed)

        def run(source: torch.Tensor) -> torch.Tensor:
            return hypir_enhance(model.net, source, timesteps, text, tile=opts.tile, overlap=opts.overlap,
                                 color_fix=opts.color_fix, generator=generator, tile_batch=opts.tile_batch)

        # One piece for the pipeline (the stages tile themselves); 8-bit inputs end on the authors' truncated levels.
        return TilePlan(reference, run, 0, 0, lambda: reference, authors_8bit_levels=lr.dtype == torch.uint8,
                        color_fixed=True)

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        d = spec.defaults
        return [("timestep", f"{d.timestep} (UNet input and x0 coefficients)"),
                ("input upsampling", "torch bicubic (float); shorter side enlarged to the tile size when not larger"),
                ("tiling", f"encoder, UNet and decoder each tiled, Gaussian blending; {_BATCH_NOTE}")]


FAMILY = HYPIRFamily()
