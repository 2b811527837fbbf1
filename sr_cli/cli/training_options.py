"""Options ``srx train`` and ``srx distill`` share, declared once (same flag, same meaning in both)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

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
LrScheduleOpt = Annotated[Optional[str], typer.Option(
    "--lr-schedule", help="constant | cosine (from --lr-decay-start to --max-steps, down to --lr-min).")]
LrMinOpt = Annotated[Optional[float], typer.Option("--lr-min", help="Final learning rate of the cosine decay.")]
LrDecayStartOpt = Annotated[Optional[int], typer.Option("--lr-decay-start", help="Step where the cosine decay begins.")]
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


# The method of a command given neither --method nor a recipe naming one.
DEFAULT_METHOD = {"train": "osediff", "distill": "sinsr"}

# A flag whose config field is spelled otherwise (a repeatable flag names one item, the field all of them).
FIELD_OF_OPTION = {"validation_image": "validation_images", "loss_weight": "loss_weights"}


def _plain(value: Any) -> Any:
    """A parsed option as a recipe would give it: paths as strings, an empty list as not given."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value] or None
    return value


def config_from_options(params: dict[str, Any], command: str | None = None):
    """The ``TrainConfig`` of a command's parsed options (``ctx.params``; None: not given): flags override the
    recipe (``--config``), which overrides the method's defaults. ``command``: refuse methods it does not run."""
    from ..errors import UsageError
    from ..train.config import load_recipe, parse_loss_weights, resolve_config
    from ..train.methods import method_names

    values = {FIELD_OF_OPTION.get(k, k): _plain(v) for k, v in params.items()}
    config = values.pop("config")
    recipe = load_recipe(config) if config else {}
    method = values.pop("method") or recipe.get("method") or DEFAULT_METHOD.get(command)
    if command is not None and method not in method_names(command):
        raise UsageError(f"--method must be one of {', '.join(method_names(command))}, got {method!r}")
    values["loss_weights"] = parse_loss_weights(values["loss_weights"])
    values["resume"] = values["resume"] or None  # not given: the recipe's
    return resolve_config(method, recipe, **values)


def run_training(params: dict[str, Any], verb: str, command: str | None = None) -> None:
    """Train as the command's parsed options say and print where the model is."""
    from ..train.loop import train as run
    from .common import print_error, print_line

    cfg = config_from_options(params, command)
    if not cfg.data:
        print_error("no training data: pass --data DIR (or `data:` in the recipe)")
        raise typer.Exit(2)
    result = run(cfg, echo=print_line)
    print_line(f"{verb} to step {result.step} in {result.seconds:.1f}s; model directory: {result.output} "
               f"(srx upscale IMAGE --model {result.output})")
