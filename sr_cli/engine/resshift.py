"""The ResShift family (docs/engine.md): ResShift (15-step teacher) and its one-step students SinSR, HF-Diff, VPD-SR.

Residual shifting in the VQGAN-f4 latent, with ``y = VQ.encode(bicubic x4 of the LR)``::

    x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) eps          forward process
    x0_hat = net(x_t / sqrt(eta_t kappa^2 + 1), t, lr)          the network predicts x0
    x_T = y + kappa sqrt(eta_T) eps                             prior sample

Samplers (``ResShiftSR.sample``):

* ``one-step``: the students: ``x0_hat`` at ``t = T-1`` from ``x_T``, decoded.
* ``deterministic``: SinSR's DDIM-like chain over all T steps,
  ``x_{t-1} = k_t x0_hat + m_t x_t + j_t y`` with ``m_t = sqrt(eta_{t-1}/eta_t)``,
  ``j_t = eta_{t-1} - sqrt(eta_{t-1} eta_t)``, ``k_t = 1 - m_t - j_t``: the distillation teacher.
* ``stochastic``: ResShift's ancestral sampler, ``x_{t-1} ~ N(mean_t, kappa^2 eta_{t-1}/eta_t alpha_t)``,
  ``mean_t = (eta_{t-1}/eta_t) x_t + (alpha_t/eta_t) x0_hat``, ``alpha_t = eta_t - eta_{t-1}``.

Everything runs in LR space: the network sees the LR image at latent resolution, so tiles are cut from
the LR image and their x4 results blended (``SRModel``). Sides are reflect-padded to a multiple of 64 (the
prior noise of the padding is drawn fresh, as the authors' ``randn_like`` of the padded latent).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointFormatError
from ..models.checkpoints import ConvertedCheckpoint
from ..models.spec import SAMPLERS
from ..nets.swin_unet import SwinUNet, SwinUNetConfig
from ..nets.vqgan import VQ_F4_CONFIG, build_vq_model
from .tensors import move_module, pad_to_multiple


@dataclass(frozen=True)
class ResShiftSchedule:
    """The exponential eta schedule of ResShift; the defaults are the released v1 (15 steps, kappa 2)."""

    steps: int = 15
    kappa: float = 2.0
    min_noise_level: float = 0.04
    etas_end: float = 0.99
    power: float = 0.3
    sf: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def sqrt_etas(self) -> np.ndarray:
        """float64, as the authors compute it: geometric growth on a power-warped time axis."""
        start = min(self.min_noise_level / self.kappa, self.min_noise_level)
        growth = math.exp(math.log(self.etas_end / start) / (self.steps - 1))
        warped = np.linspace(0, 1, self.steps, endpoint=True) ** self.power * (self.steps - 1)
        return np.power(growth, warped) * start

    @property
    def etas(self) -> np.ndarray:
        return self.sqrt_etas ** 2

    @property
    def etas_prev(self) -> np.ndarray:
        return np.append(0.0, self.etas[:-1])

    def deterministic_coefficients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SinSR's ``(k_t, m_t, j_t)`` per step (float64); they sum to 1."""
        eta, prev = self.etas, self.etas_prev
        m = np.sqrt(prev / eta)
        j = prev - np.sqrt(prev * eta)
        return 1 - m - j, m, j

    def posterior(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ResShift's ``q(x_{t-1} | x_t, x0)``: ``(coef_xt, coef_x0, variance)`` per step (float64)."""
        eta, prev = self.etas, self.etas_prev
        alpha = eta - prev
        return prev / eta, alpha / eta, self.kappa ** 2 * prev / eta * alpha

    def input_scale(self) -> np.ndarray:
        """``1 / sqrt(eta_t kappa^2 + 1)``: the latent normalisation before the network."""
        return 1.0 / np.sqrt(self.etas * self.kappa ** 2 + 1)


def _at(values: np.ndarray, t: int, like: torch.Tensor) -> torch.Tensor:
    # Coefficients computed in float64 and used in float32 (as the authors), as scalars.
    return torch.tensor(float(values[t]), dtype=torch.float32, device=like.device)


class ResShiftSR(nn.Module):
    """A ResShift-family model: Swin-UNet denoiser + VQ-f4 autoencoder + schedule.

    ``sample(x, sampler, generator)`` maps a batch of LR tiles to SR tiles (both [-1, 1]);
    ``x`` has 6 channels: the LR image and the prior noise ``eps`` (so that noise is drawn once per image,
    at LR resolution, and tiles agree where they overlap).
    """

    def __init__(self, unet: SwinUNet, vq, schedule: ResShiftSchedule):
        super().__init__()
        self.unet = unet
        self.vq = vq
        self.schedule = schedule
        self.compute_device, self.dtype = torch.device("cpu"), torch.float32

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, ckpt: ConvertedCheckpoint) -> "ResShiftSR":
        if ckpt.net is None:
            raise CheckpointFormatError("resshift checkpoint without its network config")
        unet = SwinUNet(SwinUNetConfig.from_dict(ckpt.net.get("unet", {})))
        vq = build_vq_model(ckpt.net.get("vq") or VQ_F4_CONFIG)
        schedule = ResShiftSchedule(**ckpt.net.get("schedule", {}))
        for name, module in (("unet", unet), ("vq", vq)):
            state = {k: v.float() for k, v in ckpt.component_state(name).items()}
            try:
                module.load_state_dict(state)
            except RuntimeError as e:
                raise CheckpointFormatError(f"resshift {name}: {str(e).splitlines()[0]}") from None
        return cls(unet, vq, schedule).eval().requires_grad_(False)

    def net_config(self) -> dict:
        return {"unet": self.unet.config.to_dict(), "vq": dict(self.vq.config), "schedule": self.schedule.to_dict()}

    def place(self, device: torch.device, dtype: torch.dtype) -> "ResShiftSR":
        self.compute_device, self.dtype = device, dtype
        move_module(self.unet, device, dtype)
        move_module(self.vq, device, dtype, "vq")
        return self

    @property
    def multiple(self) -> int:
        return max(self.unet.multiple, 1)

    # ------------------------------------------------------------------ pieces (also used by distill)
    def encode_y(self, lr: torch.Tensor) -> torch.Tensor:
        """``y``: the VQ latent (unquantized) of the torch-bicubic x4 upsampled LR (no antialias, no clamp)."""
        up = F.interpolate(lr, scale_factor=self.schedule.sf, mode="bicubic", align_corners=False)
        return self.vq.encode(up.to(self.vq.dtype)).latents.float()

    def encode_x0(self, hr: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(hr.to(self.vq.dtype)).latents.float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> image in [-1, 1]; quantized to the codebook first, as the authors decode."""
        return self.vq.decode(z.to(self.vq.dtype)).sample.float().clamp(-1, 1)

    def prior(self, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        t = self.schedule.steps - 1
        return y + self.schedule.kappa * float(self.schedule.sqrt_etas[t]) * eps

    def predict_x0(self, x_t: torch.Tensor, t: int | torch.Tensor, lr: torch.Tensor, unet: nn.Module | None = None,
                   scale_step: int | None = None) -> torch.Tensor:
        """``x0_hat``; ``t`` an index (or a per-sample int64 tensor); ``unet`` defaults to this model's.
        ``scale_step``: the step whose input scale is applied (default ``t``; SinSR's distillation scales with
        ``T-1``'s in both directions)."""
        unet = unet or self.unet
        if isinstance(t, int):
            t = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        at = t if scale_step is None else torch.full_like(t, scale_step)
        scale = torch.from_numpy(self.schedule.input_scale()).float().to(x_t.device)[at].view(-1, 1, 1, 1)
        return unet(x_t * scale, t, lr).float()

    def deterministic_step(self, x0_hat: torch.Tensor, x_t: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        k, m, j = self.schedule.deterministic_coefficients()
        return _at(k, t, x_t) * x0_hat + _at(m, t, x_t) * x_t + _at(j, t, x_t) * y

    def deterministic_inverse_step(self, x0_hat: torch.Tensor, x_prev: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        """``x_t`` from ``x_{t-1}`` (t >= 1) given the same ``x0_hat``: the step solved for ``x_t``."""
        k, m, j = self.schedule.deterministic_coefficients()
        return (x_prev - _at(k, t, x_prev) * x0_hat - _at(j, t, x_prev) * y) / _at(m, t, x_prev)

    def run_chain(self, y: torch.Tensor, lr: torch.Tensor, x_t: torch.Tensor, sampler: str,
                  generator: torch.Generator | None = None, unet: nn.Module | None = None) -> torch.Tensor:
        """Latent x0 from the prior sample ``x_t`` (at ``T-1``) with the chosen sampler."""
        steps = self.schedule.steps
        if sampler == "one-step":
            return self.predict_x0(x_t, steps - 1, lr, unet)
        coef_xt, coef_x0, var = self.schedule.posterior()
        x0_hat = x_t
        for t in range(steps - 1, -1, -1):
            x0_hat = self.predict_x0(x_t, t, lr, unet)  # never clamped in latent space (authors' clip_denoised=False)
            if t == 0:
                break
            if sampler == "deterministic":
                x_t = self.deterministic_step(x0_hat, x_t, y, t)
            else:
                noise = torch.randn(x_t.shape, generator=generator, device=generator.device if generator else x_t.device)
                mean = _at(coef_xt, t, x_t) * x_t + _at(coef_x0, t, x_t) * x0_hat
                x_t = mean + _at(np.sqrt(var), t, x_t) * noise.to(x_t.device)
        return x0_hat

    # ------------------------------------------------------------------ inference on a tile batch
    def forward(self, x: torch.Tensor, sampler: str = "one-step", generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample(x, sampler, generator)

    def sample(self, x: torch.Tensor, sampler: str = "one-step", generator: torch.Generator | None = None) -> torch.Tensor:
        """``x``: ``(B, 6, h, w)`` = LR in [-1, 1] and prior noise; returns ``(B, 3, sf*h, sf*w)`` in [-1, 1]."""
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
        h, w = x.shape[-2:]
        lr, eps = pad_to_multiple(x[:, :3].float(), self.multiple), x[:, 3:6].float()
        if eps.shape[-2:] != lr.shape[-2:]:
            # As the authors' prior (``randn_like`` of the padded latent): fresh noise where the tile is padded.
            fresh = torch.randn(eps.shape[:2] + lr.shape[-2:], generator=generator,
                                device=generator.device if generator is not None else eps.device)
            fresh = fresh.to(eps.device)
            fresh[:, :, :h, :w] = eps
            eps = fresh
        y = self.encode_y(lr)
        z0 = self.run_chain(y, lr.to(self.dtype), self.prior(y, eps), sampler, generator)
        sf = self.schedule.sf
        return self.decode(z0)[:, :, : h * sf, : w * sf]
