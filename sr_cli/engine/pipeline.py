"""``SRModel``: the one object every command runs (upscale, evaluate, validation in train/distill).

Steps for one image: check inputs -> the model's family plans the tiles (``sr_cli/families/``: SD-style families
upsample with PIL bicubic to the output size and tile in output space, 8-bit images given as uint8 tensors
through PIL's own 8-bit resize as the authors' scripts, 16-bit in float, with per-image conditions: text
embedding, timestep fixed or DTSM; the ResShift family tiles the LR image) -> tiles stream through the network
and are blended -> NaN check -> color fix on the whole image -> resize to a non-native scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..errors import NumericalError, OptionError, UsageError
from ..families import family_of
from ..models.spec import ModelSpec, prompt_extractor_for
from .color import apply_color_fix
from .options import UpscaleOptions
from .resize import output_size, pil_resize
from .tiling import run_tiled

if TYPE_CHECKING:  # the DAPE tagger (and its network code) is imported where a model uses it
    from .dape import DapeTagger


class SRModel:
    """A loaded one-step super-resolution model.

    >>> from sr_cli import load_model
    >>> model = load_model("osediff")
    >>> sr = model.upscale(Image.open("photo.jpg"))
    """

    def __init__(self, spec: ModelSpec, net: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 tagger: DapeTagger | None = None):
        """``net``: the network its family (``family_of(spec)``) built, with ``place(device, dtype)``."""
        self.spec = spec
        self.family = family_of(spec)
        self.net = net.place(device, dtype)
        self.device = device
        self.dtype = dtype
        # OSEDiff's DAPE prompt extractor (load_model loads it unless --prompt-extractor none).
        self.tagger = tagger.place(device, dtype) if tagger is not None else None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def native_scale(self) -> float:
        """The factor the model was trained for (x4 for every published model)."""
        return self.spec.defaults.scale

    def text_for(self, prompt: str, tags: str = "") -> str:
        """The text condition: the model's template filled with the tags (OSEDiff's DAPE) and the user prompt."""
        return self.spec.defaults.prompt_template.format(tags=tags, prompt=prompt)

    def tags_for(self, upsampled: torch.Tensor, options: UpscaleOptions | None = None) -> str:
        """DAPE's tags for the upsampled input ``(1, 3, H, W)`` in [0, 1] ("" when the extractor is off).

        Asking for ``dape`` from a model loaded without its tagger is an error, never a silent "no tags".
        """
        requested = (options or UpscaleOptions()).prompt_extractor
        if prompt_extractor_for(self.spec, requested) != "dape":
            return ""
        if self.tagger is None:
            if requested == "dape":
                raise OptionError("prompt_extractor", f"dape: {self.name} was loaded without its DAPE tagger "
                                                      f"(load_model(..., prompt_extractor='dape'))")
            return ""
        return self.tagger.tags(upsampled)[0]

    def prompt_for(self, upsampled: torch.Tensor, options: UpscaleOptions | None = None) -> str:
        """The exact text this model conditions on for this (upsampled, [0, 1]) image."""
        opts = (options or UpscaleOptions()).resolved(self.spec)
        return self.text_for(opts.prompt, self.tags_for(upsampled, options))

    def fixed_timestep(self) -> int | None:
        t = self.spec.defaults.timestep
        return None if t == "dtsm" else int(t)

    @torch.inference_mode()
    def upscale_tensor(self, lr: torch.Tensor, options: UpscaleOptions | None = None,
                       on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Super-resolve ``lr`` ``(1, 3, h, w)``; returns ``(1, 3, round(h*s), round(w*s))`` in [0, 1] on the CPU.

        ``lr`` is an 8-bit image as a uint8 tensor (0..255: upsampled exactly as the authors' scripts do, by PIL's
        8-bit bicubic) or a float tensor in [0, 1] (16-bit images: upsampled in float, no 8-bit rounding).
        """
        opts = (options or UpscaleOptions()).resolved(self.spec)
        if lr.dim() != 4 or lr.shape[:2] != (1, 3):
            raise UsageError(f"expected an RGB image tensor (1, 3, H, W), got {tuple(lr.shape)}")
        if lr.dtype != torch.uint8 and not lr.is_floating_point():
            raise UsageError(f"expected a uint8 (8-bit) or float image tensor, got {lr.dtype}")
        height, width = output_size(lr.shape[-2], lr.shape[-1], opts.scale)
        # The model runs at its native scale; other factors resize its result (Lanczos) afterwards, except in
        # families whose authors run any factor themselves (HYPIR upsamples the input by it).
        native_h, native_w = (height, width) if self.family.any_scale else output_size(lr.shape[-2], lr.shape[-1],
                                                                                       self.native_scale)
        self.family.check_sampler(self.spec, opts.sampler)
        plan = self.family.plan(self, lr, opts, (native_h, native_w), options)
        out = run_tiled(plan.source, plan.tile_fn, tile=plan.tile, overlap=plan.overlap, batch=opts.tile_batch,
                        out_channels=plan.out_channels, on_tile=on_tile, scale=plan.scale)
        out = out[:, :, :native_h, :native_w]
        self._check_finite(out)
        out = out.clamp_(0, 1)
        if plan.authors_8bit_levels:
            out = truncate_to_8bit(out)
        if opts.color_fix != "none" and not plan.color_fixed:
            out = apply_color_fix(opts.color_fix, out, plan.color_reference())
            if plan.authors_8bit_levels:
                out = truncate_to_8bit(out)
        if (native_h, native_w) != (height, width):
            out = pil_resize(out, height, width, Image.Resampling.LANCZOS)
        return out

    def compile_unet(self) -> None:
        """``torch.compile`` the denoiser, the bulk of every forward pass (CPU: lite 6% faster after an 18 s
        compilation; GPU: fuses the elementwise work around the convolutions and attention)."""
        self.net.unet = torch.compile(self.net.unet)

    def _check_finite(self, out: torch.Tensor) -> None:
        # One reduction instead of an elementwise isfinite map: the sum of values this size is finite exactly
        # when every value is (outputs are bounded, so a finite sum cannot overflow).
        if not torch.isfinite(out.sum()):
            raise NumericalError(f"the model produced NaN/inf values in {self.dtype} on {self.device}; "
                                 f"try --dtype fp32 or bf16")

    def upscale(self, image: Image.Image, options: UpscaleOptions | None = None, **kwargs) -> Image.Image:
        """Super-resolve an 8-bit PIL image (converted to RGB); keyword arguments are UpscaleOptions fields."""
        if kwargs:
            options = replace(options or UpscaleOptions(), **kwargs)
        x = pil_to_uint8(image.convert("RGB"))  # the 8-bit path
        return tensor_to_pil(self.upscale_tensor(x, options))


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as the engine's 8-bit input: ``(1, 3, H, W)`` uint8."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].contiguous()


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def truncate_to_8bit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in [0, 1] on the 8-bit levels ``torchvision.transforms.ToPILImage`` gives it (``x * 255``
    truncated), as ``k / 255``: writing it (rounded to nearest) then stores exactly those levels."""
    return x.mul(255).floor_().div_(255)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    # Rounded to nearest (SD-family results of 8-bit inputs are already on the authors' truncated levels).
    arr = (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr)
