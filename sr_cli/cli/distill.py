"""``srx distill``: a multi-step ResShift-family teacher -> a one-step student (SinSR, VPD-SR, HF-Diff), or a sharp
teacher (Real-ESRGAN) -> the small ``lite`` model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import training_options as shared
from .common import report_errors


@report_errors
def distill(
    ctx: typer.Context,
    method: Annotated[Optional[str], typer.Option(
        "--method", help="sinsr | vpd-sr | hf-diff (paper defaults) | lite (default: the recipe's, else sinsr).")] = None,
    teacher: Annotated[Optional[str], typer.Option(
        "--teacher", help="sinsr/vpd-sr/hf-diff: the multi-step ResShift-family teacher (default: resshift). lite: "
             "realesrgan-ncnn (Real-ESRGAN x4plus, srx\\[ncnn]), an ncnn .param file or an srx model.")] = None,
    student: Annotated[Optional[str], typer.Option(
        "--student", help="Initial student weights (default: a copy of the teacher; hf-diff: sinsr; "
                          "lite: a lite model such as lite, else the identity).")] = None,
    teacher_patches: Annotated[Optional[int], typer.Option(
        "--teacher-patches", help="lite: degraded LR patches the teacher upscales once (default 300).")] = None,
    mild_patches: Annotated[Optional[int], typer.Option(
        "--mild-patches", help="lite: camera-like (blurry, little noise) LR patches the teacher upscales once "
                               "(default 0).")] = None,
    patch_candidates: Annotated[Optional[int], typer.Option(
        "--patch-candidates", help="lite: random crops drawn per teacher patch; the one with the most edges is "
                                   "kept (default 1).")] = None,
    teacher_targets: Annotated[Optional[Path], typer.Option(
        "--teacher-targets", help="lite: folder of the teacher's cached outputs, shared between runs "
                                  "(default: OUTPUT/teacher_targets).")] = None,
    clean_share: Annotated[Optional[float], typer.Option(
        "--clean-share", help="lite: share of clean bicubic pairs, learnt from the photo (default 0.25).")] = None,
    data: shared.DataOpt = None,
    output: shared.OutputOpt = None,
    config: shared.ConfigOpt = None,
    max_steps: shared.MaxStepsOpt = None,
    batch_size: shared.BatchSizeOpt = None,
    grad_accum: shared.GradAccumOpt = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Student learning rate (AdamW, default 5e-5).")] = None,
    lr_aux: shared.LrAuxOpt = None,
    lr_schedule: shared.LrScheduleOpt = None,
    lr_min: shared.LrMinOpt = None,
    lr_decay_start: shared.LrDecayStartOpt = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="HQ crop size (default 256).")] = None,
    mixed_precision: shared.MixedPrecisionOpt = None,
    checkpoint_every: shared.CheckpointEveryOpt = None,
    validate_every: shared.ValidateEveryOpt = None,
    validation_image: shared.ValidationImageOpt = None,
    log_every: shared.LogEveryOpt = None,
    loss_weight: shared.LossWeightOpt = None,
    inn_weights: Annotated[Optional[Path], typer.Option(
        "--inn-weights", help="hf-diff: the authors' inn_pretrained.pt (the high-frequency perceptual network).")] = None,
    dino_model: Annotated[Optional[str], typer.Option("--dino-model", help="hf-diff: DINOv2 (Hub id or directory).")] = None,
    clip_model: shared.ClipModelOpt = None,
    perceptual_pretrained: shared.PerceptualOpt = None,
    seed: shared.TrainSeedOpt = None,
    num_workers: shared.NumWorkersOpt = None,
    resume: shared.ResumeOpt = False,
) -> None:
    """Distill a multi-step teacher (ResShift) into a one-step student (SinSR, VPD-SR or HF-Diff recipe), or a
    sharp teacher into the lite model (--method lite --teacher realesrgan-ncnn).

    Multi-GPU / multi-node: `accelerate launch -m sr_cli.cli distill ...`.
    """
    # Every option above reaches the config by name through ctx.params (None: not given).
    shared.run_training(ctx.params, "distilled", command="distill")
