"""The ``lite`` family: srx's own small CPU model (embedded in the package, ``engine/lite.py``): pixel-unshuffle,
one x0 step of a small UNet, pixel-shuffle. No text, no timestep; tiles of the upsampled input in output space.
"""

from __future__ import annotations

from .base import ModelFamily, TilePlan, output_space_plan


class LiteFamily(ModelFamily):
    name = "lite"

    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        from ..engine.lite import OneStepLite

        return OneStepLite.from_checkpoint(ckpt)

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        from ..engine.resize import upsample_input

        reference = upsample_input(lr.cpu(), *size)
        return output_space_plan(model, reference, opts, model.net)

    def flops_call(self, model, tile: int):
        import torch

        x = torch.zeros(1, 3, tile, tile, device=model.device)
        return lambda: model.net(x)


FAMILY = LiteFamily()
