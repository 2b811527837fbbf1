"""The ``lite`` family in the engine: encode = pixel-unshuffle, one x0 step, decode = pixel-shuffle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointFormatError
from ..models.checkpoints import ConvertedCheckpoint
from ..nets.lite import LiteUNet
from .tensors import move_module, pad_to_multiple


class OneStepLite(nn.Module):
    """The embedded lite model: ``forward(x)`` maps an upsampled image in [-1, 1] to the SR image."""

    def __init__(self, unet: LiteUNet):
        super().__init__()
        self.unet = unet

    @classmethod
    def from_checkpoint(cls, ckpt: ConvertedCheckpoint) -> "OneStepLite":
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
        move_module(self.unet, device, dtype, "lite")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: bicubic-upsampled LR in [-1, 1], any size; returns the SR image in [-1, 1]."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.unet.multiple)
        z_t = pixel_unshuffle_like_weights(x.to(self.dtype), self.unet.latent_factor, self.unet.conv_in.weight)
        x0 = self.unet(z_t).clamp_(-1, 1)  # in place before the shuffle's copy: one image-sized pass fewer
        return F.pixel_shuffle(x0, self.unet.latent_factor)[:, :, :h, :w].float()


def pixel_unshuffle_like_weights(x: torch.Tensor, factor: int, weight: torch.Tensor) -> torch.Tensor:
    """``F.pixel_unshuffle`` (the exact, lossless latent; ``x_T = y``), laid out in memory as the first
    convolution's weights are: in channels_last it is written NHWC in its one copy (no second conversion)."""
    if not weight.is_contiguous(memory_format=torch.channels_last) or weight.is_contiguous():
        return F.pixel_unshuffle(x, factor)
    b, c, h, w = x.shape
    # Channel index c * f^2 + i * f + j, as pixel_unshuffle orders it, becomes the innermost dimension.
    nhwc = x.reshape(b, c, h // factor, factor, w // factor, factor).permute(0, 2, 4, 1, 3, 5)
    return nhwc.reshape(b, h // factor, w // factor, c * factor * factor).permute(0, 3, 1, 2)

