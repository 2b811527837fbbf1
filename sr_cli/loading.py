"""From a model name (or directory) to a ready ``SRModel``: registry -> files on disk -> engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import hub
from .checkpoints import OneStepCheckpoint, read_model_dir, read_model_json, read_published, write_model_dir
from .errors import CheckpointFormatError, UnknownModelError
from .registry import BaseModel, ModelSpec, WeightsSource, get_spec, is_model_dir, spec_from_dict


def base_override(value: str) -> BaseModel:
    """``--base``: an existing directory, else a Hub repo id (``org/name`` or ``org/name@revision``)."""
    if Path(value).expanduser().is_dir():
        return BaseModel(path=str(Path(value).expanduser()))
    repo, _, rev = value.partition("@")
    if repo.count("/") != 1:
        raise UnknownModelError(f"--base {value!r}: not a directory and not a Hub repo id (org/name)")
    return BaseModel(repo=repo, revision=rev or "main")


def resolve_spec(model: str, base: str | None = None, weights: str | None = None) -> ModelSpec:
    """The registry entry (or model directory) with ``--base``/``--weights`` overrides applied."""
    if is_model_dir(model):
        doc = read_model_json(model)
        doc.pop("checkpoint", None)
        doc.setdefault("weights", None)
        spec = spec_from_dict(Path(model).name, doc, str(Path(model) / "srx_model.json"))
        spec = replace(spec, weights=WeightsSource(filename="weights.safetensors", path=str(Path(model))))
    else:
        spec = get_spec(model)
    if base:
        spec = replace(spec, base=base_override(base))
    if weights:
        spec = replace(spec, weights=WeightsSource(filename=Path(weights).name, path=weights))
    return spec


def load_checkpoint(spec: ModelSpec, download: bool = True) -> OneStepCheckpoint:
    """The model's one-step weights: converted once to safetensors in the cache, then read from there."""
    if spec.weights is None:
        return OneStepCheckpoint()
    if spec.weights.path and is_model_dir(spec.weights.path):
        return read_model_dir(spec.weights.path)[1]
    path = hub.resolve_weights(spec, download=download)
    if spec.family == "resshift":
        return _load_resshift_checkpoint(spec, path, download)
    if path.suffix == ".safetensors" or spec.format == "srx":
        raise CheckpointFormatError(f"{path}: a bare safetensors file is not a model; pass its model directory")
    digest = hub.sha256_file(path)
    cached = hub.converted_dir(digest)
    if is_model_dir(cached):
        return read_model_dir(cached)[1]
    ckpt = read_published(path, spec.format)
    write_model_dir(cached, {"converted_from": str(path), "format": spec.format}, ckpt)
    return ckpt


def _load_resshift_checkpoint(spec: ModelSpec, denoiser: Path, download: bool) -> OneStepCheckpoint:
    """Denoiser + autoencoder files -> one converted model directory in the cache (keyed by both hashes)."""
    import hashlib

    from .checkpoints_resshift import read_resshift

    if spec.autoencoder is None:
        raise UnknownModelError(f"model {spec.name!r} names no [autoencoder] weights file")
    autoencoder = hub.resolve_weights(hub.autoencoder_spec(spec), download=download)
    key = hashlib.sha256((hub.sha256_file(denoiser) + hub.sha256_file(autoencoder)).encode()).hexdigest()
    cached = hub.converted_dir(key)
    if is_model_dir(cached):
        return read_model_dir(cached)[1]
    ckpt = read_resshift(denoiser, autoencoder)
    write_model_dir(cached, {"converted_from": [str(denoiser), str(autoencoder)], "format": spec.format}, ckpt)
    return ckpt


def quiet_libraries() -> None:
    """Silence diffusers/transformers progress bars and info logs (srx reports progress itself)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def load_model(model: str = "osediff", *, base: str | None = None, weights: str | None = None,
               device: str = "auto", dtype: str = "auto", merge_lora: bool = True, download: bool = True,
               compile_unet: bool = False):
    """Load a model by registry name or saved-model directory, ready to ``upscale``.

    Args:
        model: a name from ``weights_manifest.toml`` (``srx models list``) or a model directory.
        base: override the base diffusion model (a diffusers directory or ``org/name[@revision]``).
        weights: override the one-step weights file (in the model's published format).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``auto`` (bf16/fp16 on GPU, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        merge_lora: fold LoRA weights into the base weights (faster; keep False to inspect adapters).
        download: fetch missing files when online (otherwise a missing file is an error).
        compile_unet: ``torch.compile`` the denoiser (the first tile of each new size pays the compilation;
            worth it for batches).
    """
    from .engine.devices import resolve_device, resolve_dtype
    from .engine.pipeline import SRModel
    from .engine.sd_onestep import OneStepSD

    quiet_libraries()
    spec = resolve_spec(model, base, weights)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    ckpt = load_checkpoint(spec, download=download)
    if spec.family == "lite":
        from .engine.lite import OneStepLite

        net = OneStepLite.from_checkpoint(ckpt)
    elif spec.family == "resshift":
        from .engine.resshift import ResShiftSR

        net = ResShiftSR.from_checkpoint(ckpt)
    else:
        if spec.base is None:
            raise UnknownModelError(f"model {spec.name!r} names no base model; pass --base")
        base_dir = hub.resolve_base(spec.base, spec.name, download=download)
        needs_text = spec.defaults.text_condition == "prompt"
        net = OneStepSD.from_pretrained(base_dir, ckpt, merge_lora=merge_lora, needs_text_encoder=needs_text)
    model = SRModel(spec, net, dev, dt)
    if compile_unet:
        model.compile_unet()
    return model
