"""Distillation of a multi-step ResShift-family teacher into a one-step student (``srx distill``).

Every distillation method shares the setup of SinSR's code: the student is a copy of a ResShift-family
Swin-UNet, the teacher's VQ autoencoder is kept frozen, and for an LR image ``y = VQ.encode(bicubic x4 LR)``,
``x_T = y + kappa sqrt(eta_T) eps``; the teacher runs its deterministic 15-step chain (no gradient) from the
same ``x_T``, the student predicts x0 at ``t = T-1``. Losses are MSE in latent space unless said otherwise
(per-sample mean, batch mean, as the authors' ``mean_flat``). The student is the engine's ``ResShiftSR``
and every step (``encode_y``, ``prior``, ``predict_x0``, ``run_chain``) is the engine's own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ...engine.resshift import ResShiftSR
from ...errors import UsageError
from ...models.checkpoints import ConvertedCheckpoint
from ...models.registry import ModelSpec
from .base import TrainMethod

if TYPE_CHECKING:
    from ..config import TrainConfig


def load_resshift_model(name: str, role: str) -> tuple[ResShiftSR, ModelSpec]:
    """A model with a multi-step deterministic chain (the ResShift family) by registry name or directory, on
    the CPU in fp32 (frozen), and its spec."""
    from ...families import family_of
    from ...models.loading import load_converted_checkpoint, resolve_spec

    spec = resolve_spec(name)
    family = family_of(spec)
    if "deterministic" not in family.samplers:
        raise UsageError(f"--{role} {name}: a {spec.family} model; distillation needs a ResShift-family model "
                         f"(resshift, sinsr, hf-diff or a directory written by srx distill)")
    return family.build(spec, load_converted_checkpoint(spec), download=True, merge_lora=True), spec


class ResShiftStudentMethod(TrainMethod):
    """The student (``self.net``: the engine's ``ResShiftSR`` with the student UNet) and the frozen teacher."""

    commands = ("distill",)
    paper = ""
    defaults = {"lr": 5e-5, "weight_decay": 0.0, "resolution": 256, "batch_size": 16}

    @dataclass
    class Options:
        teacher: str = "resshift"  # registry name or model directory of the teacher (its VQ autoencoder is kept)
        student: str | None = None  # initial student weights (a ResShift-family model); None: a copy of the teacher

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        super().__init__(cfg)
        opts = self.options
        teacher, self.teacher_spec = load_resshift_model(opts.teacher, "teacher")
        self.teacher_unet = teacher.unet.requires_grad_(False).eval()
        student_init = load_resshift_model(opts.student, "student")[0].unet if opts.student else teacher.unet
        student = copy.deepcopy(student_init).requires_grad_(True)
        self.net = ResShiftSR(student, teacher.vq.requires_grad_(False).eval(), teacher.schedule)
        self.last_t = teacher.schedule.steps - 1

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.net.unet.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_unet.eval()
        self.net.vq.eval()
        return self

    # ------------------------------------------------------------------ shared pieces
    def student_at(self, z: torch.Tensor, t: int, lr: torch.Tensor) -> torch.Tensor:
        """The student on ``z`` scaled with the T-1 factor (the authors' code does so for both directions)."""
        return self.net.predict_x0(z, t, lr, scale_step=self.last_t)

    def prepare(self, lq: torch.Tensor, hq: torch.Tensor) -> dict[str, torch.Tensor]:
        lr = lq * 2 - 1
        with torch.no_grad():
            y = self.net.encode_y(lr)
            x_t = self.net.prior(y, torch.randn_like(y))
            z_teacher = self.net.run_chain(y, lr, x_t, "deterministic", unet=self.teacher_unet)
        z_student = self.student_at(x_t, self.last_t, lr)
        return {"lr": lr, "y": y, "x_T": x_t, "z_teacher": z_teacher, "z_student": z_student}

    def sinsr_terms(self, s: dict[str, torch.Tensor], hq: torch.Tensor) -> dict[str, torch.Tensor]:
        """SinSR's ``distill`` (+ ``inverse`` and ``consistency`` when weighted)."""
        terms = {"distill": F.mse_loss(s["z_student"], s["z_teacher"])}
        if self.weight("inverse"):
            terms["inverse"] = F.mse_loss(self.student_at(s["z_teacher"], 0, s["lr"]), s["x_T"])
        if self.weight("consistency"):
            with torch.no_grad():
                z_gt = self.net.encode_x0(hq * 2 - 1)
                x_t_gt = self.student_at(z_gt, 0, s["lr"])
            terms["consistency"] = F.mse_loss(self.student_at(x_t_gt, self.last_t, s["lr"]), z_gt)
        return terms

    def decode_grad(self, z: torch.Tensor) -> torch.Tensor:
        """Decode to [0, 1] with the gradient flowing through the (straight-through) quantizer."""
        return (self.net.vq.decode(z).sample.clamp(-1, 1) + 1) / 2

    def checkpoint(self) -> ConvertedCheckpoint:
        tensors = {f"unet.{k}": v.detach().cpu().clone() for k, v in self.net.unet.state_dict().items()}
        tensors |= {f"vq.{k}": v.detach().cpu().clone() for k, v in self.net.vq.state_dict().items()}
        return ConvertedCheckpoint(tensors=tensors, net=self.net.net_config(), source_format="srx")

    def model_spec(self) -> ModelSpec:
        # The teacher's inference defaults (its family's tiles, color fix), run as a one-step model.
        t = self.teacher_spec
        return ModelSpec(
            name=Path(self.cfg.output).name, family=t.family, format="srx", base=None, weights=None,
            defaults=replace(t.defaults, scale=self.net.schedule.sf, sampler="one-step"),
            description=f"one-step student distilled from {self.options.teacher} with `srx distill --method {self.name}`",
            paper=self.paper, license="inherits the teacher's license (ResShift: S-Lab License 1.0, non-commercial)",
        )
