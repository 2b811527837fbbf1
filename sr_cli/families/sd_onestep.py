"""The SD one-step family (OSEDiff, Hero-SR, DFOSD-style, models trained by ``srx train``): a diffusers base model
(VAE + UNet + text encoder) with LoRA adapters, one UNet step in the VAE latent (``engine/sd_onestep.py``).

Published formats: OSEDiff's ``osediff.pkl`` and Hero-SR's ``hero_sr_model.pkl`` (torch pickles, read with
``checkpoints.safe_torch_load``), converted here to srx's saved-model layout. Upscaling tiles the bicubic-upsampled
input in output space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..errors import CheckpointFormatError, UnknownModelError
from ..models.checkpoints import PEFT_DEFAULT_LORA_ALPHA, AdapterSpec, ConvertedCheckpoint
from .base import ModelFamily, TilePlan, output_space_plan


def require_keys(ckpt: dict, keys: tuple[str, ...], fmt: str, path: Path) -> None:
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointFormatError(f"{path}: not a {fmt} checkpoint (missing {', '.join(missing)})")


def unique_names(names) -> tuple[str, ...]:
    # The authors' target lists repeat names (one entry per matching pattern); peft uses a set.
    return tuple(sorted(set(names)))


def prefixed_tensors(prefix: str, state: Any, path: Path, what: str = "the state dict") -> dict[str, Any]:
    """``state``'s tensors under ``prefix.``; a published file whose ``what`` is not a state dict of tensors is refused."""
    import torch

    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{path}: {what} is not a state dict")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointFormatError(f"{path}: entry {k!r} of {what} is not a tensor")
        out[f"{prefix}.{k}"] = v
    return out


def convert_osediff(ckpt: dict, path: Path) -> ConvertedCheckpoint:
    """OSEDiff ``osediff.pkl``: three UNet adapters (encoder/decoder/others), one VAE-encoder adapter.

    ``state_dict_unet`` also carries the fully trained ``conv_in`` (as ``conv_in.base_layer.*``,
    since ``conv_in`` is itself a LoRA target).
    """
    keys = ("unet_lora_encoder_modules", "unet_lora_decoder_modules", "unet_lora_others_modules",
            "vae_lora_encoder_modules", "rank_unet", "rank_vae", "state_dict_unet", "state_dict_vae")
    require_keys(ckpt, keys, "OSEDiff", path)
    r_unet, r_vae = int(ckpt["rank_unet"]), int(ckpt["rank_vae"])
    unet_adapters = [
        AdapterSpec(f"default_{part}", r_unet, PEFT_DEFAULT_LORA_ALPHA, unique_names(ckpt[f"unet_lora_{part}_modules"]))
        for part in ("encoder", "decoder", "others")
        if ckpt[f"unet_lora_{part}_modules"]
    ]
    vae_adapters = [AdapterSpec("default_encoder", r_vae, PEFT_DEFAULT_LORA_ALPHA, unique_names(ckpt["vae_lora_encoder_modules"]))]
    tensors = prefixed_tensors("unet", ckpt["state_dict_unet"], path) | prefixed_tensors("vae", ckpt["state_dict_vae"], path)
    return ConvertedCheckpoint(unet_adapters, vae_adapters, tensors, None, "osediff-pkl")


