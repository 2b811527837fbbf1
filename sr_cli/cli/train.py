"""``srx train``: train a one-step SR model; the output directory loads with ``srx upscale --model DIR``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import report_errors
from .training_options import (
    BatchSizeOpt,
    CheckpointEveryOpt,
    ClipModelOpt,
    ConfigOpt,
    DataOpt,
    GradAccumOpt,
    LogEveryOpt,
    LossWeightOpt,
    LrAuxOpt,
    MaxStepsOpt,
    MixedPrecisionOpt,
    NumWorkersOpt,
    OutputOpt,
    PerceptualOpt,
    ResumeOpt,
    TrainSeedOpt,
    ValidateEveryOpt,
    ValidationImageOpt,
    run_training,
)


@report_errors
def train(
    ctx: typer.Context,
    method: Annotated[Optional[str], typer.Option("--method", help="osediff | hero-sr | dfosd | lite (paper defaults).")] = None,
    data: DataOpt = None,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    base: Annotated[Optional[str], typer.Option(
        "--base", help="SD methods: base diffusion model, diffusers dir or org/name\\[@rev] (default: the method's).")] = None,
    max_steps: MaxStepsOpt = None,
    batch_size: BatchSizeOpt = None,
    grad_accum: GradAccumOpt = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Generator learning rate (AdamW).")] = None,
    lr_aux: LrAuxOpt = None,
    lr_schedule: Annotated[Optional[str], typer.Option(
        "--lr-schedule", help="constant | cosine (from --lr-decay-start to --max-steps, down to --lr-min).")] = None,
    lr_min: Annotated[Optional[float], typer.Option("--lr-min", help="Final learning rate of the cosine decay.")] = None,
    lr_decay_start: Annotated[Optional[int], typer.Option(
        "--lr-decay-start", help="Step where the cosine decay begins.")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="HQ crop size (default 512).")] = None,
    lora_rank: Annotated[Optional[int], typer.Option(
        "--lora-rank", help="SD methods: LoRA rank (method default: 4 or 16).")] = None,
    mixed_precision: MixedPrecisionOpt = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="SD methods: recompute UNet activations to save memory.")] = None,
    checkpoint_every: CheckpointEveryOpt = None,
    validate_every: ValidateEveryOpt = None,
    validation_image: ValidationImageOpt = None,
    log_every: LogEveryOpt = None,
    loss_weight: LossWeightOpt = None,
    bicubic_prob: Annotated[Optional[float], typer.Option(
        "--bicubic-prob", help="Share of samples with plain bicubic downsampling instead of Real-ESRGAN degradation.")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="SD methods: fixed text condition.")] = None,
    perceptual_pretrained: PerceptualOpt = None,
    clip_model: ClipModelOpt = None,
    seed: TrainSeedOpt = None,
    num_workers: NumWorkersOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Train a one-step model (OSEDiff, Hero-SR or DFOSD recipe) from a pretrained diffusion model.

    Options marked with a method apply to those methods only (osediff, hero-sr and dfosd are the SD methods);
    giving one to another method is a usage error. Multi-GPU / multi-node: `accelerate launch -m sr_cli.cli train ...`.
    """
    # Every option above reaches the config by name through ctx.params (None: not given).
    run_training(ctx.params, "trained")
