"""The ``lite`` family in the engine: encode = pixel-unshuffle, one x0 step, decode = pixel-shuffle."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import OneStepCheckpoint
from ..errors import CheckpointFormatError
from ..nets.lite import LiteUNet
from .sd_onestep import _move, pad_to_multiple


class OneStepLite(nn.Module):
    """Same interface as ``OneStepSD`` (what ``SRModel`` calls), for the embedded lite model."""

    def __init__(self, unet: LiteUNet):
        super().__init__()
        self.unet = unet
        self.dtsm = None
        self.learned_text_embedding = None

    @classmethod
    def from_checkpoint(cls, ckpt: OneStepCheckpoint) -> "OneStepLite":
        if ckpt.net is None:
            raise CheckpointFormatError("lite checkpoint without its network config")
        unet = LiteUNet(**ckpt.net)
        state = {k[len("net."):]: v.float() for k, v in ckpt.tensors.items() if k.startswith("net.")}
        try:
            unet.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointFormatError(f"lite: {str(e).splitlines()[0]}") from None
        return cls(unet).eval().requires_grad_(False)

    def place(self, device: torch.device, dtype: torch.dtype) -> "OneStepLite":
        self.compute_device, self.dtype = device, dtype
        _move(self.unet, device, dtype)
        return self

    def choose_timesteps(self, x: torch.Tensor, fixed) -> torch.Tensor:
        return torch.zeros(x.shape[0], device=x.device)  # one step; the net takes no timestep

    def text_condition(self, text) -> torch.Tensor:
        return torch.zeros(1)  # no text condition

    def forward(self, x: torch.Tensor, timesteps=None, text_embedding=None, generator=None) -> torch.Tensor:
        """``x``: bicubic-upsampled LR in [-1, 1], any size; returns the SR image in [-1, 1]."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.unet.multiple)
        z_t = F.pixel_unshuffle(x.to(self.dtype), self.unet.latent_factor)  # exact, lossless latent; x_T = y
        x0 = self.unet(z_t).clamp_(-1, 1)  # in place before the shuffle's copy: one image-sized pass fewer
        return F.pixel_shuffle(x0, self.unet.latent_factor)[:, :, :h, :w].float()


def embedded_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("sr_cli").joinpath("weights", "lite")))
