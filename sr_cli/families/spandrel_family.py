"""The ``spandrel`` family: classic feed-forward SR networks (Real-ESRGAN's RRDBNet and SRVGGNetCompact, SwinIR, HAT,
DAT, SPAN, ... every image-to-image architecture the ``spandrel`` package detects), run by srx's engine.

A model is one state-dict file (``.pth``/``.pt``/``.ckpt`` torch file or ``.safetensors``), a registry model
(``realesrgan-x4plus``) or a file given as ``--model`` (community models from OpenModelDB). srx reads the file
itself, safely (safetensors, or ``torch.load(weights_only=True)``: a pickle carrying code is refused), keeps a
safetensors copy in the cache, and lets spandrel detect the architecture and build the network
(``engine/classic.py``). The network works on the LR image: tiles are cut in LR space and their results (x the
model's own scale, x1/x2/x4/x8) blended; the color-fix reference is the bicubic-upsampled input.

Architectures under restrictive licenses live in the separate ``spandrel_extra_arches`` package (the
``srx[extra-arches]`` extra): srx uses them only when that package is installed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..errors import CheckpointFormatError, ManifestError, WeightsMissingError
from .base import ModelFamily, TilePlan

FORMAT = "spandrel"  # a state dict whose architecture spandrel detects
MODEL_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
# Tiles of 512 LR pixels overlapping by 32 (in output pixels, as every family's --tile/--overlap: x the scale).
TILE_LR, OVERLAP_LR = 512, 32


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a model file, read safely, unwrapped as spandrel expects (``params_ema``, ``module.``)."""
    import torch

    from ..models.checkpoints import safe_torch_load

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointFormatError(f"{path}: not a readable safetensors file ({e})") from None
    else:
        obj = safe_torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: expected a state dict, got {type(obj).__name__}")
    from spandrel import canonicalize_state_dict

    state = canonicalize_state_dict(obj)
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointFormatError(f"{path}: holds no tensors (not a model's state dict)")
    return tensors


def _arch_registry():
    """spandrel's architectures, with the restrictive-license ones when ``spandrel_extra_arches`` is installed."""
    from spandrel import MAIN_REGISTRY

    try:
        import spandrel_extra_arches
    except ImportError:
        return MAIN_REGISTRY
    spandrel_extra_arches.install(ignore_duplicates=True)
    return MAIN_REGISTRY


def _extra_arches_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("spandrel_extra_arches") is not None


