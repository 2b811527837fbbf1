"""srx's lite model: pixel L1 (Charbonnier) of the one-step x0 prediction in the pixel-unshuffle latent."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...errors import UsageError
from ...models.checkpoints import ConvertedCheckpoint
from ...models.registry import ModelSpec, get_spec
from .base import TrainMethod, at_least_one

if TYPE_CHECKING:
    from ..config import TrainConfig


class LiteMethod(TrainMethod):
    """A small x0-predicting UNet in the pixel-unshuffle latent, trained on a mix of Real-ESRGAN degradations
    and plain bicubic downsampling."""

    name = "lite"
    summary = "srx lite: pixel L1 of a small one-step UNet (no base model)"
    defaults = {"lr": 2e-4, "resolution": 128, "batch_size": 16, "bicubic_prob": 0.5, "weight_decay": 0.0}
    loss_weights = {"l1": 1.0}

    @dataclass
    class Options:
        lite_channels: list[int] = field(default_factory=lambda: [48, 96, 160])  # UNet widths, one per level
        lite_blocks: int = 2  # residual blocks per level and direction

        def __post_init__(self):
            at_least_one(self, "lite_blocks")
            if not self.lite_channels or min(self.lite_channels) < 1:
                raise UsageError(f"lite_channels must be positive widths, got {self.lite_channels!r}")

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        super().__init__(cfg)
        from ...engine.lite import OneStepLite
        from ...nets.lite import LiteUNet

        self.net_config = {"latent_factor": cfg.scale, "channels": list(self.options.lite_channels),
                           "blocks": self.options.lite_blocks}
        self.net = OneStepLite(LiteUNet(**self.net_config))
        self.net.dtype = torch.float32
        self.net.unet.requires_grad_(True)

    def loss_terms(self, lq, hq):
        from ...engine.resize import pil_resize

        # The engine upsamples with PIL's bicubic: train on exactly that input.
        h, w = hq.shape[-2:]
        x = torch.cat([pil_resize(lq[i : i + 1].detach().float().cpu(), h, w) for i in range(lq.shape[0])])
        sr = (self.net(x.to(hq.device) * 2 - 1) + 1) / 2
        return {"l1": ((sr - hq) ** 2 + 1e-6).sqrt().mean()}, None

    def checkpoint(self) -> ConvertedCheckpoint:
        tensors = {f"net.{k}": v.detach().cpu().clone() for k, v in self.net.unet.state_dict().items()}
        return ConvertedCheckpoint(tensors=tensors, net=self.net_config, source_format="srx")

    def model_spec(self) -> ModelSpec:
        embedded = get_spec("lite")  # the family's defaults: those of the embedded lite model
        return replace(embedded, name=Path(self.cfg.output).name, weights=None,
                       defaults=replace(embedded.defaults, scale=self.cfg.scale),
                       description="srx lite: small one-step x0 model in the pixel-unshuffle latent "
                                   "(trained with `srx train --method lite`)",
                       paper="", license="Apache-2.0")
