"""The ``lite`` family in the engine: encode = pixel-unshuffle, one x0 step, decode = pixel-shuffle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointFormatError
from ..models.checkpoints import ConvertedCheckpoint
from ..nets.lite import LiteUNet
from .detail import DetailCurve
from .tensors import move_module, pad_to_multiple


class OneStepLite(nn.Module):
    """The embedded lite model: ``forward(x)`` maps an upsampled image in [-1, 1] to the SR image.

    With a detail weight set (``detail.*`` tensors beside ``net.*``, and ``net["detail"]``: the ``DetailCurve``
    of ``auto``), ``set_detail(a)`` loads the blend ``(1 - a) * net + a * detail`` into the running UNet
    (engine/detail.py). One image at a time, as every command runs a model.
    """

    def __init__(self, unet: LiteUNet, detail: tuple[dict[str, torch.Tensor], DetailCurve] | None = None):
        super().__init__()
        self.unet = unet
        self.curve = detail[1] if detail else None
        # Both sets in fp32 (the blend's precision), moved with the model; the UNet holds the blend.
        self._sets = None
        if detail:
            faithful = {k: v.detach().clone() for k, v in unet.state_dict().items()}
            self._sets = (faithful, detail[0])
        self.detail = 0.0

    @classmethod
    def from_checkpoint(cls, ckpt: ConvertedCheckpoint) -> "OneStepLite":
        if ckpt.net is None:
            raise CheckpointFormatError("lite checkpoint without its network config")
        config = dict(ckpt.net)
        curve = config.pop("detail", None)
        unet = LiteUNet(**config)
        state = ckpt.component_state("net")
        sharp = ckpt.component_state("detail")
        if bool(sharp) != (curve is not None):
            raise CheckpointFormatError("lite: a detail weight set needs both its tensors (detail.*) and its "
                                        "curve (checkpoint.net.detail)")
        try:
            unet.load_state_dict({k: v.float() for k, v in state.items()})
            if sharp:  # the same network: every key, every shape (named detail.* in torch's message)
                nn.ModuleDict({"detail": LiteUNet(**config)}).load_state_dict({f"detail.{k}": v
                                                                               for k, v in sharp.items()})
        except RuntimeError as e:
            raise CheckpointFormatError(f"lite: {str(e).splitlines()[0]}") from None
        detail = None
        if sharp:
            try:
                detail = ({k: v.float() for k, v in sharp.items()}, DetailCurve(**curve))
            except TypeError as e:
                raise CheckpointFormatError(f"lite: checkpoint.net.detail: {e}") from None
        return cls(unet, detail).eval().requires_grad_(False)

    @property
    def has_detail(self) -> bool:
        return self._sets is not None

    def place(self, device: torch.device, dtype: torch.dtype) -> "OneStepLite":
        self.compute_device, self.dtype = device, dtype
        move_module(self.unet, device, dtype, "lite")
        if self._sets is not None:
            self._sets = tuple({k: v.to(device) for k, v in s.items()} for s in self._sets)
        return self

    @torch.no_grad()
    def set_detail(self, amount: float) -> None:
        """Run the blend ``(1 - amount) * faithful + amount * sharp`` from now on (0: exactly the faithful set)."""
        if self._sets is None:
            raise ValueError("this lite model has no detail weight set")
        if amount == self.detail:
            return
        faithful, sharp = self._sets
        unet = getattr(self.unet, "_orig_mod", self.unet)  # under torch.compile (SRModel.compile_unet)
        for name, param in unet.state_dict(keep_vars=True).items():
            param.copy_(faithful[name] if amount == 0 else torch.lerp(faithful[name], sharp[name], amount))
        self.detail = amount

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

