"""Tiny RAM / DAPE checkpoints in the published layouts, rebuilt from a seed (no file committed).

- ``make_tiny_ram``: ``{"model": state_dict}`` like ``ram_swin_large_14m.pth``: a Swin encoder (embed 8, depths
  2-2-2-2, window 12, 384 px input as the real one), ``image_proj`` to 512, 4585 ``label_embed`` rows, a 2-layer
  32-wide tagging head with 4 heads (``tagging_head.encoder.layer.i.crossattention...``), ``fc``; plus the
  ``relative_position_index`` buffers the real file carries.
- ``make_tiny_dape``: a flat state dict like OSEDiff's ``DAPE.pth``: loralib factors (rank 8) for every Swin
  ``attn.qkv`` (q and v), the tagging head's cross-attention query/key and one tied ``tag_encoder`` layer, and
  one full tensor (``image_proj.bias``) that replaces RAM's.

Values come from one seeded ``torch.Generator`` in sorted key order. ``fixtures/dape/make_fixtures.py`` ran the
authors' RAM/DAPE code on exactly these files and recorded what it returned.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_RAM_CONFIG = dict(num_tags=4585, image_size=384, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4),
                       window_size=12, head_layers=2, head_hidden=32, head_heads=4, head_intermediate=64)
# Spread and shift of the tag logits: a few to a few dozen of the 4585 tags pass RAM's thresholds (0.65-0.9).
FC_GAIN = 4.0
FC_BIAS = 0.6
SEED = 0
LORA_RANK = 8


def tiny_ram_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    from sr_cli.nets.ram import RAM, relative_position_index

    shapes = {k: v.shape for k, v in RAM(**TINY_RAM_CONFIG).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(shapes):
        shape = shapes[key]
        x = torch.randn(shape, generator=g)
        if key == "fc.bias":
            x = torch.full(shape, FC_BIAS)
        elif key == "fc.weight":
            x = x / shape[1] ** 0.5 * FC_GAIN
        elif key == "label_embed":
            pass  # unit variance: distinct tag queries
        elif key.endswith("relative_position_bias_table"):
            x = x * 0.5
        elif len(shape) >= 2:  # linear / conv weights: unit-variance outputs
            x = x / shape[1:].numel() ** 0.5
        elif key.endswith("weight"):  # LayerNorm gains
            x = 1 + 0.1 * x
        else:  # biases
            x = 0.1 * x
        sd[key] = x.contiguous()
    # The published file also holds the encoder's index buffers (every loader drops them).
    for key in [k for k in sd if k.endswith("attn.relative_position_bias_table")]:
        window = (round(sd[key].shape[0] ** 0.5) + 1) // 2
        sd[key.replace("relative_position_bias_table", "relative_position_index")] = relative_position_index(window)
    return sd


def tiny_dape_state_dict(seed: int = SEED + 1) -> dict[str, torch.Tensor]:
    ram = tiny_ram_state_dict()
    g = torch.Generator().manual_seed(seed)
    sd = {}
    r = LORA_RANK
    for key in sorted(k for k in ram if k.endswith("attn.qkv.weight")):
        dim = ram[key].shape[1]
        module = key.removesuffix(".weight")
        sd[module + ".lora_A"] = torch.randn((2 * r, dim), generator=g) / dim**0.5
        sd[module + ".lora_B"] = torch.randn((2 * dim, r), generator=g) * 0.5
    heads = [k for k in ram if k.endswith(("crossattention.self.query.weight", "crossattention.self.key.weight"))]
    targets = [k.removesuffix(".weight") for k in sorted(heads)]
    targets.append("tag_encoder.encoder.layer.0.crossattention.self.query")  # tied to the tagging head's layer 0
    for module in targets:
        weight = ram[module.replace("tag_encoder", "tagging_head") + ".weight"]
        out_dim, in_dim = weight.shape
        sd[module + ".lora_A"] = torch.randn((r, in_dim), generator=g) / in_dim**0.5
        sd[module + ".lora_B"] = torch.randn((out_dim, r), generator=g) * 0.5
    sd["image_proj.bias"] = torch.randn(ram["image_proj.bias"].shape, generator=g) * 0.1
    return sd


def make_tiny_ram(path: Path, seed: int = SEED) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": tiny_ram_state_dict(seed)}, path)
    return path


def make_tiny_dape(path: Path, seed: int = SEED + 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_dape_state_dict(seed), path)
    return path


def fixture_image(width: int, height: int, seed: int):
    """A smooth 8-bit RGB test image (random low-frequency pattern), as PIL."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BICUBIC)
