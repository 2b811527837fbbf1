"""The AdcSR family: OSEDiff compressed into one forward pass (no VAE encoder, no text, no timestep; channels cut
to 3/4) on the low-resolution image, then a pruned VAE decoder (``engine/adcsr.py``, ``nets/adcsr.py``; Chen et
al., CVPR 2025, arXiv:2411.13383).

Two published files in the authors' Hub repository: ``net_params_200.pkl`` (the state dict of their
``DataParallel(Net)``) and ``halfDecoder.ckpt`` (the pruned decoder, whose up blocks finish the network; the
manifest's ``[NAME.autoencoder]``). The base model contributes only its UNet's configuration (the architecture
that was compressed). Upscaling as the authors' ``test.py``: the 8-bit image / 255 in [-1, 1], no upsampling
(the network works on the LR image), the output normalised to the input's per-channel mean and standard
deviation, ``ToPILImage``'s truncation. An image larger than one tile is cut in LR space; each tile is then
normalised with its own output statistics (the authors normalise the whole image: equal for one tile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..errors import CheckpointFormatError, UnknownModelError
from .base import ModelFamily, TilePlan

ADCSR_FORMAT = "adcsr-pkl"
DECODER_PARTS = ("up_blocks.", "conv_norm_out.", "conv_out.")  # what halfDecoder.ckpt adds to the network


def convert_adcsr(ckpt: dict, path: Path):
    """``net_params_200.pkl``: the authors' ``Net`` state dict (``module.`` prefixed), without the decoder's
    up blocks (``halfDecoder.ckpt``) and without the aliases of its UNet blocks."""
    import torch

    from ..engine.adcsr import ALIAS_PREFIX
    from ..models.checkpoints import ConvertedCheckpoint

    tensors = {}
    for k, v in ckpt.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointFormatError(f"{path}: entry {k!r} is not a tensor")
        name = k.removeprefix("module.")
        if not name.startswith(ALIAS_PREFIX):
            tensors[f"net.{name}"] = v
    if "net.body.1.conv_in.weight" not in tensors or "net.body.2.resnets.0.conv1.weight" not in tensors:
        raise CheckpointFormatError(f"{path}: not AdcSR's network (net_params_*.pkl: body.1 UNet, body.2 mid block)")
    return ConvertedCheckpoint(tensors=tensors, source_format=ADCSR_FORMAT)


def read_half_decoder(path: Path) -> dict[str, Any]:
    """``halfDecoder.ckpt`` (a training checkpoint with a ``state_dict`` of ``decoder.*`` keys): its up blocks and
    output layers, prefixed ``net.decoder.``."""
    import torch

    from ..models.checkpoints import safe_torch_load

    ckpt = safe_torch_load(path, "halfDecoder.ckpt")
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{path}: not AdcSR's pruned decoder (halfDecoder.ckpt has a state_dict)")
    out = {}
    for k, v in state.items():
        name = k.removeprefix("decoder.")
        if k.startswith("decoder.") and name.startswith(DECODER_PARTS) and isinstance(v, torch.Tensor):
            out[f"net.decoder.{name}"] = v
    if "net.decoder.conv_out.weight" not in out:
        raise CheckpointFormatError(f"{path}: no decoder.conv_out in its state_dict: not AdcSR's halfDecoder.ckpt")
    return out


class AdcSRFamily(ModelFamily):
    name = "adcsr"
    formats: ClassVar = {ADCSR_FORMAT: convert_adcsr}

    def detect(self, obj: Any) -> str | None:
        keys = obj.keys() if isinstance(obj, dict) else ()
        return ADCSR_FORMAT if any(str(k).endswith("body.1.conv_in.weight") for k in keys) else None

    def source_files(self, spec, download: bool) -> list[Path]:
        """``net_params_200.pkl`` and ``halfDecoder.ckpt``: one converted model directory, keyed by both hashes."""
        from ..models import hub

        if spec.autoencoder is None:
            raise UnknownModelError(f"model {spec.name!r} names no [autoencoder] file (AdcSR's halfDecoder.ckpt)")
        return [*super().source_files(spec, download),
                hub.resolve_weights(hub.autoencoder_spec(spec), download=download)]

    def convert(self, spec, files: list[Path]):
        ckpt = super().convert(spec, files[:1])
        ckpt.tensors |= read_half_decoder(files[1])
        return ckpt

    def verify(self, spec, converted: Path | None) -> str:
        line = super().verify(spec, converted)
        from ..models import hub

        path = hub.resolve_weights(hub.autoencoder_spec(spec), download=False)
        read_half_decoder(path)
        return f"{line}; decoder {path} OK"

    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        from ..engine.adcsr import AdcSR

        if spec.base is None:
            raise UnknownModelError(f"model {spec.name!r} names no base model; pass --base")
        return AdcSR.from_checkpoint(unet_config(spec.base, spec.name, download), ckpt)

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        import torch

        from ..engine.resize import pil_resize, to_unit_float

        unit = to_unit_float(lr.cpu()).clamp(0, 1)
        x = unit * 2 - 1
        stats = (x.mean(dim=[2, 3], keepdim=True), x.std(dim=[2, 3], keepdim=True))  # the whole image's

        def tile_fn(crops: torch.Tensor) -> torch.Tensor:
            y = model.net(crops.to(model.device, non_blocking=True) * 2 - 1, stats)
            return y.add_(1).mul_(0.5).cpu()

        sf = int(model.native_scale)
        return TilePlan(unit, tile_fn, opts.tile // sf, opts.overlap // sf, lambda: pil_resize(unit, *size),
                        scale=sf, out_channels=3, authors_8bit_levels=lr.dtype == torch.uint8)

    def stages(self, net) -> dict[str, Any]:
        return {"unet": net.unet, "decode": net.decoder}

    def flops_call(self, model, tile: int):
        import torch

        x = torch.zeros(1, 3, tile // 4, tile // 4, device=model.device)
        return lambda: model.net(x)

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        return [("steps", "one forward pass (no timestep, no text)"),
                ("output", "normalised to the input's per-channel mean and standard deviation")]


def unet_config(base, model_name: str, download: bool) -> dict:
    """The base model's UNet configuration (only the architecture: AdcSR's file holds every weight)."""
    import json

    from ..models import hub

    if base.path:
        path = Path(base.path).expanduser() / "unet" / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(base.repo, "unet/config.json", revision=base.revision,
                                        local_files_only=not download or hub.offline()))
        except Exception:  # noqa: BLE001 - huggingface_hub's not-cached and network errors
            path = hub.resolve_base(base, model_name, download=download) / "unet" / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointFormatError(f"{path}: not a readable UNet config ({e})") from None


FAMILY = AdcSRFamily()