def convert_hero_sr(ckpt: dict, path: Path) -> ConvertedCheckpoint:
    """Hero-SR ``hero_sr_model.pkl``: UNet adapter ``default``, VAE adapter ``vae``, and the DTSM."""
    keys = ("rank_unet", "unet_lora_target_modules", "state_dict_unet", "rank_vae", "vae_lora_target_modules",
            "state_dict_vae", "state_dict_time_adaptive")
    require_keys(ckpt, keys, "Hero-SR", path)
    unet_adapters = [AdapterSpec("default", int(ckpt["rank_unet"]), PEFT_DEFAULT_LORA_ALPHA,
                                 unique_names(ckpt["unet_lora_target_modules"]))]
    vae_adapters = [AdapterSpec("vae", int(ckpt["rank_vae"]), PEFT_DEFAULT_LORA_ALPHA,
                                unique_names(ckpt["vae_lora_target_modules"]))]
    dtsm_state = ckpt["state_dict_time_adaptive"]
    if "time_list" not in dtsm_state or "conv1.0.weight" not in dtsm_state:
        raise CheckpointFormatError(f"{path}: state_dict_time_adaptive is not a Hero-SR time-step module")
    # Read the module's hyperparameters off the state dict.
    n_blocks = len({k.split(".")[1] for k in dtsm_state if k.startswith("blocks.")})
    channels = dtsm_state["conv1.0.weight"].shape[0]
    hidden = dtsm_state["fc.0.weight"].shape[0]
    pool_area = dtsm_state["fc.0.weight"].shape[1] // channels
    pool = int(round(pool_area**0.5))
    dtsm = {
        "timesteps": [int(round(t)) for t in dtsm_state["time_list"].tolist()],
        "channels": int(channels),
        "num_blocks": n_blocks,
        "pool_size": pool,
        "hidden": int(hidden),
    }
    tensors = (
        prefixed_tensors("unet", ckpt["state_dict_unet"], path)
        | prefixed_tensors("vae", ckpt["state_dict_vae"], path)
        | prefixed_tensors("dtsm", dtsm_state, path)
    )
    return ConvertedCheckpoint(unet_adapters, vae_adapters, tensors, dtsm, "hero-sr-pkl")


class SDOneStepFamily(ModelFamily):
    name = "sd-onestep"
    text_conditioned = True
    formats: ClassVar = {"osediff-pkl": convert_osediff, "hero-sr-pkl": convert_hero_sr}

    def detect(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return None
        if "state_dict_time_adaptive" in obj:
            return "hero-sr-pkl"
        if "unet_lora_encoder_modules" in obj:
            return "osediff-pkl"
        return None

    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        from ..models import hub

        if spec.base is None:
            raise UnknownModelError(f"model {spec.name!r} names no base model; pass --base")
        base_dir = hub.resolve_base(spec.base, spec.name, download=download)
        needs_text = spec.defaults.text_condition == "prompt"
        return self.network_class().from_pretrained(base_dir, ckpt, merge_lora=merge_lora,
                                                    needs_text_encoder=needs_text)

    def network_class(self):
        """The engine's network class (variants of the family subclass ``OneStepSD``)."""
        from ..engine.sd_onestep import OneStepSD

        return OneStepSD

    def load_extras(self, spec, prompt_extractor: str | None, download: bool):
        """OSEDiff's DAPE prompt extractor (RAM + DAPE), unless the model or the user turns it off."""
        from ..engine.dape import load_dape_tagger
        from ..models.spec import prompt_extractor_for

        if prompt_extractor_for(spec, prompt_extractor) == "dape":
            return load_dape_tagger(spec, download=download, requested=prompt_extractor)
        return None

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        import torch

        from ..engine.resize import upsample_input

        # [0, 1], CPU: the network's input and the color-fix reference.
        reference = upsample_input(lr.cpu(), *size)
        # The DTSM looks at the whole upsampled image in [-1, 1] (resized small on the host before it goes to
        # the device); a fixed timestep needs none of it.
        fixed = model.fixed_timestep()
        probe = reference if fixed is None else reference[:, :, :1, :1]
        timesteps = model.net.choose_timesteps(probe * 2 - 1, fixed).to(model.device)
        text = model.net.text_condition(model.prompt_for(reference, requested))
        generator = None if opts.seed is None else torch.Generator(device=model.device).manual_seed(opts.seed)
        step = self.step_options(opts)
        # 8-bit inputs come out in the 8-bit levels of the authors' scripts: they convert the network's output,
        # and again the color-fixed image, with ``ToPILImage`` (truncation, not rounding).
        return output_space_plan(model, reference, opts, lambda x: model.net(x, timesteps, text, generator, **step),
                                 authors_8bit_levels=lr.dtype == torch.uint8)

    def step_options(self, opts) -> dict[str, Any]:
        """Options of the network's latent step taken from the upscale options (variants: see sd_dual_lora)."""
        return {}

    def stages(self, net) -> dict[str, Any]:
        return {"encode": net.vae.encoder, "unet": net.unet, "decode": net.vae.decoder}

    def flops_call(self, model, tile: int):
        import torch

        x = torch.zeros(1, 3, tile, tile, device=model.device)
        t = model.net.choose_timesteps(x, model.fixed_timestep())
        text = model.net.text_condition(model.text_for(""))
        return lambda: model.net(x, t, text, None)


FAMILY = SDOneStepFamily()
