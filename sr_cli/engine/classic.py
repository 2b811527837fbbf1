"""Classic feed-forward SR networks (Real-ESRGAN, SwinIR, ... as spandrel builds them) in the engine.

One forward pass maps an LR tile in [0, 1] to its SR, ``scale`` times larger. The network itself comes from the
``spandrel`` package (its architecture detection and its ``nn.Module``s, MIT): srx only reads the weights safely,
places the network and feeds it tiles (``families/spandrel_family.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The dtypes spandrel says an architecture runs in (its ``supports_half``/``supports_bfloat16``); others run in fp32.
_HALF_FLAGS = {torch.float16: "supports_half", torch.bfloat16: "supports_bfloat16"}


class ClassicSR(nn.Module):
    """A spandrel ``ImageModelDescriptor`` as an engine network: ``forward(x)`` on a ``(B, 3, h, w)`` tile batch in
    [0, 1] returns ``(B, 3, scale*h, scale*w)`` float32 in [0, 1]."""

    def __init__(self, descriptor: Any):
        super().__init__()
        self.descriptor = descriptor
        # The network as a submodule: the bench times it, ``SRModel.compile_unet`` compiles it (as every
        # engine names its main network).
        self.unet = descriptor.model.eval().requires_grad_(False)
        self.scale = int(descriptor.scale)
        self.dtype = torch.float32

    @property
    def architecture(self) -> str:
        return self.descriptor.architecture.name

    def place(self, device: torch.device, dtype: torch.dtype) -> ClassicSR:
        """Move and cast; a half precision the architecture does not support (SwinIR in fp16) runs in fp32."""
        flag = _HALF_FLAGS.get(dtype)
        if flag is not None and not getattr(self.descriptor, flag):
            dtype = torch.float32
        self.descriptor.to(device=device, dtype=dtype)
        self.compute_device, self.dtype = device, dtype
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.unet is self.descriptor.model:  # spandrel pads to the architecture's size requirements
            return self.descriptor(x).float()
        return self._compiled_forward(x).float()

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The descriptor's call with the compiled network: pad (reflect, then replicate past the image's own
        size) to the architecture's size requirements, run, clamp, crop."""
        h, w = x.shape[-2:]
        pad_w, pad_h = self.descriptor.size_requirements.get_padding(w, h)
        if pad_w or pad_h:
            rw, rh = min(pad_w, w - 1), min(pad_h, h - 1)
            x = F.pad(x, (0, rw, 0, rh), mode="reflect")
            x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
        out = self.unet(x).clamp_(0, 1)
        return out[..., : h * self.scale, : w * self.scale]
