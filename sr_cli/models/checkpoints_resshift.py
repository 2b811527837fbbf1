"""The ResShift family's published files (``resshift_realsrx4_s15_v1.pth``, ``SinSR_v1.pth``,
``HF-Diff.pth`` + ``autoencoder_vq_f4.pth``): reading them into srx's saved-model layout.

The files are plain state dicts, possibly wrapped as ``{'state_dict': ...}`` and possibly with
``module.`` prefixes (saved from DistributedDataParallel). The denoiser's also holds the Swin
buffers ``attn_mask`` and ``relative_position_index``, which srx recomputes. No config is stored,
so the architecture is read off the tensor shapes (the released files give the v1 config of
docs/engine.md). Everything is read with ``weights_only=True``.

Saved-model keys: ``unet.<SwinUNet key>``, ``vq.<diffusers VQModel key>``; ``net`` holds the two
configs and the schedule.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointFormatError
from .checkpoints import ConvertedCheckpoint, safe_torch_load

FORMAT = "resshift-pth"


def unwrap_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    """Flat, ``{'state_dict': ...}`` (also ``model``/``params_ema`` wrappers), ``module.`` prefixes -> flat dict."""
    import torch

    if isinstance(obj, dict):
        for key in ("state_dict", "params_ema", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointFormatError(f"{path}: expected a state dict, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointFormatError(f"{path}: entry {k!r} is not a tensor")
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def _require_keys(state: dict, keys: tuple[str, ...], what: str, path: Path) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointFormatError(f"{path}: not a {what} checkpoint (missing {', '.join(missing)})")


def infer_unet_config(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The Swin-UNet hyper-parameters, from tensor shapes (and the saved attention masks, if any)."""
    _require_keys(state, ("input_blocks.0.0.weight", "out.2.weight", "time_embed.0.weight"), "ResShift denoiser", path)
    conv_in = state["input_blocks.0.0.weight"]
    mc = state["time_embed.0.weight"].shape[1]
    out_ch = state["out.2.weight"].shape[0]
    tables = sorted(k for k in state if k.endswith("attn.relative_position_bias_table"))
    if not tables:
        raise CheckpointFormatError(f"{path}: no Swin layers found: not a ResShift Swin-UNet denoiser")
    table = state[tables[0]]
    heads = table.shape[1]
    window = (math.isqrt(table.shape[0]) + 1) // 2
    embed = state[tables[0].replace("blocks.0.attn.relative_position_bias_table", "patch_embed.proj.weight")].shape[0]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.search(r"\.blocks\.(\d+)\.", k)))

    # Walk input_blocks: resblocks (channel multiplier), Swin after a resblock, downsamplers close a level.
    mults, res_blocks, attn_levels, count, level = [], [], [], 0, 0
    i = 1
    while f"input_blocks.{i}.0.op.weight" in state or f"input_blocks.{i}.0.in_layers.2.weight" in state:
        if f"input_blocks.{i}.0.op.weight" in state:
            res_blocks.append(count)
            count, level = 0, level + 1
        else:
            out = state[f"input_blocks.{i}.0.in_layers.2.weight"].shape[0]
            if count == 0:
                mults.append(out // mc)
            if f"input_blocks.{i}.1.patch_embed.proj.weight" in state and level not in attn_levels:
                attn_levels.append(level)
            count += 1
        i += 1
    res_blocks.append(count)

    # Training-time size (decides where windows shrink): from a saved first-level mask, else ResShift's 64.
    image_size = 64
    masks = [k for k in state if k.endswith(".attn_mask") and k.startswith("input_blocks.")]
    if masks:
        first = min(masks, key=lambda k: int(k.split(".")[1]))
        level_of_first = _level_of_input_block(int(first.split(".")[1]), res_blocks)
        image_size = window * math.isqrt(state[first].shape[0]) * 2 ** level_of_first
    return {
        "image_size": image_size,
        "in_channels": conv_in.shape[1] - 3,
        "model_channels": mc,
        "out_channels": out_ch,
        "channel_mult": mults,
        "num_res_blocks": res_blocks,
        "attention_resolutions": [image_size // 2 ** lv for lv in attn_levels],  # the middle block always has one
        "swin_depth": depth,
        "swin_embed_dim": embed,
        "num_head_channels": embed // heads,
        "window_size": window,
        "mlp_ratio": state[tables[0].replace("attn.relative_position_bias_table", "mlp.fc1.weight")].shape[0] / embed,
        "lq_channels": 3,
    }


def _level_of_input_block(index: int, res_blocks: list[int]) -> int:
    n = 1
    for level, count in enumerate(res_blocks):
        here = count + (1 if level < len(res_blocks) - 1 else 0)
        if index < n + here:
            return level
        n += here
    return len(res_blocks) - 1


def infer_vq_config(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The diffusers ``VQModel`` config of a latent-diffusion VQ checkpoint, from tensor shapes."""
    _require_keys(state, ("encoder.conv_in.weight", "quantize.embedding.weight", "quant_conv.weight"), "VQGAN", path)
    levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    channels = [state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(levels)]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
    codebook = state["quantize.embedding.weight"]
    return {
        "in_channels": state["encoder.conv_in.weight"].shape[1],
        "out_channels": state["decoder.conv_out.weight"].shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "latent_channels": state["quant_conv.weight"].shape[1],
        "num_vq_embeddings": codebook.shape[0],
        "vq_embed_dim": codebook.shape[1],
        "norm_num_groups": 32,
        "scaling_factor": 1.0,
    }


def check_denoiser(path: Path, expected: str | None = None) -> dict[str, Any]:
    """Refuse a file that is not a ResShift-family denoiser (before it is imported); returns its config."""
    state = unwrap_state_dict(safe_torch_load(path, expected), path)
    if "encoder.conv_in.weight" in state:
        raise CheckpointFormatError(f"{path}: this is the VQ autoencoder, not a ResShift denoiser (import it with "
                                    f"--autoencoder)")
    try:
        return infer_unet_config(state, path)
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointFormatError(f"{path}: not a ResShift Swin-UNet denoiser (unexpected layout: {e})") from None


def check_autoencoder(path: Path, expected: str | None = None) -> dict[str, Any]:
    """Refuse a file that is not the latent-diffusion VQ-f4 autoencoder; returns its config."""
    state = unwrap_state_dict(safe_torch_load(path, expected), path)
    try:
        return infer_vq_config(state, path)
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointFormatError(f"{path}: not a VQGAN autoencoder (unexpected layout: {e})") from None


def read_resshift(denoiser: str | Path, autoencoder: str | Path, schedule: dict[str, Any] | None = None) -> ConvertedCheckpoint:
    """Read a published denoiser + VQ autoencoder pair into one checkpoint (``unet.``/``vq.`` tensors)."""
    from ..nets.swin_unet import strip_official_state_dict
    from ..nets.vqgan import convert_ldm_vq_state_dict

    denoiser, autoencoder = Path(denoiser), Path(autoencoder)
    unet_state = unwrap_state_dict(safe_torch_load(denoiser), denoiser)
    if "encoder.conv_in.weight" in unet_state:
        raise CheckpointFormatError(f"{denoiser}: this is the VQ autoencoder, not the denoiser")
    unet_cfg = infer_unet_config(unet_state, denoiser)
    vq_state = unwrap_state_dict(safe_torch_load(autoencoder), autoencoder)
    vq_cfg = infer_vq_config(vq_state, autoencoder)
    try:
        vq_converted = convert_ldm_vq_state_dict(vq_state, vq_cfg)
    except (KeyError, IndexError) as e:
        raise CheckpointFormatError(f"{autoencoder}: unexpected VQGAN layout ({e})") from None
    tensors = {f"unet.{k}": v for k, v in strip_official_state_dict(unet_state).items()}
    tensors |= {f"vq.{k}": v for k, v in vq_converted.items()}
    net = {"unet": unet_cfg, "vq": vq_cfg, "schedule": dict(schedule or {})}
    return ConvertedCheckpoint(tensors=tensors, source_format=FORMAT, net=net)
