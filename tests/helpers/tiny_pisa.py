"""A tiny seeded ``pisa_sr.pkl`` in PiSA-SR's published layout, for the tiny SD base of ``helpers.tiny``."""

from __future__ import annotations

from pathlib import Path

import torch

from helpers.tiny import _peft_state

PARTS = ("encoder", "decoder", "others")


def make_pisa_sr_pkl(base_dir: Path, path: Path, rank_pix: int = 4, rank_sem: int = 4, seed: int = 5) -> Path:
    """PiSA-SR's ``save_model`` layout: per kind (pix, sem) three target lists and a rank, and the UNet state dict
    restricted to LoRA weights with all six adapters attached (``default_{part}_{kind}``). Both kinds target the
    same modules, chosen by the authors' rule (OSEDiff's: weights matching their patterns, split into
    down blocks + conv_in / up blocks + conv_out / the rest)."""
    from diffusers import UNet2DConditionModel

    from sr_cli.models.lora import osediff_unet_targets

    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    targets = dict(zip(PARTS, osediff_unet_targets(unet)))
    pix = _peft_state(unet, {f"default_{p}_pix": targets[p] for p in PARTS}, rank_pix, seed)
    sem = _peft_state(unet, {f"default_{p}_sem": targets[p] for p in PARTS}, rank_sem, seed + 1)
    ckpt = {f"unet_lora_{p}_modules_{kind}": list(targets[p]) for kind in ("pix", "sem") for p in PARTS}
    ckpt["lora_rank_unet_pix"] = rank_pix
    ckpt["lora_rank_unet_sem"] = rank_sem
    # _peft_state returns every LoRA weight attached so far: the second call holds both kinds.
    ckpt["state_dict_unet"] = {k: sem[k] if "_sem." in k else pix[k] for k in sem}
    torch.save(ckpt, path)
    return path
