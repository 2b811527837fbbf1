"""Options ``srx train`` and ``srx distill`` share, declared once (same flag, same meaning in both)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DataOpt = Annotated[Optional[list[Path]], typer.Option(
    "--data", help="Folder of high-quality images (repeatable), or a paired folder with HR/ and LR/.")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Model directory to write.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML recipe (see configs/); flags override it.")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Images per process per micro-step.")]
GradAccumOpt = Annotated[Optional[int], typer.Option("--grad-accum", help="Gradient accumulation steps.")]
LrAuxOpt = Annotated[Optional[float], typer.Option(
    "--lr-aux", help="Learning rate of the auxiliary network (fake score or discriminator).")]
MixedPrecisionOpt = Annotated[Optional[str], typer.Option("--mixed-precision", help="no | fp16 | bf16.")]
CheckpointEveryOpt = Annotated[Optional[int], typer.Option("--checkpoint-every", help="Steps between checkpoints.")]
ValidateEveryOpt = Annotated[Optional[int], typer.Option("--validate-every", help="Steps between validation images.")]
ValidationImageOpt = Annotated[Optional[list[Path]], typer.Option(
    "--validation-image", help="LR image upscaled at each validation (repeatable).")]
LogEveryOpt = Annotated[Optional[int], typer.Option("--log-every", help="Steps between log lines.")]
LossWeightOpt = Annotated[Optional[list[str]], typer.Option(
    "--loss-weight", metavar="NAME=VALUE",
    help="Weight of one loss term (repeatable), e.g. --loss-weight lpips=2; 0 turns a term off. "
         "Each method's terms and paper weights: `configs/METHOD.yaml`.")]
PerceptualOpt = Annotated[Optional[bool], typer.Option(
    "--perceptual-pretrained/--perceptual-random",
    help="Pretrained LPIPS/DISTS/CLIP/DINOv2 (random: offline smoke runs).")]
ClipModelOpt = Annotated[Optional[str], typer.Option(
    "--clip-model", help="CLIP for the CLIP losses (hero-sr, vpd-sr): Hub id or directory.")]
TrainSeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed of every random draw.")]
NumWorkersOpt = Annotated[Optional[int], typer.Option("--num-workers", help="DataLoader workers.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --output.")]


def shared_config(data, output, max_steps, batch_size, grad_accum, lr_aux, mixed_precision, checkpoint_every,
                  validate_every, validation_image, log_every, loss_weight, perceptual_pretrained, clip_model, seed,
                  num_workers, resume) -> dict:
    """The shared options as ``resolve_config`` overrides (None: not given)."""
    from ..train.config import parse_loss_weights

    return dict(
        data=[str(d) for d in data] if data else None, output=str(output) if output else None,
        max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr_aux=lr_aux,
        mixed_precision=mixed_precision, checkpoint_every=checkpoint_every, validate_every=validate_every,
        validation_images=[str(v) for v in validation_image] if validation_image else None, log_every=log_every,
        loss_weights=parse_loss_weights(loss_weight), perceptual_pretrained=perceptual_pretrained,
        clip_model=clip_model, seed=seed, num_workers=num_workers, resume=resume or None,
    )


def run_training(cfg, verb: str) -> None:
    """Train as configured and print where the model is."""
    from ..train.loop import train as run
    from .common import print_error, print_line

    if not cfg.data:
        print_error("no training data: pass --data DIR (or `data:` in the recipe)")
        raise typer.Exit(2)
    result = run(cfg, echo=print_line)
    print_line(f"{verb} to step {result.step} in {result.seconds:.1f}s; model directory: {result.output} "
               f"(srx upscale IMAGE --model {result.output})")
