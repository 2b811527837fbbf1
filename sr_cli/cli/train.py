"""``srx train``: train a one-step SR model; the output directory loads with ``srx upscale --model DIR``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import training_options as shared
from .common import report_errors


@report_errors
def train(
    ctx: typer.Context,
    method: Annotated[Optional[str], typer.Option("--method", help="osediff | hero-sr | dfosd | lite (paper defaults).")] = None,
    data: shared.DataOpt = None,
    output: shared.OutputOpt = None,
    config: shared.ConfigOpt = None,
    base: Annotated[Optional[str], typer.Option(
        "--base", help="SD methods: base diffusion model, diffusers dir or org/name\\[@rev] (default: the method's).")] = None,
    max_steps: shared.MaxStepsOpt = None,
    batch_size: shared.BatchSizeOpt = None,
    grad_accum: shared.GradAccumOpt = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Generator learning rate (AdamW).")] = None,
    lr_aux: shared.LrAuxOpt = None,
    lr_schedule: shared.LrScheduleOpt = None,
    lr_min: shared.LrMinOpt = None,
    lr_decay_start: shared.LrDecayStartOpt = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="HQ crop size (default 512).")] = None,
    lora_rank: Annotated[Optional[int], typer.Option(
        "--lora-rank", help="SD methods: LoRA rank (method default: 4 or 16).")] = None,
    mixed_precision: shared.MixedPrecisionOpt = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="SD methods: recompute UNet activations to save memory.")] = None,
    checkpoint_every: shared.CheckpointEveryOpt = None,
    validate_every: shared.ValidateEveryOpt = None,
    validation_image: shared.ValidationImageOpt = None,
    log_every: shared.LogEveryOpt = None,
    loss_weight: shared.LossWeightOpt = None,
    bicubic_prob: Annotated[Optional[float], typer.Option(
        "--bicubic-prob", help="Share of samples with plain bicubic downsampling instead of Real-ESRGAN degradation.")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="SD methods: fixed text condition.")] = None,
    perceptual_pretrained: shared.PerceptualOpt = None,
    clip_model: shared.ClipModelOpt = None,
    seed: shared.TrainSeedOpt = None,
    num_workers: shared.NumWorkersOpt = None,
    resume: shared.ResumeOpt = False,
) -> None:
    """Train a one-step model (OSEDiff, Hero-SR or DFOSD recipe) from a pretrained diffusion model.

    Options marked with a method apply to those methods only (osediff, hero-sr and dfosd are the SD methods);
    giving one to another method is a usage error. Multi-GPU / multi-node: `accelerate launch -m sr_cli.cli train ...`.
    """
    # Every option above reaches the config by name through ctx.params (None: not given).
    shared.run_training(ctx.params, "trained")
