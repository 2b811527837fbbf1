"""Checkpoint formats: reading the published files, and srx's own saved-model layout.

All published one-step checkpoints are torch pickles. They are read with
``torch.load(weights_only=True)`` (plain containers and tensors only; a pickle that carries code
is refused) and converted once into srx's saved-model layout, which is also what
``srx train``/``srx distill`` write::

    MODEL_DIR/
      srx_model.json        # registry keys (family, base, defaults, ...) + "checkpoint" (adapters, dtsm)
      weights.safetensors   # "unet.<key>", "vae.<key>", "dtsm.<key>", "text_embedding"

Keys under ``unet.``/``vae.`` are state-dict keys of the diffusers model *with its peft adapters
attached* (``...to_q.lora_A.default_encoder.weight``, ``conv_in.base_layer.weight``), exactly as
the authors' code saves them, so loading is: attach the adapters, load the state dict, done.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointFormatError

MODEL_JSON = "srx_model.json"
MODEL_WEIGHTS = "weights.safetensors"
SRX_MODEL_FORMAT_VERSION = 1

# peft's LoraConfig default: the authors never set lora_alpha, so the scale is 8 / r
# (2.0 for OSEDiff's rank 4, 0.5 for Hero-SR's rank 16).
PEFT_DEFAULT_LORA_ALPHA = 8


@dataclass(frozen=True)
class AdapterSpec:
    """One peft LoRA adapter on one component (UNet or VAE)."""

    name: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdapterSpec":
        return cls(d["name"], int(d["rank"]), float(d["alpha"]), tuple(d["target_modules"]))


@dataclass
class OneStepCheckpoint:
    """What a one-step SD checkpoint holds beyond the base model."""

    unet_adapters: list[AdapterSpec] = field(default_factory=list)
    vae_adapters: list[AdapterSpec] = field(default_factory=list)
    tensors: dict[str, Any] = field(default_factory=dict)  # prefixed: unet./vae./dtsm./text_embedding
    dtsm: dict[str, Any] | None = None  # DynamicTimestepModule kwargs when the model has one
    source_format: str = "srx"
    net: dict[str, Any] | None = None  # the network's kwargs for families with their own network (lite)

    def component_state(self, prefix: str) -> dict[str, Any]:
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.tensors.items() if k.startswith(p)}

    def config(self) -> dict[str, Any]:
        return {
            "source_format": self.source_format,
            "unet_adapters": [asdict(a) for a in self.unet_adapters],
            "vae_adapters": [asdict(a) for a in self.vae_adapters],
            "dtsm": self.dtsm,
            "net": self.net,
        }


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` that only accepts tensors and plain containers (never runs pickled code)."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointFormatError(
            f"{path}: refused to load: the pickle contains more than tensors and plain containers ({first})"
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        raise CheckpointFormatError(f"{path}: not a readable torch checkpoint ({e})") from None


def _require(ckpt: dict, keys: tuple[str, ...], fmt: str, path: Path) -> None:
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointFormatError(f"{path}: not a {fmt} checkpoint (missing {', '.join(missing)})")


def _unique(names) -> tuple[str, ...]:
    # The authors' target lists repeat names (one entry per matching pattern); peft uses a set.
    return tuple(sorted(set(names)))


def _prefixed(prefix: str, state: dict, path: Path) -> dict[str, Any]:
    import torch

    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointFormatError(f"{path}: entry {k!r} of the state dict is not a tensor")
        out[f"{prefix}.{k}"] = v
    return out


def convert_osediff(ckpt: dict, path: Path) -> OneStepCheckpoint:
    """OSEDiff ``osediff.pkl``: three UNet adapters (encoder/decoder/others), one VAE-encoder adapter.

    ``state_dict_unet`` also carries the fully trained ``conv_in`` (as ``conv_in.base_layer.*``,
    since ``conv_in`` is itself a LoRA target).
    """
    keys = ("unet_lora_encoder_modules", "unet_lora_decoder_modules", "unet_lora_others_modules",
            "vae_lora_encoder_modules", "rank_unet", "rank_vae", "state_dict_unet", "state_dict_vae")
    _require(ckpt, keys, "OSEDiff", path)
    r_unet, r_vae = int(ckpt["rank_unet"]), int(ckpt["rank_vae"])
    unet_adapters = [
        AdapterSpec(f"default_{part}", r_unet, PEFT_DEFAULT_LORA_ALPHA, _unique(ckpt[f"unet_lora_{part}_modules"]))
        for part in ("encoder", "decoder", "others")
        if ckpt[f"unet_lora_{part}_modules"]
    ]
    vae_adapters = [AdapterSpec("default_encoder", r_vae, PEFT_DEFAULT_LORA_ALPHA, _unique(ckpt["vae_lora_encoder_modules"]))]
    tensors = _prefixed("unet", ckpt["state_dict_unet"], path) | _prefixed("vae", ckpt["state_dict_vae"], path)
    return OneStepCheckpoint(unet_adapters, vae_adapters, tensors, None, "osediff-pkl")


def convert_hero_sr(ckpt: dict, path: Path) -> OneStepCheckpoint:
    """Hero-SR ``hero_sr_model.pkl``: UNet adapter ``default``, VAE adapter ``vae``, and the DTSM."""
    keys = ("rank_unet", "unet_lora_target_modules", "state_dict_unet", "rank_vae", "vae_lora_target_modules",
            "state_dict_vae", "state_dict_time_adaptive")
    _require(ckpt, keys, "Hero-SR", path)
    unet_adapters = [AdapterSpec("default", int(ckpt["rank_unet"]), PEFT_DEFAULT_LORA_ALPHA,
                                 _unique(ckpt["unet_lora_target_modules"]))]
    vae_adapters = [AdapterSpec("vae", int(ckpt["rank_vae"]), PEFT_DEFAULT_LORA_ALPHA,
                                _unique(ckpt["vae_lora_target_modules"]))]
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
        _prefixed("unet", ckpt["state_dict_unet"], path)
        | _prefixed("vae", ckpt["state_dict_vae"], path)
        | _prefixed("dtsm", dtsm_state, path)
    )
    return OneStepCheckpoint(unet_adapters, vae_adapters, tensors, dtsm, "hero-sr-pkl")


CONVERTERS = {"osediff-pkl": convert_osediff, "hero-sr-pkl": convert_hero_sr}


def detect_format(ckpt: Any) -> str | None:
    if not isinstance(ckpt, dict):
        return None
    if "state_dict_time_adaptive" in ckpt:
        return "hero-sr-pkl"
    if "unet_lora_encoder_modules" in ckpt:
        return "osediff-pkl"
    return None


def read_published(path: str | Path, fmt: str) -> OneStepCheckpoint:
    """Read a published checkpoint of format ``fmt`` (safely) into an OneStepCheckpoint."""
    path = Path(path)
    if fmt not in CONVERTERS:
        raise CheckpointFormatError(f"{path}: format {fmt!r} cannot be read (known: {', '.join(CONVERTERS)})")
    ckpt = safe_torch_load(path)
    found = detect_format(ckpt)
    if found is not None and found != fmt:
        raise CheckpointFormatError(f"{path}: this is a {found} checkpoint, expected {fmt}")
    if not isinstance(ckpt, dict):
        raise CheckpointFormatError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return CONVERTERS[fmt](ckpt, path)


def write_model_dir(directory: str | Path, spec_dict: dict[str, Any], ckpt: OneStepCheckpoint) -> Path:
    """Write srx's saved-model layout atomically (temporary files renamed into place)."""
    import os

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    doc = dict(spec_dict)
    doc["srx_model_format"] = SRX_MODEL_FORMAT_VERSION
    doc["checkpoint"] = ckpt.config()
    tensors = {k: v.detach().contiguous().cpu() for k, v in ckpt.tensors.items()}
    tmp_w = directory / (MODEL_WEIGHTS + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"srx_model_format": str(SRX_MODEL_FORMAT_VERSION)})
    os.replace(tmp_w, directory / MODEL_WEIGHTS)
    tmp_j = directory / (MODEL_JSON + ".tmp")
    tmp_j.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp_j, directory / MODEL_JSON)
    return directory


