"""What every command shares: option aliases, error reporting, the console."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from ..errors import OptionError, SrxError

# Errors and progress go to stderr; stdout is kept for results (e.g. --json).
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


# ----------------------------------------------------------------------------- printing user text
# Messages carry file names, model names and commands ("holiday[draft].png", "pip install 'srx[eval]'"):
# rich markup would eat or choke on their brackets, so user text is always printed as a plain Text
# (no markup, no emoji codes, no highlighting) and only our own prefix is styled. soft_wrap keeps long
# lines whole for copy and paste.
def _styled(prefix: str, style: str, message: object) -> Text:
    text = Text()
    if prefix:
        text.append(prefix, style=style)
        text.append(" ")
    text.append(str(message))
    return text


def print_line(message: object, console: Console | None = None) -> None:
    """Print ``message`` verbatim (no markup) on stderr, or on ``console``."""
    console = console or err_console
    if not console.is_terminal:  # a pipe or a file: the bytes as they are (rich would expand tabs)
        console.file.write(f"{message}\n")
        console.file.flush()
        return
    console.print(Text(str(message)), soft_wrap=True, highlight=False, emoji=False)


# The engine names the setting (an ``UpscaleOptions`` field); users typed a flag.
FLAG_OF_FIELD = {"scale": "--scale", "tile": "--tile", "overlap": "--overlap", "tile_batch": "--tile-batch",
                 "color_fix": "--color-fix", "prompt": "--prompt", "seed": "--seed", "sampler": "--sampler",
                 "prompt_extractor": "--prompt-extractor", "pixel_guidance": "--pixel-guidance",
                 "semantic_guidance": "--semantic-guidance", "detail": "--detail"}


def user_message(error: object) -> str:
    """The text of an error as the command line reports it: an ``OptionError`` under its flag's name."""
    if isinstance(error, OptionError):
        return f"{FLAG_OF_FIELD.get(error.field, error.field)} {error.detail}"
    return str(error)


def print_error(message: object, console: Console | None = None) -> None:
    """``error: MESSAGE`` on stderr: the prefix in red, the message verbatim (errors: ``user_message``)."""
    (console or err_console).print(_styled("error:", "red", user_message(message)), soft_wrap=True, highlight=False,
                                   emoji=False)


def print_note(message: object, console: Console | None = None) -> None:
    """``note: MESSAGE`` on stderr: the prefix in yellow, the message verbatim."""
    (console or err_console).print(_styled("note:", "yellow", message), soft_wrap=True, highlight=False,
                                   emoji=False)


def report_errors(fn):
    """Turn SrxErrors into one line on stderr and their exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SrxError as e:
            if os.environ.get("SRX_DEBUG"):
                raise
            print_error(e)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print_line("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def fail(message: str, code: int = 2) -> None:
    print_error(message)
    raise typer.Exit(code)


# ----------------------------------------------------------------------------- shared options
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Model name from `srx models list`, a saved model directory, or a model "
                 "file (.pth/.safetensors: Real-ESRGAN, SwinIR, ... any architecture spandrel detects) "
                 "(default: the embedded `lite` model)."),
]
BaseOpt = Annotated[
    Optional[str],
    # Help texts are rich markup: "\\[" keeps the brackets.
    typer.Option("--base", help="Override the base diffusion model: a diffusers directory or org/name\\[@revision]."),
]
WeightsOpt = Annotated[
    Optional[Path],
    typer.Option("--weights", help="Override the model's weights file (in its published format, e.g. osediff.pkl)."),
]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto | cpu | cuda | cuda:N | mps; a list (cuda:0,cuda:1 or cuda:all; cpu,cpu) shards the "
                     "files over one worker process per device.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16/fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16.")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the denoiser: faster per tile after a one-time compilation (for batches).")]
TileOpt = Annotated[
    Optional[int],
    typer.Option("--tile", help="Tile size in output pixels (multiple of 8; 0 = no tiling). Default: the model's (512)."),
]
OverlapOpt = Annotated[
    Optional[int], typer.Option("--overlap", help="Tile overlap in output pixels. Default: the model's (64).")
]
TileBatchOpt = Annotated[Optional[int], typer.Option("--tile-batch", help="Tiles per forward pass (default 1).")]
ColorFixOpt = Annotated[
    Optional[str], typer.Option("--color-fix", help="adain | wavelet | none. Default: the model's (adain).")
]
PromptOpt = Annotated[Optional[str], typer.Option("--prompt", help="Text prompt (models with a text condition).")]
SeedOpt = Annotated[
    Optional[int],
    typer.Option("--seed", help="SD family: sample the VAE posterior with this seed (default: its mean). ResShift "
                                "family: seed of the prior noise (default 0). Results are deterministic either way."),
]
SamplerOpt = Annotated[
    Optional[str],
    typer.Option("--sampler", help="ResShift family: one-step (students) | deterministic (SinSR's 15-step DDIM-like) | "
                                   "stochastic (ResShift's 15 steps). Default: the model's."),
]


PromptExtractorOpt = Annotated[
    Optional[str],
    typer.Option("--prompt-extractor", help="OSEDiff: dape (default, as the authors' results: RAM+DAPE tags of the "
                                            "input open the prompt; needs its two weight files) | none (no tags). "
                                            "Other models ignore it."),
]

PixelGuidanceOpt = Annotated[
    Optional[float],
    typer.Option("--pixel-guidance", help="Dual-LoRA models (pisa-sr): strength of the pixel-level LoRA (fidelity: "
                                          "removes noise and compression artifacts, too high over-smooths). "
                                          "Default: the model's (1.0)."),
]
SemanticGuidanceOpt = Annotated[
    Optional[float],
    typer.Option("--semantic-guidance", help="Dual-LoRA models (pisa-sr): strength of the semantic-level LoRA "
                                             "(generated detail, too high adds artifacts; 0 = pixel LoRA only). "
                                             "Default: the model's (1.0). Values other than 1/1 run the UNet twice."),
]

DetailOpt = Annotated[
    Optional[str],
    typer.Option("--detail", help="Models with a detail weight set (lite): auto (default: from each input's "
                                  "softness: clean inputs get none, soft camera photos the most) or a fixed "
                                  "0..1 (0: the faithful set, no generated texture; 1: the sharp set)."),
]


def guidance_options(pixel: float | None, semantic: float | None, detail: str | None = None) -> dict[str, float | str]:
    """The guidance flags (--pixel-guidance, --semantic-guidance, --detail) as ``UpscaleOptions`` fields (only
    those given: the model's defaults otherwise)."""
    given = {"pixel_guidance": pixel, "semantic_guidance": semantic, "detail": detail}
    return {k: v for k, v in given.items() if v is not None}


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
