"""``srx distill``: a multi-step ResShift-family teacher -> a one-step student (SinSR, VPD-SR, HF-Diff).

All three share the setup of SinSR's code: the student is a copy of a ResShift-family Swin-UNet,
the teacher's VQ autoencoder is kept frozen, and for an LR image ``y = VQ.encode(bicubic x4 LR)``,
``x_T = y + kappa sqrt(eta_T) eps``; the teacher runs its deterministic 15-step chain (no gradient)
from the same ``x_T``, the student predicts x0 at ``t = T-1``. Losses are MSE in latent space unless
said otherwise (per-sample mean, batch mean, as the authors' ``mean_flat``).

* ``sinsr``: ``distill`` = |S(x_T, T-1) - x0_teacher|^2; ``inverse`` = |S(x0_teacher, 0) - x_T|^2 (the same
  network, timestep 0 selects the reverse direction; its input is scaled with the T-1 factor as in the
  authors' code); ``consistency`` = |S(stopgrad(S(x0_gt, 0)), T-1) - x0_gt|^2 (GT latent, unquantized).
  Weights 1/1/1.
* ``vpd-sr``: ``distill`` + 0.1 ``hfp`` (one-level Haar DWT of student and teacher latents, MSE of the
  LH/HL/HH bands) + 1 ``clip_sem`` (1 - cos of CLIP image embeddings of the decoded SR and the GT) +
  0.1 ``adv`` (hinge; a PatchGAN discriminator on latents with its own optimizer: real = GT latent).
* ``hf-diff``: the SinSR losses + 0.2 ``inn`` (MSE of the invertible network's last-module features of
  the decoded SR and the GT; needs the authors' ``inn_pretrained.pt``) + 0.15 ``dino`` (Jensen-Shannon
  divergence between softmax distributions of DINOv2 CLS embeddings of SR and GT).

Image-space losses decode through the frozen VQ decoder with its straight-through quantizer, so the
gradient reaches the student.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import OneStepCheckpoint, safe_torch_load
from ..engine.resshift import ResShiftSR
from ..errors import UsageError
from .config import TrainConfig


def load_resshift_model(name: str, role: str) -> ResShiftSR:
    """A ResShift-family model by registry name or directory, on the CPU in fp32 (frozen)."""
    from ..loading import load_checkpoint, resolve_spec

    spec = resolve_spec(name)
    if spec.family != "resshift":
        raise UsageError(f"--{role} {name}: a {spec.family} model; distillation needs a ResShift-family model "
                         f"(resshift, sinsr, hf-diff or a directory written by srx distill)")
    return ResShiftSR.from_checkpoint(load_checkpoint(spec))


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


class CouplingModule(nn.Module):
    """HF-Diff's invertible block: ``b += I1(a)``; ``a = a * exp(I2(b)) + I3(b)`` on a channel split ``(a, b)``."""

    def __init__(self, channels: int, split: int):
        super().__init__()
        self.split = split
        rest = channels - split

        def two_layer(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1))

        self.i1, self.i2, self.i3 = two_layer(split, rest), two_layer(rest, split), two_layer(rest, split)

    def forward(self, x):
        a, b = x[:, : self.split], x[:, self.split :]
        b = b + self.i1(a)
        a = a * torch.exp(self.i2(b)) + self.i3(b)
        return torch.cat([a, b], dim=1)


