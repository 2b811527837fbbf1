"""AdcSR at inference (arXiv:2411.13383; the network in ``nets/adcsr.py``): no diffusion step left, one forward pass
of the compressed network on the low-resolution image in [-1, 1], then the authors' global color normalisation::

    y = net(x)                                              (x: the LR image, y: 4x larger)
    y = (y - mean(y)) / std(y) * std(x) + mean(x)           per channel, over the whole image (unbiased std)

Sides are padded (reflect) to the network's multiple (16 for SD 2.1's three downsamplings after the
PixelUnshuffle) and cropped back before the normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import CheckpointFormatError
from ..nets.adcsr import AdcSRNet
from .tensors import move_module, pad_to_multiple

# The authors' Net registers the UNet's blocks twice (``unet.body`` lists them again): the converted file keeps
# one copy, the other names are these aliases.
ALIAS_PREFIX = "body.1.body."


class AdcSR(nn.Module):
    def __init__(self, net: AdcSRNet):
        super().__init__()
        self.net = net
        unet = net.body[1]
        self.multiple = 2 * 2 ** sum(b.downsamplers is not None for b in unet.down_blocks)
        self.unet = unet  # the bench's stage names
        self.decoder = net.decoder

    @classmethod
    def from_checkpoint(cls, unet_config: dict, ckpt) -> "AdcSR":
        net = AdcSRNet(unet_config)
        state = ckpt.component_state("net")
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise CheckpointFormatError(f"net: {str(e).splitlines()[0]}") from e
        missing = [k for k in missing if not k.startswith(ALIAS_PREFIX)]
        if missing or unexpected:
            raise CheckpointFormatError(f"the weights do not fit the AdcSR network (missing {missing[:3]}, "
                                        f"unexpected {unexpected[:3]})")
        return cls(net).eval().requires_grad_(False)

    def place(self, device: torch.device, dtype: torch.dtype) -> "AdcSR":
        self.device, self.dtype = device, dtype
        move_module(self.net, device, dtype)
        return self

    def forward(self, x: torch.Tensor, reference_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """SR of ``x`` ``(B, 3, h, w)`` in [-1, 1]: ``(B, 3, 4h, 4w)`` in [-1, 1] (not clamped), float32, normalised to
        ``reference_stats`` ``(mean, std)`` (per channel; by default ``x``'s own)."""
        h, w = x.shape[-2:]
        y = self.net(pad_to_multiple(x, self.multiple).to(self.dtype)).float()[:, :, : 4 * h, : 4 * w]
        if reference_stats is None:
            reference_stats = (x.float().mean(dim=[2, 3], keepdim=True), x.float().std(dim=[2, 3], keepdim=True))
        mean, std = (s.to(y.device) for s in reference_stats)
        return (y - y.mean(dim=[2, 3], keepdim=True)) / y.std(dim=[2, 3], keepdim=True) * std + mean