def describe(state: dict[str, Any], where: Path | str):
    """The spandrel descriptor of a state dict: a one-line ``CheckpointFormatError`` naming ``where`` when no
    architecture matches it, when the match cannot be built, or when it is no RGB image-to-image model."""
    from spandrel import ImageModelDescriptor, UnsupportedModelError

    try:
        with warnings.catch_warnings():  # torch's note to spandrel's developers (SwinIR's meshgrid) is not for users
            warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release", category=UserWarning)
            descriptor = _arch_registry().load(dict(state))
    except UnsupportedModelError:
        keys = ", ".join(list(state)[:3])
        extra = "" if _extra_arches_installed() else (
            "; architectures under restrictive licenses come with `pip install \"srx[extra-arches]\"`")
        raise CheckpointFormatError(f"{where}: no architecture matches this state dict (keys {keys}, ...){extra}") \
            from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - an architecture that matched the keys but not the shapes
        raise CheckpointFormatError(f"{where}: looks like a model spandrel knows, but cannot be built from it "
                                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    name = descriptor.architecture.name
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose == "FaceSR":
        what = "face restoration (aligned faces only)" if isinstance(descriptor, ImageModelDescriptor) else "inpainting"
        raise CheckpointFormatError(f"{where}: a {name} {what} model, not an image-to-image SR model")
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise CheckpointFormatError(f"{where}: a {name} model with {descriptor.input_channels} input and "
                                    f"{descriptor.output_channels} output channels; srx runs RGB models (3 -> 3)")
    return descriptor


def file_defaults(scale: int, tiling: str = "supported"):
    """The inference defaults of a classic model at ``scale``: no color fix, 512-pixel LR tiles (none for an
    architecture that tiles internally)."""
    from ..models.registry import Defaults

    tile = 0 if tiling == "internal" else TILE_LR * scale
    return Defaults(scale=scale, timestep=0, prompt_template="", color_fix="none", tile=tile,
                    overlap=OVERLAP_LR * scale)


class SpandrelFamily(ModelFamily):
    name = "spandrel"

    # ------------------------------------------------------------------ a bare file as --model
    def model_file_spec(self, path: Path):
        """The spec of a model file given as ``--model`` (its architecture and scale detected; converted once)."""
        from dataclasses import replace

        from ..models.checkpoints import read_model_json
        from ..models.loading import converted_copy, load_converted_checkpoint
        from ..models.registry import ModelSpec, WeightsSource

        from .ncnn_family import is_ncnn_weights

        if path.suffix.lower() not in MODEL_FILE_SUFFIXES or is_ncnn_weights(path):
            return None
        if not path.is_file():
            raise WeightsMissingError(f"{path}: model file not found")
        spec = ModelSpec(name=str(path), family=self.name, format=FORMAT, base=None,
                         weights=WeightsSource(filename=path.name, path=str(path)),
                         license="the file's own (see where you got it)")
        cached = converted_copy(spec)  # converted before (keyed by the file's sha256): its settings alone
        try:
            net = read_model_json(cached).get("checkpoint", {}).get("net") if cached else None
        except (CheckpointFormatError, ManifestError):
            net = None
        net = net or load_converted_checkpoint(spec).net or {}  # converts once (a damaged copy again)
        scale = int(net.get("scale", 0))
        if scale < 1:
            raise CheckpointFormatError(f"{path}: its cached conversion names no scale; delete the srx cache's "
                                        f"converted copy and run again")
        return replace(spec, defaults=file_defaults(scale, net.get("tiling", "supported")),
                       description=f"{net.get('architecture', '?')} x{scale} ({path.name})")

    # ------------------------------------------------------------------ published formats
    def source_files(self, spec, download: bool) -> list[Path]:
        from ..models import hub

        return [hub.resolve_weights(spec, download=download)]  # .safetensors files too: a state dict, no more

    def convert(self, spec, files: list[Path]):
        """The file's state dict as srx's saved-model layout (``net.<key>``), with the detected architecture."""
        from ..models.checkpoints import ConvertedCheckpoint

        state = read_state_dict(files[0])
        descriptor = describe(state, files[0])
        seen: set[int] = set()
        tensors = {}
        for key, value in state.items():  # safetensors stores no tensors that share memory: copy those
            ptr = value.untyped_storage().data_ptr()
            tensors[f"net.{key}"] = value.clone() if ptr in seen and value.numel() else value
            seen.add(ptr)
        return ConvertedCheckpoint(tensors=tensors, source_format=spec.format,
                                   net={"architecture": descriptor.architecture.name, "scale": int(descriptor.scale),
                                        "tiling": descriptor.tiling.name.lower()})

    def check_import(self, spec, file: Path) -> None:
        self._check_scale(spec, describe(read_state_dict(file), file), file)

    def verify(self, spec, converted: Path | None) -> str:
        from ..models import hub

        path = hub.resolve_weights(spec, download=False)
        descriptor = describe(read_state_dict(path), path)
        self._check_scale(spec, descriptor, path)
        return (f"{spec.name}: {path} OK ({descriptor.architecture.name} x{descriptor.scale}, sha256 "
                f"{hub.sha256_file(path)})" + (f"; converted copy {converted} OK" if converted else ""))

    @staticmethod
    def _check_scale(spec, descriptor, where) -> None:
        if descriptor.scale != spec.defaults.scale:
            raise CheckpointFormatError(f"{where}: a x{descriptor.scale} {descriptor.architecture.name} model, but "
                                        f"{spec.name} is x{spec.defaults.scale:g}")

    # ------------------------------------------------------------------ the network
    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        from ..engine.classic import ClassicSR

        state = ckpt.component_state("net")
        where = spec.weights.path if spec.weights is not None and spec.weights.path else spec.name
        descriptor = describe(state, where)
        self._check_scale(spec, descriptor, where)
        return ClassicSR(descriptor)

    # ------------------------------------------------------------------ upscaling
    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        """Tiles of the LR image in [0, 1] (8-bit inputs as value / 255, 16-bit as they are); ``--tile`` and
        ``--overlap`` are output pixels, as for every family, so the LR tile is ``tile / scale``."""
        from ..engine.resize import pil_resize, to_unit_float

        sf = model.net.scale
        lr = to_unit_float(lr.cpu()).clamp(0, 1)
        tile = max(opts.tile // sf, 1) if opts.tile else 0
        overlap = min(opts.overlap // sf, max(tile - 1, 0))

        def tile_fn(crops):
            return model.net(crops.to(model.device, non_blocking=True)).cpu()

        return TilePlan(lr, tile_fn, tile, overlap, lambda: pil_resize(lr, *size), scale=sf, out_channels=3)

    # ------------------------------------------------------------------ bench and descriptions
    def stages(self, net) -> dict[str, Any]:
        return {"network": net.unet}

    def flops_call(self, model, tile: int):
        import torch

        lr_tile = max(tile // model.net.scale, 1)
        x = torch.zeros(1, 3, lr_tile, lr_tile, device=model.device)
        return lambda: model.net(x)

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        return [("network", "detected from the weights by spandrel (one forward pass, no diffusion steps)")]


FAMILY = SpandrelFamily()