def read_model_json(directory: str | Path) -> dict[str, Any]:
    """The ``srx_model.json`` of a saved model directory (registry keys + "checkpoint")."""
    directory = Path(directory)
    try:
        doc = json.loads((directory / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointFormatError(f"{directory / MODEL_JSON}: unreadable ({e})") from None
    version = doc.pop("srx_model_format", None)
    if version != SRX_MODEL_FORMAT_VERSION:
        raise CheckpointFormatError(f"{directory / MODEL_JSON}: unsupported srx_model_format {version!r}")
    return doc


def read_model_dir(directory: str | Path) -> tuple[dict[str, Any], OneStepCheckpoint]:
    """Read srx's saved-model layout: (the registry-style dict, the checkpoint)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    doc = read_model_json(directory)
    cfg = doc.pop("checkpoint", {})
    weights = directory / MODEL_WEIGHTS
    try:
        tensors = load_file(str(weights)) if weights.exists() else {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointFormatError(f"{weights}: not a readable safetensors file ({e})") from None
    ckpt = OneStepCheckpoint(
        unet_adapters=[AdapterSpec.from_dict(a) for a in cfg.get("unet_adapters", [])],
        vae_adapters=[AdapterSpec.from_dict(a) for a in cfg.get("vae_adapters", [])],
        tensors=tensors,
        dtsm=cfg.get("dtsm"),
        source_format=cfg.get("source_format", "srx"),
        net=cfg.get("net"),
    )
    return doc, ckpt
