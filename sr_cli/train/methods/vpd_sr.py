"""VPD-SR: ``distill`` + 0.1 ``hfp`` (one-level Haar DWT of student and teacher latents, MSE of the LH/HL/HH
bands) + 1 ``clip_sem`` (1 - cos of CLIP image embeddings of the decoded SR and the GT) + 0.1 ``adv`` (hinge;
a PatchGAN discriminator on latents, ``aux``, with its own optimizer: real = GT latent)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .base import CLIPOptions
from .resshift_student import ResShiftStudentMethod

if TYPE_CHECKING:
    from ..config import TrainConfig


def haar_high_bands(z: torch.Tensor) -> torch.Tensor:
    """One-level orthonormal Haar DWT of ``(B, C, H, W)`` (H, W even): the LH, HL, HH bands, ``(B, 3C, H/2, W/2)``."""
    a, b = z[:, :, 0::2, 0::2], z[:, :, 0::2, 1::2]
    c, d = z[:, :, 1::2, 0::2], z[:, :, 1::2, 1::2]
    lh = (a - b + c - d) / 2  # horizontal detail
    hl = (a + b - c - d) / 2  # vertical detail
    hh = (a - b - c + d) / 2  # diagonal detail
    return torch.cat([lh, hl, hh], dim=1)


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix) on latents: two stride-2 4x4 convolutions, then 3x3 ones (small latents stay valid)."""

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.GroupNorm(32 if 2 * w % 32 == 0 else 1, 2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 3, 1, 1), nn.GroupNorm(32 if 4 * w % 32 == 0 else 1, 4 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 1, 3, 1, 1),
        )

    def score(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hinge loss of the discriminator."""
        loss = F.relu(1 - self.score(real)).mean() + F.relu(1 + self.score(fake.detach())).mean()
        return {"disc": loss, "total": loss}


class VPDSRMethod(ResShiftStudentMethod):
    """The CLIP loss and the discriminator exist only when weighted (weight 0: not built, not computed)."""

    name = "vpd-sr"
    summary = "VPD-SR: distillation + high-frequency + CLIP semantic + adversarial losses"
    paper = "VPD-SR: one-step distillation of ResShift with high-frequency, semantic and adversarial losses"
    defaults = {**ResShiftStudentMethod.defaults, "lr_aux": 5e-5}
    loss_weights = {"distill": 1.0, "hfp": 0.1, "clip_sem": 1.0, "adv": 0.1}

    @dataclass
    class Options(ResShiftStudentMethod.Options, CLIPOptions):
        pass

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        super().__init__(cfg, base_dir)
        from ..perceptual import CLIPPerception

        self.clip = CLIPPerception.load(self.options.clip_model, (), cfg.perceptual_pretrained) if self.weight("clip_sem") else None
        if self.weight("adv"):
            self.aux = PatchDiscriminator(self.net.unet.config.out_channels)

    def loss_terms(self, lq, hq, clean=None):
        s = self.prepare(lq, hq)
        terms = {"distill": F.mse_loss(s["z_student"], s["z_teacher"]),
                 "hfp": F.mse_loss(haar_high_bands(s["z_student"]), haar_high_bands(s["z_teacher"]))}
        if self.clip is not None:
            sr = self.decode_grad(s["z_student"])
            with torch.no_grad():
                gt_emb = self.clip.embed(hq)
            terms["clip_sem"] = self.clip.id_sal(self.clip.embed(sr), gt_emb)
        aux_inputs = None
        if self.aux is not None:
            terms["adv"] = -self.aux.score(s["z_student"]).mean()
            with torch.no_grad():
                z_gt = self.net.encode_x0(hq * 2 - 1)
            aux_inputs = (z_gt, s["z_student"].detach())
        return terms, aux_inputs
