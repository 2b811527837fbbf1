"""Dual-LoRA one-step SD (PiSA-SR, Sun et al., CVPR 2025, arXiv:2412.03017): a pixel-level and a semantic-level
LoRA on one UNet, the output latent as the input latent minus a predicted residual.

For a batch ``x`` in [-1, 1] (the paper's Eq. 9 and its code's ``PiSASR_eval``)::

    z     = vae.encode(x).mean * scaling_factor          (a posterior sample when a generator is given)
    r_pix = unet_{base + pixel LoRA}(z, t=1, "")
    r_all = unet_{base + pixel LoRA + semantic LoRA}(z, t=1, "")
    r     = l_pix * r_pix + l_sem * (r_all - r_pix)        (l_pix = l_sem = 1: r = r_all, one UNet pass)
    y     = vae.decode((z - r) / scaling_factor).clamp(-1, 1)

Both LoRAs are folded into the UNet's weights (the default setting runs as fast as OSEDiff). The pixel-only
pass subtracts the semantic LoRA on the fly: a second copy of it at scale -1, active only during that pass,
so no second copy of the UNet's weights is kept (the authors keep one and swap weights).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from ..models.checkpoints import ConvertedCheckpoint
from ..models.lora import attach_adapters, load_component_state
from .sd_onestep import OneStepSD

# The paper's default setting: both LoRAs at full strength, one UNet pass.
DEFAULT_GUIDANCE = (1.0, 1.0)
SEMANTIC_SUFFIX = "_sem"  # the published adapter names: default_{encoder,decoder,others}_{pix,sem}
REMOVAL_SUFFIX = "_removed"


def semantic_adapters(ckpt: ConvertedCheckpoint):
    return [a for a in ckpt.unet_adapters if a.name.endswith(SEMANTIC_SUFFIX)]


class DualLoRASD(OneStepSD):
    """``OneStepSD`` whose latent step is PiSA-SR's residual with adjustable pixel/semantic guidance."""

    @classmethod
    def from_pretrained(cls, base_dir: str | Path, ckpt: ConvertedCheckpoint | None = None, merge_lora: bool = True,
                        needs_text_encoder: bool = True) -> DualLoRASD:
        ckpt = ckpt or ConvertedCheckpoint()
        model = super().from_pretrained(base_dir, ckpt, merge_lora=merge_lora, needs_text_encoder=needs_text_encoder)
        # The semantic LoRA's own weights (rank-r matrices, small), for its removal copy attached on first use:
        # the default setting never pays for peft wrappers that stay inactive.
        semantic = semantic_adapters(ckpt)
        model._removal = [replace(a, name=a.name + REMOVAL_SUFFIX) for a in semantic]
        model._removal_state = {}
        for a in semantic:
            tag = f".{a.name}."
            model._removal_state |= {k.replace(tag, f".{a.name}{REMOVAL_SUFFIX}."): v
                                     for k, v in ckpt.component_state("unet").items() if tag in k and ".lora_" in k}
        model._active = [] if merge_lora else [a.name for a in ckpt.unet_adapters]  # what the default pass runs
        model._lora_layers = None
        return model

    def _attach_removal(self) -> None:
        """Attach the semantic LoRA again, at scale -1, inactive: switched on it leaves base + pixel LoRA."""
        from peft.tuners.lora import LoraLayer

        attach_adapters(self.unet, self._removal)  # peft puts it on the device and in the dtype of each layer
        load_component_state(self.unet, self._removal_state, "unet")
        self._lora_layers = [m for m in self.unet.modules() if isinstance(m, LoraLayer)]
        for layer in self._lora_layers:
            for a in self._removal:
                layer.set_scale(a.name, -1.0)
        self._activate(self._active)
        self.unet.requires_grad_(False)

    def _activate(self, names: list[str]) -> None:
        for layer in self._lora_layers:
            layer.set_adapter(names, inference_mode=True)

    @contextmanager
    def pixel_only(self):
        """The UNet as base + pixel LoRA while inside (the semantic LoRA subtracted on the fly)."""
        if self._lora_layers is None:
            self._attach_removal()
        self._activate(self._active + [a.name for a in self._removal])
        try:
            yield self.unet
        finally:
            self._activate(self._active)

    def latent_step(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                    guidance: tuple[float, float] | None = None) -> torch.Tensor:
        """``z - r`` with ``r`` the guided residual (module docstring); ``guidance`` = (pixel, semantic)."""
        pixel, semantic = DEFAULT_GUIDANCE if guidance is None else guidance
        zin = z.to(self.dtype)
        if (pixel, semantic) == DEFAULT_GUIDANCE:
            residual = self.unet(zin, t, encoder_hidden_states=cond).sample.float()
        else:
            full = None if semantic == 0 else self.unet(zin, t, encoder_hidden_states=cond).sample.float()
            with self.pixel_only() as unet:
                pix = unet(zin, t, encoder_hidden_states=cond).sample.float()
            # As the authors' code orders it: the semantic part is the difference of the two passes.
            residual = pixel * pix if full is None else pixel * pix + semantic * (full - pix)
        return z.float() - residual
