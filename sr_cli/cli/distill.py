"""``srx distill``: a multi-step ResShift-family teacher -> a one-step student (SinSR, VPD-SR, HF-Diff)."""

from __future__ import annotations

from pathlib import Path
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
    shared_config,
)


@report_errors
def distill(
    method: Annotated[str, typer.Option("--method", help="sinsr | vpd-sr | hf-diff (paper defaults).")] = "sinsr",
    teacher: Annotated[Optional[str], typer.Option(
        "--teacher", help="Multi-step teacher: a ResShift-family model name or directory (default: resshift).")] = None,
    student: Annotated[Optional[str], typer.Option(
        "--student", help="Initial student weights (default: a copy of the teacher; hf-diff: sinsr).")] = None,
    data: DataOpt = None,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    max_steps: MaxStepsOpt = None,
    batch_size: BatchSizeOpt = None,
    grad_accum: GradAccumOpt = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Student learning rate (AdamW, default 5e-5).")] = None,
    lr_aux: LrAuxOpt = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="HQ crop size (default 256).")] = None,
    mixed_precision: MixedPrecisionOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    validate_every: ValidateEveryOpt = None,
    validation_image: ValidationImageOpt = None,
    log_every: LogEveryOpt = None,
    loss_weight: LossWeightOpt = None,
    inn_weights: Annotated[Optional[Path], typer.Option(
        "--inn-weights", help="hf-diff: the authors' inn_pretrained.pt (the high-frequency perceptual network).")] = None,
    dino_model: Annotated[Optional[str], typer.Option("--dino-model", help="hf-diff: DINOv2 (Hub id or directory).")] = None,
    clip_model: ClipModelOpt = None,
    perceptual_pretrained: PerceptualOpt = None,
    seed: TrainSeedOpt = None,
    num_workers: NumWorkersOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Distill a multi-step teacher (ResShift) into a one-step student (SinSR, VPD-SR or HF-Diff recipe).

    Multi-GPU / multi-node: `accelerate launch -m sr_cli.cli distill ...`.
    """
    from ..errors import UsageError
    from ..train.config import load_recipe, resolve_config
    from ..train.methods import method_names

    recipe = load_recipe(config) if config else {}
    method = method or recipe.get("method")
    if method not in method_names("distill"):
        raise UsageError(f"--method must be one of {', '.join(method_names('distill'))}, got {method!r}")
    cfg = resolve_config(
        method, recipe,
        **shared_config(data, output, max_steps, batch_size, grad_accum, lr_aux, mixed_precision, checkpoint_every,
                        validate_every, validation_image, log_every, loss_weight, perceptual_pretrained, clip_model,
                        seed, num_workers, resume),
        teacher=teacher, student=student, lr=lr, resolution=resolution,
        inn_weights=str(inn_weights) if inn_weights else None, dino_model=dino_model,
    )
    run_training(cfg, "distilled")
