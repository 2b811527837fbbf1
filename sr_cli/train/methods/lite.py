"""srx's lite model: the one-step x0 prediction in the pixel-unshuffle latent, trained two ways.

* ``srx train --method lite``: pixel L1 (Charbonnier) to the photo, on Real-ESRGAN degradations mixed with plain
  bicubic downsampling (the embedded, PSNR-oriented ``lite`` weights).
* ``srx distill --method lite --teacher T``: the same network learns a sharp teacher's outputs (Real-ESRGAN
  x4plus by default in the recipe) on degraded inputs and the photo itself on clean bicubic inputs; the
  teacher's outputs are computed once (``teacher_targets.py``). A deterministic teacher gives one target per
  input, so L1 to it does not average textures away as L1 to the photo does; the frequency term (L1 of the
  2-D spectra) weighs the fine detail a pixel loss underweights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...errors import UsageError
from ...models.checkpoints import ConvertedCheckpoint
from ...models.registry import ModelSpec, get_spec
from .base import TrainMethod, at_least_one

if TYPE_CHECKING:
    from ..config import TrainConfig


GRID_CELLS = 4  # the grid term's window, in pixel-shuffle cells


class LiteMethod(TrainMethod):
    """A small x0-predicting UNet in the pixel-unshuffle latent, trained on a mix of Real-ESRGAN degradations
    and plain bicubic downsampling."""

    name = "lite"
    commands = ("train", "distill")
    summary = "srx lite: a small one-step UNet (no base model), alone or distilled from a sharp teacher"
    defaults = {"lr": 2e-4, "resolution": 128, "batch_size": 16, "bicubic_prob": 0.5, "weight_decay": 0.0}
    loss_weights = {"l1": 1.0, "fft": 0.0, "grad": 0.0, "grid": 0.0, "adv": 0.0}
    TARGETS = "teacher_targets"  # the teacher's outputs, inside the run's output folder

    @dataclass
    class Options:
        lite_channels: list[int] = field(default_factory=lambda: [48, 96, 160])  # UNet widths, one per level
        lite_blocks: int = 2  # residual blocks per level and direction
        teacher: str | None = None  # distill from: realesrgan-ncnn, an ncnn .param, an srx model (None: train alone)
        student: str | None = None  # initial weights: a lite model (name, directory); None: the identity
        teacher_patches: int = 300  # degraded LR patches the teacher upscales once (64 px LR, 256 px targets)
        clean_share: float = 0.25  # share of clean bicubic patches (target: the photo) among the training pairs
        mild_patches: int = 0  # camera-like degraded LR patches (blurry, little noise) the teacher upscales once
        patch_candidates: int = 1  # random crops per teacher patch; the most detailed one is kept
        teacher_targets: str | None = None  # where the teacher's outputs are kept (None: OUTPUT/teacher_targets)
        gt_usm: float = 0.0  # unsharp-mask weight on the pixel-loss targets of degraded samples (Real-ESRGAN: 0.5)

        def __post_init__(self):
            at_least_one(self, "lite_blocks", "teacher_patches", "patch_candidates")
            if not 0 <= self.clean_share < 1:
                raise UsageError(f"clean_share must be in [0, 1), got {self.clean_share}")
            if self.gt_usm < 0:
                raise UsageError(f"gt_usm must be >= 0, got {self.gt_usm}")
            if not self.lite_channels or min(self.lite_channels) < 1:
                raise UsageError(f"lite_channels must be positive widths, got {self.lite_channels!r}")

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        super().__init__(cfg)
        from ...engine.lite import OneStepLite
        from ...nets.lite import LiteUNet

        self.net_config = {"latent_factor": cfg.scale, "channels": list(self.options.lite_channels),
                           "blocks": self.options.lite_blocks}
        self.net = OneStepLite(LiteUNet(**self.net_config))
        self.net.dtype = torch.float32
        if self.options.student:
            self._load_student(self.options.student)
        self.net.unet.requires_grad_(True)
        if self.weight("adv"):  # a small PatchGAN on RGB (hinge loss); built only when weighted
            from .vpd_sr import PatchDiscriminator

            self.aux = PatchDiscriminator(3, width=32)

    def _load_student(self, name: str) -> None:
        from ...models.loading import load_model

        # A model with a detail set (the shipped lite) holds its faithful set until an image asks for more.
        unet = load_model(name, device="cpu", dtype="fp32").net.unet
        try:
            self.net.unet.load_state_dict(unet.state_dict())
        except (RuntimeError, AttributeError):
            raise UsageError(f"--student {name}: not a lite model with widths {self.options.lite_channels} "
                             f"and {self.options.lite_blocks} blocks") from None

    @classmethod
    def training_data(cls, cfg: TrainConfig, echo=print, main_process: bool = True) -> list[str]:
        if not cfg.options.teacher:
            return list(cfg.data)
        from ..data import is_paired_folder
        from ..teacher_targets import TargetPlan, build_targets
        from ..teachers import load_teacher

        # Paired folders (HR/ + LR/, e.g. rendered text) are used as they are; the others are the photos the
        # teacher targets are cut from.
        paired = [f for f in cfg.data if is_paired_folder(f)]
        sources = [f for f in cfg.data if f not in paired]
        if not sources:
            raise UsageError("--teacher: no folder of photographs among --data (only paired HR/ + LR/ folders)")
        teacher = load_teacher(cfg.options.teacher) if main_process else None
        ident = teacher.ident if teacher is not None else None
        plan = TargetPlan.for_share(ident, cfg.options.teacher_patches, cfg.options.clean_share,
                                    mild=cfg.options.mild_patches, seed=cfg.seed, scale=cfg.scale,
                                    candidates=cfg.options.patch_candidates)
        return build_targets(sources, cls.targets_dir(cfg), plan, teacher, echo=echo) + paired

    @classmethod
    def targets_dir(cls, cfg: TrainConfig) -> Path:
        return Path(cfg.options.teacher_targets or Path(cfg.output) / cls.TARGETS)

    @classmethod
    def clean_data(cls, cfg: TrainConfig) -> list[str]:
        if not cfg.options.teacher or not cfg.options.clean_share:
            return []
        from ..teacher_targets import CLEAN

        return [str(cls.targets_dir(cfg) / CLEAN)]  # the photo's bicubic downsamplings -> the photo

    def loss_terms(self, lq, hq, clean=None):
        from ...engine.resize import pil_resize

        # The engine upsamples with PIL's bicubic: train on exactly that input.
        h, w = hq.shape[-2:]
        x = torch.cat([pil_resize(lq[i : i + 1].detach().float().cpu(), h, w) for i in range(lq.shape[0])])
        sr = (self.net(x.to(hq.device) * 2 - 1) + 1) / 2
        target = self._pixel_target(hq, clean)
        terms = {"l1": ((sr - target) ** 2 + 1e-6).sqrt().mean()}
        if self.weight("fft"):
            terms["fft"] = (torch.fft.rfft2(sr, norm="ortho") - torch.fft.rfft2(target, norm="ortho")).abs().mean()
        if self.weight("grad"):
            from ..edges import gradient_magnitude

            terms["grad"] = (gradient_magnitude(sr) - gradient_magnitude(target)).abs().mean()
        if self.weight("grid"):
            from ..edges import grid_pattern

            # The pixel-shuffle grid's periodic pattern (grain), window by window (16 x 16 px at x4): as the target's.
            p = self.cfg.scale
            terms["grid"] = (grid_pattern(sr, p, GRID_CELLS) - grid_pattern(target, p, GRID_CELLS)).abs().mean()
        if self.aux is None:
            return terms, None
        # The adversarial term adds detail where the input lacks it; clean inputs are left to the pixel losses
        # (their target is the photo itself), so that the GAN's texture does not cost fidelity on them. The
        # discriminator sees the same samples. A batch with no degraded sample falls back to all of them.
        pick = ~clean if clean is not None and not bool(clean.all()) else torch.ones(len(sr), dtype=torch.bool)
        pick = pick.to(sr.device)
        terms["adv"] = -self.aux.score(sr[pick] * 2 - 1).mean()
        return terms, (hq[pick] * 2 - 1, (sr[pick] * 2 - 1).detach())

    def _pixel_target(self, hq, clean):
        """The pixel losses' target: the photo, sharpened with Real-ESRGAN's unsharp mask (``gt_usm``) where the
        input is degraded, as Real-ESRGAN trains its pixel losses; clean inputs keep the photo itself, so that
        they are not sharpened beyond it. The discriminator's real samples stay the photo (as Real-ESRGAN's)."""
        if not self.options.gt_usm:
            return hq
        from ..edges import usm_sharpen

        sharp = usm_sharpen(hq, self.options.gt_usm)
        if clean is None:
            return sharp
        keep = clean.to(hq.device).view(-1, 1, 1, 1)
        return torch.where(keep, hq, sharp)

    def checkpoint(self) -> ConvertedCheckpoint:
        tensors = {f"net.{k}": v.detach().cpu().clone() for k, v in self.net.unet.state_dict().items()}
        return ConvertedCheckpoint(tensors=tensors, net=self.net_config, source_format="srx")

    def model_spec(self) -> ModelSpec:
        embedded = get_spec("lite")  # the family's defaults: those of the embedded lite model
        # One weight set (srx models combine pairs two runs into a model with a detail set).
        return replace(embedded, name=Path(self.cfg.output).name, weights=None,
                       defaults=replace(embedded.defaults, scale=self.cfg.scale, detail=None),
                       description="srx lite: small one-step x0 model in the pixel-unshuffle latent "
                                   + (f"(distilled from {self.options.teacher} with `srx distill --method lite`)"
                                      if self.options.teacher else "(trained with `srx train --method lite`)"),
                       paper="", license="Apache-2.0")

