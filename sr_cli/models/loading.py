"""From a model name (or directory) to a ready ``SRModel``: registry -> files on disk -> engine."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import CheckpointFormatError, ManifestError, UnknownModelError
from . import hub
from .checkpoints import ConvertedCheckpoint, read_model_dir, read_model_json, write_model_dir
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
        spec = model_file_spec(model) or get_spec(model)
    if base:
        spec = replace(spec, base=base_override(base))
    if weights:
        spec = replace(spec, weights=WeightsSource(filename=Path(weights).name, path=weights))
    return spec


def model_file_spec(model: str) -> ModelSpec | None:
    """A weights file given as the model (``--model 4x_model.pth``): the spec of the family that runs it.

    Registry names come first; a file no family runs is a one-line error naming it."""
    from ..families import FAMILIES
    from .registry import registry

    path = Path(model).expanduser()
    if model in registry() or path.is_dir():
        return None
    for family in FAMILIES.values():  # each knows its files by their suffix (a missing one is an error there)
        spec = family.model_file_spec(path)
        if spec is not None:
            return spec
    if path.is_file():
        raise CheckpointFormatError(f"{path}: not a model file srx can run (a .pth, .pt, .ckpt or .safetensors "
                                    f"state dict, or a model directory)")
    return None


def load_converted_checkpoint(spec: ModelSpec, download: bool = True) -> ConvertedCheckpoint:
    """The model's own weights in srx's layout: converted once to safetensors in the cache, then read from there.

    (Not ``train.loop``'s resumable training state, which has its own reader.)"""
    if spec.weights is None:
        return ConvertedCheckpoint()
    if spec.weights.path and is_model_dir(spec.weights.path):
        return read_model_dir(spec.weights.path)[1]
    from ..io.fsio import lock_path_for, locked

    cached, convert, sources = _conversion(spec, download)
    with locked(lock_path_for(cached), best_effort=True):  # parallel runs convert once; the others wait and read
        if is_model_dir(cached):
            try:
                return read_model_dir(cached)[1]
            except (CheckpointFormatError, ManifestError):
                pass  # a damaged conversion (e.g. a disk filled up): convert the verified download again
        ckpt = convert()
        try:
            write_model_dir(cached, {"converted_from": [str(p) for p in sources] if len(sources) > 1
                                     else str(sources[0]), "format": spec.format}, ckpt)
        except OSError:
            pass  # a read-only or full cache: use the conversion without keeping it
    return ckpt


def converted_copy(spec: ModelSpec) -> Path | None:
    """The cached conversion of a registry model's weights, if there is one (nothing is downloaded)."""
    if spec.weights is None or spec.weights.kind == "embedded" or (spec.weights.path and is_model_dir(spec.weights.path)):
        return None
    cached = _conversion(spec, download=False)[0]
    return cached if is_model_dir(cached) else None


def _conversion(spec: ModelSpec, download: bool) -> tuple[Path, Callable[[], ConvertedCheckpoint], list[Path]]:
    """(the conversion's cache directory, a function that converts, the source files); sources are verified."""
    from ..families import family_of  # the families build on the model store: imported when used

    family = family_of(spec)
    sources = family.source_files(spec, download)
    return hub.converted_dir(family.conversion_key(sources)), lambda: family.convert(spec, sources), sources


def _weights_location(spec: ModelSpec) -> str:
    if spec.weights is not None and spec.weights.path and is_model_dir(spec.weights.path):
        return str(Path(spec.weights.path) / "weights.safetensors")
    return (spec.weights.path or spec.weights.filename) if spec.weights is not None else spec.name


def _state_dict_problem(error: BaseException) -> str:
    """torch's long 'Missing key(s) ... Unexpected key(s) ...' message, shortened to its first keys."""
    import re

    parts = []
    for label, keys in re.findall(r"(Missing|Unexpected) key\(s\) in state_dict: ([^\n]*)", str(error)):
        names = re.findall(r'"([^"]+)"', keys)
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        parts.append(f"{label.lower()} {', '.join(names[:3])}{more}")
    if not parts:
        sizes = re.findall(r"size mismatch for ([^:]+):", str(error))
        if sizes:
            parts.append(f"shape mismatch for {', '.join(sizes[:3])}" + (" and more" if len(sizes) > 3 else ""))
    return "; ".join(parts) or "its tensors do not match"


def _quiet_diffusers() -> None:
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()


def _quiet_transformers() -> None:
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


_QUIETERS: dict[str, Callable[[], None]] = {"diffusers": _quiet_diffusers, "transformers": _quiet_transformers}


class _QuietOnImport(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` entry that quiets a library right after Python first imports it."""

    def __init__(self) -> None:
        self.pending: dict[str, Callable[[], None]] = {}

    def find_spec(self, fullname, path, target=None):
        quiet = self.pending.get(fullname)
        if quiet is None:
            return None
        spec = next((found for finder in sys.meta_path if finder is not self and hasattr(finder, "find_spec")
                     and (found := finder.find_spec(fullname, path, target)) is not None), None)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_then_quiet(module) -> None:
            run_module(module)
            if self.pending.pop(fullname, None) is not None:  # once (a lookup alone imports nothing)
                quiet()

        spec.loader.exec_module = exec_then_quiet
        return spec


_QUIET_ON_IMPORT = _QuietOnImport()


def quiet_libraries() -> None:
    """Silence diffusers/transformers progress bars and info logs (srx reports progress itself).

    A library already imported is quieted now, one not imported yet when it is: importing diffusers takes seconds
    that a command which never uses it (the lite model) should not pay.
    """
    for name, quiet in _QUIETERS.items():
        if name in sys.modules:
            _QUIET_ON_IMPORT.pending.pop(name, None)
            quiet()
        else:
            _QUIET_ON_IMPORT.pending[name] = quiet
            if _QUIET_ON_IMPORT not in sys.meta_path:
                sys.meta_path.insert(0, _QUIET_ON_IMPORT)


def load_model(model: str = "osediff", *, base: str | None = None, weights: str | None = None,
               device: str = "auto", dtype: str = "auto", merge_lora: bool = True, download: bool = True,
               compile_unet: bool = False, prompt_extractor: str | None = None):
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
        prompt_extractor: OSEDiff's tagger, ``dape`` (its default: RAM + DAPE tag each input, the tags open the
            prompt; a missing file is an error naming what to get) or ``none`` (no tags). Other models: ignored.
    """
    from ..engine.devices import resolve_device, resolve_dtype
    from ..engine.pipeline import SRModel
    from ..families import family_of

    quiet_libraries()
    spec = resolve_spec(model, base, weights)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    ckpt = load_converted_checkpoint(spec, download=download)
    family = family_of(spec)
    try:
        net = family.build(spec, ckpt, download=download, merge_lora=merge_lora)
    except (RuntimeError, CheckpointFormatError) as e:
        # torch's "Error(s) in loading state_dict for X:" (the engines keep only that line; the keys are in
        # the RuntimeError it came from) says neither which file nor what is wrong with it.
        if "Error(s) in loading state_dict" not in str(e):
            raise
        torch_error = e if isinstance(e, RuntimeError) else (e.__context__ or e)
        raise CheckpointFormatError(f"{_weights_location(spec)}: the weights do not fit the {spec.family} network "
                                    f"({_state_dict_problem(torch_error)})") from None
    except TypeError as e:  # the network's settings in srx_model.json ("checkpoint.net") do not fit its code
        if "keyword argument" not in str(e) and "positional argument" not in str(e):
            raise
        where = Path(spec.weights.path) / "srx_model.json" if spec.weights is not None and spec.weights.path else spec.name
        raise ManifestError(f"{where}: the network settings do not fit the {spec.family} network ({e})") from None
    tagger = family.load_extras(spec, prompt_extractor, download)
    model = SRModel(spec, net, dev, dt, tagger=tagger)
    if compile_unet:
        model.compile_unet()
    return model
