"""``srx distill``: a multi-step ResShift teacher -> a one-step student (SinSR, VPD-SR, HF-Diff recipes).

It runs the same accelerate training loop as ``srx train`` (checkpoints, ``--resume``, logs, validation);
the output directory is an srx model directory: ``srx upscale IMAGE --model DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import print_error, print_line, report_errors


@report_errors
def distill(
    method: Annotated[str, typer.Option("--method", help="sinsr | vpd-sr | hf-diff (paper defaults).")] = "sinsr",
    teacher: Annotated[Optional[str], typer.Option(
        "--teacher", help="Multi-step teacher: a ResShift-family model name or directory (default: resshift).")] = None,
    student: Annotated[Optional[str], typer.Option(
        "--student", help="Initial student weights (default: a copy of the teacher; hf-diff: sinsr).")] = None,
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", help="Folder of high-quality images (repeatable), or a paired folder with HR/ and LR/.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Model directory to write.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML recipe (see configs/); flags override it.")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per process per micro-step.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help="Gradient accumulation steps.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Student learning rate (AdamW, default 5e-5).")] = None,
    lr_aux: Annotated[Optional[float], typer.Option("--lr-aux", help="Discriminator learning rate (vpd-sr).")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="HQ crop size (default 256).")] = None,
    mixed_precision: Annotated[Optional[str], typer.Option("--mixed-precision", help="no | fp16 | bf16.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Steps between checkpoints.")] = None,
    validate_every: Annotated[Optional[int], typer.Option("--validate-every", help="Steps between validation images.")] = None,
    validation_image: Annotated[Optional[list[Path]], typer.Option(
        "--validation-image", help="LR image upscaled at each validation (repeatable).")] = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", help="Steps between log lines.")] = None,
    inn_weights: Annotated[Optional[Path], typer.Option(
        "--inn-weights", help="hf-diff: the authors' inn_pretrained.pt (the high-frequency perceptual network).")] = None,
    dino_model: Annotated[Optional[str], typer.Option("--dino-model", help="hf-diff: DINOv2 (Hub id or directory).")] = None,
    clip_model: Annotated[Optional[str], typer.Option("--clip-model", help="vpd-sr: CLIP for the semantic loss.")] = None,
    perceptual_pretrained: Annotated[Optional[bool], typer.Option(
        "--perceptual-pretrained/--perceptual-random", help="Pretrained CLIP/DINOv2 (random: offline smoke runs).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of every random draw.")] = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", help="DataLoader workers.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --output.")] = False,
) -> None:
    """Distill a multi-step teacher (ResShift) into a one-step student (SinSR, VPD-SR or HF-Diff recipe).

    Multi-GPU / multi-node: `accelerate launch -m sr_cli.cli distill ...`.
    """
    from ..errors import UsageError
    from ..train.config import DISTILL_METHODS, load_recipe, resolve_config
    from ..train.loop import train as run

    recipe = load_recipe(config) if config else {}
    method = method or recipe.get("method")
    if method not in DISTILL_METHODS:
        raise UsageError(f"--method must be one of {', '.join(DISTILL_METHODS)}, got {method!r}")
    cfg = resolve_config(
        method, recipe,
        teacher=teacher, student=student, data=[str(d) for d in data] if data else None,
        output=str(output) if output else None, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
        lr=lr, lr_aux=lr_aux, resolution=resolution, mixed_precision=mixed_precision,
        checkpoint_every=checkpoint_every, validate_every=validate_every,
        validation_images=[str(v) for v in validation_image] if validation_image else None, log_every=log_every,
        inn_weights=str(inn_weights) if inn_weights else None, dino_model=dino_model, clip_model=clip_model,
        perceptual_pretrained=perceptual_pretrained, seed=seed, num_workers=num_workers, resume=resume or None,
    )
    if not cfg.data:
        print_error("no training data: pass --data DIR (or `data:` in the recipe)")
        raise typer.Exit(2)
    result = run(cfg, echo=print_line)
    print_line(f"distilled to step {result.step} in {result.seconds:.1f}s; model directory: {result.output} "
               f"(srx upscale IMAGE --model {result.output})")