class HighFrequencyINN(nn.Module):
    """HF-Diff's high-frequency feature extractor: a residual stem 3 -> N channels, K coupling modules.

    The paper gives N = 128 but not K or the split; the defaults (K = 3, split N/2) are srx's reading,
    and ``load`` refuses a weights file whose tensors do not fit this layout.
    """

    def __init__(self, channels: int = 128, modules: int = 3, split: int | None = None):
        super().__init__()
        self.stem_in = nn.Conv2d(3, channels, 3, 1, 1)
        self.stem = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1))
        self.blocks = nn.ModuleList(CouplingModule(channels, split or channels // 2) for _ in range(modules))

    def forward(self, x):
        h = self.stem_in(x)
        h = h + self.stem(h)
        for block in self.blocks:
            h = block(h)
        return h

    @classmethod
    def load(cls, path: str | Path) -> "HighFrequencyINN":
        from ..checkpoints_resshift import unwrap_state_dict

        path = Path(path)
        state = unwrap_state_dict(safe_torch_load(path), path)
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
        if "stem_in.weight" not in state or not blocks:
            raise UsageError(f"{path}: not an INN weights file in srx's layout (stem_in.*, stem.*, blocks.K.i1/i2/i3.*)")
        channels = state["stem_in.weight"].shape[0]
        split = state["blocks.0.i1.0.weight"].shape[1]
        net = cls(channels, max(blocks) + 1, split)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise UsageError(f"{path}: INN weights do not fit ({str(e).splitlines()[0]})") from None
        return net


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of the softmax distributions of two ``(B, D)`` logit batches (batch mean)."""
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    m = 0.5 * (p + q)
    kl = lambda a, b: (a * (a.clamp_min(1e-12).log() - b.clamp_min(1e-12).log())).sum(-1)  # noqa: E731
    return (0.5 * kl(p, m) + 0.5 * kl(q, m)).mean()


class DINOEmbedder(nn.Module):
    """DINOv2 (transformers) CLS embedding of images in [0, 1] (ImageNet-normalised, resized to its input size)."""

    def __init__(self, name_or_path: str, pretrained: bool = True):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        if pretrained:
            self.model = Dinov2Model.from_pretrained(name_or_path)
        else:  # offline smoke runs and tests: a small random DINOv2
            torch.manual_seed(0)
            self.model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=64, image_size=56, patch_size=14))
        self.model.requires_grad_(False).eval()
        self.size = int(self.model.config.image_size)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return self.model(pixel_values=(x - self.mean) / self.std).pooler_output


class DistillMethod(nn.Module):
    """The student (``self.net``: the engine's ``ResShiftSR`` with the student UNet) and the frozen teacher."""

    name = "sinsr"

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        super().__init__()
        self.cfg = cfg
        teacher = load_resshift_model(cfg.teacher, "teacher")
        self.teacher_unet = teacher.unet.requires_grad_(False).eval()
        if cfg.student:
            student_init = load_resshift_model(cfg.student, "student").unet
        else:
            student_init = teacher.unet
        student = copy.deepcopy(student_init).requires_grad_(True)
        self.net = ResShiftSR(student, teacher.vq.requires_grad_(False).eval(), teacher.schedule)
        self.last_t = teacher.schedule.steps - 1

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.net.unet.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_unet.eval()
        self.net.vq.eval()
        return self

    # ------------------------------------------------------------------ shared pieces
    def student_at(self, z: torch.Tensor, t: int, lr: torch.Tensor) -> torch.Tensor:
        """The student on ``z`` scaled with the T-1 factor (the authors' code does so for both directions)."""
        scale = float(self.net.schedule.input_scale()[self.last_t])
        ts = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
        return self.net.unet(z * scale, ts, lr).float()

    def prepare(self, lq: torch.Tensor, hq: torch.Tensor) -> dict[str, torch.Tensor]:
        lr = lq * 2 - 1
        with torch.no_grad():
            y = self.net.encode_y(lr)
            x_t = self.net.prior(y, torch.randn_like(y))
            z_teacher = self.net.run_chain(y, lr, x_t, "deterministic", unet=self.teacher_unet)
        z_student = self.student_at(x_t, self.last_t, lr)
        return {"lr": lr, "y": y, "x_T": x_t, "z_teacher": z_teacher, "z_student": z_student}

    def sinsr_terms(self, s: dict[str, torch.Tensor], hq: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        terms = {"distill": F.mse_loss(s["z_student"], s["z_teacher"])}
        if c.w_inverse:
            terms["inverse"] = F.mse_loss(self.student_at(s["z_teacher"], 0, s["lr"]), s["x_T"])
        if c.w_consistency:
            with torch.no_grad():
                z_gt = self.net.encode_x0(hq * 2 - 1)
                x_t_gt = self.student_at(z_gt, 0, s["lr"])
            terms["consistency"] = F.mse_loss(self.student_at(x_t_gt, self.last_t, s["lr"]), z_gt)
        return terms

    def decode_grad(self, z: torch.Tensor) -> torch.Tensor:
        """Decode to [0, 1] with the gradient flowing through the (straight-through) quantizer."""
        return (self.net.vq.decode(z).sample.clamp(-1, 1) + 1) / 2

    def forward(self, lq: torch.Tensor, hq: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.prepare(lq, hq)
        terms = self.sinsr_terms(s, hq)
        c = self.cfg
        terms["total"] = (c.w_distill * terms["distill"] + c.w_inverse * terms.get("inverse", 0.0)
                          + c.w_consistency * terms.get("consistency", 0.0))
        return terms

    def export(self) -> tuple[dict[str, Any], OneStepCheckpoint]:
        tensors = {f"unet.{k}": v.detach().cpu().clone() for k, v in self.net.unet.state_dict().items()}
        tensors |= {f"vq.{k}": v.detach().cpu().clone() for k, v in self.net.vq.state_dict().items()}
        ckpt = OneStepCheckpoint(tensors=tensors, net=self.net.net_config(), source_format="srx")
        spec = {
            "family": "resshift",
            "format": "srx",
            "description": f"one-step student distilled from {self.cfg.teacher} with `srx distill --method {self.name}`",
            "paper": DISTILL_PAPERS[self.name],
            "license": "inherits the teacher's license (ResShift: S-Lab License 1.0, non-commercial)",
            "base": None,
            "defaults": {"scale": self.net.schedule.sf, "sampler": "one-step", "color_fix": "none", "tile": 512,
                         "overlap": 64, "prompt_template": ""},
        }
        return spec, ckpt


DISTILL_PAPERS = {
    "sinsr": "Wang et al., SinSR: Diffusion-Based Image Super-Resolution in a Single Step, CVPR 2024",
    "vpd-sr": "VPD-SR: one-step distillation of ResShift with high-frequency, semantic and adversarial losses",
    "hf-diff": "Sami et al., HF-Diff, arXiv:2411.13548",
}


class SinSRMethod(DistillMethod):
    name = "sinsr"


class VPDSRMethod(DistillMethod):
    """distill + 0.1 HFP + 1 CLIP semantic + 0.1 hinge adversarial (PatchGAN on latents, own optimizer)."""

    name = "vpd-sr"

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        super().__init__(cfg, base_dir)
        from .perceptual import CLIPPerception

        self.clip = CLIPPerception.load(cfg.clip_model, (), cfg.perceptual_pretrained) if cfg.w_clip_sem else None
        self._aux_ref = [PatchDiscriminator(self.net.unet.config.out_channels)] if cfg.w_adv else []

    def forward(self, lq, hq):
        s = self.prepare(lq, hq)
        c = self.cfg
        terms = {"distill": F.mse_loss(s["z_student"], s["z_teacher"])}
        terms["hfp"] = F.mse_loss(haar_high_bands(s["z_student"]), haar_high_bands(s["z_teacher"]))
        total = c.w_distill * terms["distill"] + c.w_hfp * terms["hfp"]
        if self.clip is not None:
            sr = self.decode_grad(s["z_student"])
            with torch.no_grad():
                gt_emb = self.clip.embed(hq)
            terms["clip_sem"] = self.clip.id_sal(self.clip.embed(sr), gt_emb)
            total = total + c.w_clip_sem * terms["clip_sem"]
        if self._aux_ref:
            disc = self._aux_ref[0]
            terms["adv"] = -disc.score(s["z_student"]).mean()
            total = total + c.w_adv * terms["adv"]
            with torch.no_grad():
                z_gt = self.net.encode_x0(hq * 2 - 1)
            terms["aux_inputs"] = (z_gt, s["z_student"].detach())
        terms["total"] = total
        return terms


class HFDiffMethod(DistillMethod):
    """SinSR losses + 0.2 INN high-frequency perceptual + 0.15 JS divergence of DINOv2 embeddings."""

    name = "hf-diff"

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        if cfg.w_inn and not cfg.inn_weights:
            raise UsageError("--method hf-diff needs the authors' pretrained invertible network: pass --inn-weights "
                             "inn_pretrained.pt (from the HF-Diff repository's Google Drive), or --w-inn 0")
        super().__init__(cfg, base_dir)
        self.inn = HighFrequencyINN.load(cfg.inn_weights).requires_grad_(False).eval() if cfg.w_inn else None
        self.dino = DINOEmbedder(cfg.dino_model, cfg.perceptual_pretrained) if cfg.w_dino else None

    def train(self, mode: bool = True):
        super().train(mode)
        for m in (self.inn, self.dino):
            if m is not None:
                m.eval()
        return self

    def forward(self, lq, hq):
        s = self.prepare(lq, hq)
        terms = self.sinsr_terms(s, hq)
        c = self.cfg
        total = c.w_distill * terms["distill"] + c.w_inverse * terms.get("inverse", 0.0) \
            + c.w_consistency * terms.get("consistency", 0.0)
        if self.inn is not None or self.dino is not None:
            sr = self.decode_grad(s["z_student"])
            if self.inn is not None:
                with torch.no_grad():
                    gt_feat = self.inn(hq)
                terms["inn"] = F.mse_loss(self.inn(sr), gt_feat)
                total = total + c.w_inn * terms["inn"]
            if self.dino is not None:
                with torch.no_grad():
                    gt_emb = self.dino(hq)
                terms["dino"] = js_divergence(self.dino(sr), gt_emb)
                total = total + c.w_dino * terms["dino"]
        terms["total"] = total
        return terms
