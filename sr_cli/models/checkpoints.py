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

from ..errors import CheckpointFormatError, ManifestError

MODEL_JSON = "srx_model.json"
MODEL_WEIGHTS = "weights.safetensors"
MODEL_CHECKSUMS = "srx_checksums.json"  # size and sha256 of weights.safetensors, written with it
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
class ConvertedCheckpoint:
    """A model's own weights in srx's layout, whatever the family: what a published checkpoint (or ``srx train``)
    adds to the base model (SD family: peft adapters, trained tensors, Hero-SR's DTSM), or a whole network with its
    settings (``net``: lite, the ResShift family)."""

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


# What a downloaded "checkpoint" often really is: a browser answer saved under the expected name.
_NOT_CHECKPOINTS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
)


def sniff_checkpoint(path: Path, expected: str | None = None) -> None:
    """Refuse files that cannot be a torch checkpoint, saying what they are instead.

    torch writes a zip archive (``PK\\x03\\x04``) or, in its legacy format, a pickle (protocol byte
    ``\\x80``). Anything else gets a message naming what the file is, e.g. the HTML page Google Drive serves
    in place of a large file, instead of torch's unpickler error.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise CheckpointFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return
    want = expected or "a torch checkpoint"
    if not head:
        raise CheckpointFormatError(f"{path}: the file is empty (0 bytes), not {want}")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        raise CheckpointFormatError(
            f"{path}: this is an HTML page, not {want} (Google Drive and other hosts serve a web page in place of "
            f"large files; open the link in a browser and download the file itself)")
    for magic, what in _NOT_CHECKPOINTS:
        if head.startswith(magic):
            raise CheckpointFormatError(f"{path}: this is {what}, not {want}")
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        raise CheckpointFormatError(f"{path}: this is a text file, not {want}")
    raise CheckpointFormatError(f"{path}: not {want} (neither torch's zip format nor a pickle; it starts with "
                                f"{head[:8].hex(' ')})")


def _torch_reason(error: BaseException) -> str:
    """The useful part of a torch.load error, without torch's advice to load unsafely."""
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    sentences = [s.strip() for s in " ".join(text.split()).split(". ")]
    kept = [s for s in sentences if s and "weights_only" not in s and "arbitrary code" not in s
            and "trusted source" not in s and "file an issue" not in s.lower()]
    return ". ".join(kept) or type(error).__name__


def safe_torch_load(path: str | Path, expected: str | None = None) -> Any:
    """``torch.load`` that only accepts tensors and plain containers (never runs pickled code).

    ``expected`` names the file the caller wants (e.g. ``hero_sr_model.pkl``) for the messages.
    """
    import warnings

    import torch

    path = Path(path)
    sniff_checkpoint(path, expected)
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol says nothing to users
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointFormatError(
            f"{path}: refused to load: it holds more than tensors and plain containers, or is not a torch "
            f"checkpoint ({_torch_reason(e)})"
        ) from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises EOFError, RuntimeError, KeyError, ... on damaged files
        raise CheckpointFormatError(f"{path}: not a readable torch checkpoint ({_torch_reason(e)})") from None


def read_published(path: str | Path, fmt: str, expected: str | None = None) -> ConvertedCheckpoint:
    """Read a published checkpoint of format ``fmt`` (safely) into a ConvertedCheckpoint.

    The family that owns ``fmt`` converts it (``sr_cli/families/``). ``expected``: the published file's name
    (e.g. ``osediff.pkl``), for messages about files that are not it.
    """
    from ..families import FAMILIES, detect_format, format_owner

    path = Path(path)
    family = format_owner(fmt)
    if family is None:
        known = [f for fam in FAMILIES.values() for f in fam.formats]
        raise CheckpointFormatError(f"{path}: format {fmt!r} cannot be read (known: {', '.join(known)})")
    ckpt = safe_torch_load(path, expected)
    found = detect_format(ckpt)
    if found is not None and found != fmt:
        raise CheckpointFormatError(f"{path}: this is a {found} checkpoint, expected {fmt}")
    if not isinstance(ckpt, dict):
        raise CheckpointFormatError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return family.formats[fmt](ckpt, path)


