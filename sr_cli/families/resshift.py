"""The ResShift family (ResShift, SinSR, HF-Diff, VPD-SR): a Swin-UNet denoiser with residual shifting in a VQ-f4
latent (``engine/resshift.py``). Two published files per model, a denoiser and the autoencoder
(``checkpoints_resshift.py`` reads them). The network conditions on the LR image, so tiles are cut in LR space and
their results (x the model's factor) blended; it has multi-step samplers besides one step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UnknownModelError
from .base import SAMPLERS, ModelFamily, TilePlan


class ResShiftFamily(ModelFamily):
    name = "resshift"
    samplers = SAMPLERS

    def source_files(self, spec, download: bool) -> list[Path]:
        """The denoiser and the autoencoder: one converted model directory, keyed by both hashes."""
        from ..models import hub

        path = hub.resolve_weights(spec, download=download)
        if spec.autoencoder is None:
            raise UnknownModelError(f"model {spec.name!r} names no [autoencoder] weights file")
        return [path, hub.resolve_weights(hub.autoencoder_spec(spec), download=download)]

    def convert(self, spec, files: list[Path]):
        from ..models.checkpoints_resshift import read_resshift

        return read_resshift(*files)

    def check_import(self, spec, file: Path) -> None:
        from ..models.checkpoints_resshift import check_denoiser

        check_denoiser(file, spec.weights.filename)

    def verify(self, spec, converted: Path | None) -> str:
        from ..models.loading import load_converted_checkpoint

        load_converted_checkpoint(spec, download=False)  # both files read (converted once)
        return f"{spec.name}: weights, autoencoder{' and converted copy' if converted else ''} OK"

    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        from ..engine.resshift import ResShiftSR

        return ResShiftSR.from_checkpoint(ckpt)

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        """Tiles are cut from the LR image (the network conditions on it) and the prior noise is drawn once per
        image at LR resolution (seeded; seed 0 by default), so overlapping tiles start from the same x_T.

        As the authors' scripts: 8-bit images are read as float (value / 255); an image that fits in one tile (by
        default 512 LR pixels, their chop size) is padded to the network's multiple first (reflect) and its noise
        drawn over the padded size, as their ``randn_like`` of the padded latent (the same numbers for the same
        seed on the CPU); tiles that need padding get fresh noise there too (``ResShiftSR.sample``), never a
        mirror of the image's noise.
        """
        import torch

        from ..engine.resize import pil_resize, to_unit_float
        from ..engine.tensors import pad_to_multiple
        from ..engine.tiling import plan_tiles

        sf = int(model.native_scale)
        seed = 0 if opts.seed is None else opts.seed
        noise_gen = torch.Generator().manual_seed(seed)
        chain_gen = torch.Generator(device=model.device).manual_seed(seed + 1)
        lr = to_unit_float(lr.cpu()).clamp(0, 1)
        unpadded = lr
        tile, overlap = opts.tile // sf, opts.overlap // sf
        if len(plan_tiles(lr.shape[-2], lr.shape[-1], tile, overlap)) == 1:
            lr = pad_to_multiple(lr, model.net.multiple)
            tile = 0
        eps = torch.randn(lr.shape, generator=noise_gen)

        def tile_fn(crops: torch.Tensor) -> torch.Tensor:
            x = crops.to(model.device, non_blocking=True)
            x = torch.cat([x[:, :3] * 2 - 1, x[:, 3:]], dim=1)
            return model.net(x, opts.sampler, chain_gen).add_(1).mul_(0.5).cpu()  # a new tensor: in place

        return TilePlan(torch.cat([lr, eps], dim=1), tile_fn, tile, overlap,
                        lambda: pil_resize(unpadded, *size), scale=sf, out_channels=3)

    def stages(self, net) -> dict[str, Any]:
        return {"encode": net.vq.encoder, "unet": net.unet, "decode": net.vq.decoder}

    def flops_call(self, model, tile: int):
        import torch

        lr_tile = tile // int(model.native_scale)
        x = torch.zeros(1, 6, lr_tile, lr_tile, device=model.device)
        return lambda: model.net(x, "one-step")

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        return [("timestep", f"T-1 of the 15-step schedule, sampler {spec.defaults.sampler}")]


FAMILY = ResShiftFamily()
