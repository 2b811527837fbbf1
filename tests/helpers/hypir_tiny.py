"""A tiny ``HYPIR_sd2.pth`` in the published layout: the UNet's LoRA factors only, under peft's keys
(``<module>.lora_A.default.weight``), as the authors' training hook saves them and their ``SD2Enhancer`` loads them."""

from __future__ import annotations

from pathlib import Path

import torch

# The authors' --lora_modules (their README and configs/sd2_gradio.yaml), written out here independently of srx.
HYPIR_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                 "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
TINY_HYPIR_RANK = 4  # alpha = rank as the authors': scale 1 (peft's default alpha 8 would give 2)


def make_hypir_pth(base_dir: Path, path: Path, rank: int = TINY_HYPIR_RANK, seed: int = 3) -> Path:
    """Random non-zero LoRA factors for every target of the tiny base's UNet, saved with ``torch.save``."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=HYPIR_TARGETS))
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in unet.state_dict().items() if "lora" in k}
    torch.save(state, path)
    return Path(path)
