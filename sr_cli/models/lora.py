"""LoRA adapters through peft, on diffusers models (attach, load, merge)."""

from __future__ import annotations

import warnings

from torch import nn

from ..errors import CheckpointFormatError
from .checkpoints import AdapterSpec


def lora_config(adapter: AdapterSpec, init: str | bool = "gaussian"):
    from peft import LoraConfig

    # The authors use init_lora_weights="gaussian" (B = 0, so a fresh adapter changes nothing).
    return LoraConfig(r=adapter.rank, lora_alpha=adapter.alpha, target_modules=list(adapter.target_modules),
                      init_lora_weights=init)


def attach_adapters(model: nn.Module, adapters: list[AdapterSpec]) -> None:
    """Add each adapter to a diffusers model and make all of them active together."""
    if not adapters:
        return
    for adapter in adapters:
        try:
            with warnings.catch_warnings():
                # peft warns when a model gets a second adapter: several adapters are the published layout.
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                model.add_adapter(lora_config(adapter), adapter_name=adapter.name)
        except ValueError as e:
            raise CheckpointFormatError(f"adapter {adapter.name!r} does not fit the base model: {e}") from None
    model.set_adapter([a.name for a in adapters])


def load_component_state(model: nn.Module, state: dict, component: str) -> None:
    """Load a (peft-wrapped) partial state dict: every key must exist in the model.

    LoRA weights absent from the file keep peft's init (B = 0: no effect), as the authors' loaders do.
    """
    if not state:
        return
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise CheckpointFormatError(
            f"{component}: {len(unexpected)} checkpoint key(s) do not exist in the base model with its adapters: "
            f"{', '.join(unexpected[:3])}{more}"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise CheckpointFormatError(f"{component}: {k} has shape {tuple(v.shape)}, the model expects "
                                        f"{tuple(own[k].shape)} (wrong base model?)")
    model.load_state_dict(state, strict=False)


def merge_adapters(model: nn.Module) -> None:
    """Fold the active LoRA adapters into the base weights and remove the peft wrappers."""
    if getattr(model, "_hf_peft_config_loaded", False):
        model.fuse_lora()
        model.unload_lora()


def has_adapters(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


# ----------------------------------------------------------------------------- published target rules
# OSEDiff picks LoRA targets by substring over parameter names (weights only; biases and norms skipped).
# Every listed pattern is covered by these (e.g. "conv" covers conv1, conv_in, conv_shortcut, conv_out).
_OSEDIFF_UNET_PATTERNS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")
_OSEDIFF_VAE_PATTERNS = ("conv", "to_k", "to_q", "to_v", "to_out.0")


def _weight_modules(model: nn.Module):
    for name, _ in model.named_parameters():
        if "bias" in name or "norm" in name or not name.endswith(".weight"):
            continue
        yield name[: -len(".weight")]


def osediff_unet_targets(unet: nn.Module) -> tuple[list[str], list[str], list[str]]:
    """OSEDiff's UNet targets, split as its adapters are: (encoder, decoder, others).

    Encoder: down blocks and ``conv_in``; decoder: up blocks and ``conv_out``; others: the mid block etc.
    """
    enc, dec, others = [], [], []
    for module in _weight_modules(unet):
        if not any(p in module for p in _OSEDIFF_UNET_PATTERNS):
            continue
        if "down_blocks" in module or "conv_in" in module:
            enc.append(module)
        elif "up_blocks" in module or "conv_out" in module:
            dec.append(module)
        else:
            others.append(module)
    return enc, dec, others


def osediff_vae_targets(vae: nn.Module) -> list[str]:
    """OSEDiff's VAE targets: the encoder's convolutions and attention projections, plus ``quant_conv``."""
    out = []
    for module in _weight_modules(vae):
        if "encoder" in module and any(p in module for p in _OSEDIFF_VAE_PATTERNS):
            out.append(module)
        elif "quant_conv" in module and "post_quant_conv" not in module:
            out.append(module)
    return out