def write_model_dir(directory: str | Path, spec_dict: dict[str, Any], ckpt: ConvertedCheckpoint) -> Path:
    """Write srx's saved-model layout atomically (temporary files renamed into place; the json, which marks the
    directory as a model, last)."""
    from safetensors.torch import save_file

    from ..io.fsio import atomic_write, write_text

    directory = Path(directory)
    doc = dict(spec_dict)
    doc["srx_model_format"] = SRX_MODEL_FORMAT_VERSION
    doc["checkpoint"] = ckpt.config()
    tensors = {k: v.detach().contiguous().cpu() for k, v in ckpt.tensors.items()}
    metadata = {"srx_model_format": str(SRX_MODEL_FORMAT_VERSION)}
    atomic_write(directory / MODEL_WEIGHTS, writer=lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    record_checksums(directory)
    write_text(directory / MODEL_JSON, json.dumps(doc, indent=2, sort_keys=True))
    return directory


def read_model_json(directory: str | Path) -> dict[str, Any]:
    """The ``srx_model.json`` of a saved model directory (registry keys + "checkpoint")."""
    directory = Path(directory)
    where = directory / MODEL_JSON
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointFormatError(f"{where}: unreadable ({e})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {_json_kind(doc)}")
    version = doc.pop("srx_model_format", None)
    if version != SRX_MODEL_FORMAT_VERSION:
        raise CheckpointFormatError(f"{where}: unsupported srx_model_format {version!r}")
    if not isinstance(doc.get("checkpoint", {}), dict):
        raise ManifestError(f"{where}: 'checkpoint' must be an object, got {_json_kind(doc['checkpoint'])}")
    for key in ("net", "dtsm"):
        value = doc.get("checkpoint", {}).get(key)
        if value is not None and not isinstance(value, dict):
            raise ManifestError(f"{where}: 'checkpoint.{key}' must be an object, got {_json_kind(value)}")
    return doc


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false",
            type(None): "null", dict: "an object"}.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------- checksums of a model directory
def record_checksums(directory: str | Path) -> None:
    """Write the size and sha256 of the directory's weights file beside it (checked by ``check_model_files``)."""
    from ..io.fsio import write_text
    from .hub import sha256_file

    weights = Path(directory) / MODEL_WEIGHTS
    doc = {MODEL_WEIGHTS: {"size": weights.stat().st_size, "sha256": sha256_file(weights)}}
    write_text(Path(directory) / MODEL_CHECKSUMS, json.dumps(doc, indent=2))


def check_model_files(directory: str | Path, full: bool = False) -> None:
    """Raise a CheckpointFormatError naming the file when a model directory is incomplete or damaged.

    The weights file must exist; when the directory records checksums (srx writes them with every model
    directory), its size must match, and with ``full`` its sha256 too.
    """
    directory = Path(directory)
    weights = directory / MODEL_WEIGHTS
    if not weights.is_file():
        raise CheckpointFormatError(f"{weights}: missing: the model directory {directory} is incomplete")
    try:
        recorded = json.loads((directory / MODEL_CHECKSUMS).read_text(encoding="utf-8"))[MODEL_WEIGHTS]
        size, digest = int(recorded["size"]), str(recorded["sha256"])
    except FileNotFoundError:
        return  # written before srx recorded checksums
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointFormatError(f"{directory / MODEL_CHECKSUMS}: unreadable ({e})") from None
    actual = weights.stat().st_size
    if actual != size:
        raise CheckpointFormatError(
            f"{weights}: damaged: {actual} bytes, {size} were written ({'truncated' if actual < size else 'grown'}; "
            f"if you replaced it on purpose, delete {MODEL_CHECKSUMS} beside it)")
    if full:
        from .hub import sha256_file

        if sha256_file(weights) != digest:
            raise CheckpointFormatError(f"{weights}: damaged: its sha256 differs from the one recorded when it was "
                                        f"written ({digest}; if you replaced it on purpose, delete {MODEL_CHECKSUMS} "
                                        f"beside it)")


def read_model_dir(directory: str | Path) -> tuple[dict[str, Any], ConvertedCheckpoint]:
    """Read srx's saved-model layout: (the registry-style dict, the checkpoint)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    doc = read_model_json(directory)
    cfg = doc.pop("checkpoint", {})
    weights = directory / MODEL_WEIGHTS
    check_model_files(directory)
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointFormatError(f"{weights}: not a readable safetensors file ({e})") from None
    try:
        ckpt = ConvertedCheckpoint(
            unet_adapters=[AdapterSpec.from_dict(a) for a in cfg.get("unet_adapters") or []],
            vae_adapters=[AdapterSpec.from_dict(a) for a in cfg.get("vae_adapters") or []],
            tensors=tensors,
            dtsm=cfg.get("dtsm"),
            source_format=cfg.get("source_format", "srx"),
            net=cfg.get("net"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ManifestError(f"{directory / MODEL_JSON}: malformed 'checkpoint' adapters ({type(e).__name__}: {e})") \
            from None
    return doc, ckpt
