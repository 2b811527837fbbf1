"""``srx train``: train a one-step SR model; the output directory loads with ``srx upscale --model DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import print_error, print_line, report_errors


@report_errors
def train(
    method: Annotated[Optional[str], typer.Option("--method", help="osediff | hero-sr | dfosd | lite (paper defaults).")] = None,
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", help="Folder of high-quality images (repeatable), or a paired folder with HR/ and LR/.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Model directory to write.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML recipe (see configs/); flags override it.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base diffusion model: diffusers dir or org/name\\[@rev].")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per process per micro-step.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help="Gradient accumulation steps.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Generator learning rate (AdamW).")] = None,
    lr_aux: Annotated[Optional[float], typer.Option("--lr-aux", help="Fake-score / discriminator learning rate.")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(
        "--lr-schedule", help="constant | cosine (from --lr-decay-start to --max-steps, down to --lr-min).")] = None,
    lr_min: Annotated[Optional[float], typer.Option("--lr-min", help="Final learning rate of the cosine decay.")] = None,
    lr_decay_start: Annotated[Optional[int], typer.Option(
        "--lr-decay-start", help="Step where the cosine decay begins.")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="HQ crop size (default 512).")] = None,
    lora_rank: Annotated[Optional[int], typer.Option("--lora-rank", help="LoRA rank (method default: 4 or 16).")] = None,
    mixed_precision: Annotated[Optional[str], typer.Option("--mixed-precision", help="no | fp16 | bf16.")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute UNet activations to save memory.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Steps between checkpoints.")] = None,
    validate_every: Annotated[Optional[int], typer.Option("--validate-every", help="Steps between validation images.")] = None,
    validation_image: Annotated[Optional[list[Path]], typer.Option(
        "--validation-image", help="LR image upscaled at each validation (repeatable).")] = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", help="Steps between log lines.")] = None,
    bicubic_prob: Annotated[Optional[float], typer.Option(
        "--bicubic-prob", help="Share of samples with plain bicubic downsampling instead of Real-ESRGAN degradation.")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Fixed text condition.")] = None,
    perceptual_pretrained: Annotated[Optional[bool], typer.Option(
        "--perceptual-pretrained/--perceptual-random", help="Pretrained LPIPS/DISTS/CLIP (random: offline smoke runs).")] = None,
    clip_model: Annotated[Optional[str], typer.Option("--clip-model", help="CLIP for Hero-SR's losses.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of every random draw.")] = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", help="DataLoader workers.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --output.")] = False,
) -> None:
    """Train a one-step model (OSEDiff, Hero-SR or DFOSD recipe) from a pretrained diffusion model.

    Multi-GPU / multi-node: `accelerate launch -m sr_cli.cli train ...`.
    """
    from ..train.config import load_recipe, resolve_config
    from ..train.loop import train as run

    recipe = load_recipe(config) if config else {}
    cfg = resolve_config(
        method, recipe,
        data=[str(d) for d in data] if data else None, output=str(output) if output else None, base=base,
        max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, lr_aux=lr_aux,
        lr_schedule=lr_schedule, lr_min=lr_min, lr_decay_start=lr_decay_start,
        resolution=resolution, lora_rank=lora_rank, mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing, checkpoint_every=checkpoint_every,
        validate_every=validate_every, validation_images=[str(v) for v in validation_image] if validation_image else None,
        log_every=log_every, bicubic_prob=bicubic_prob, prompt=prompt, perceptual_pretrained=perceptual_pretrained,
        clip_model=clip_model, seed=seed, num_workers=num_workers, resume=resume or None,
    )
    if not cfg.data:
        print_error("no training data: pass --data DIR (or `data:` in the recipe)")
        raise typer.Exit(2)
    result = run(cfg, echo=print_line)
    print_line(f"trained to step {result.step} in {result.seconds:.1f}s; model directory: {result.output} "
               f"(srx upscale IMAGE --model {result.output})")
