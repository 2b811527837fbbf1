"""``srx bench``: speed and memory of the engine on one image (also ``python -m sr_cli.bench``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import common
from .common import fail, report_errors

CHANNELS_LAST = ("auto", "on", "off")


@report_errors
def bench(
    model: common.ModelOpt = None,
    size: Annotated[int, typer.Option("--size", help="Input side in pixels (the output is x4).")] = 512,
    image: Annotated[Optional[Path], typer.Option(
        "--image", help="Benchmark on a centre crop of this photograph (default: a synthetic image).")] = None,
    tile: common.TileOpt = None,
    overlap: common.OverlapOpt = None,
    tile_batch: common.TileBatchOpt = None,
    color_fix: common.ColorFixOpt = None,
    prompt_extractor: common.PromptExtractorOpt = None,
    pixel_guidance: common.PixelGuidanceOpt = None,
    semantic_guidance: common.SemanticGuidanceOpt = None,
    detail: common.DetailOpt = None,
    device: common.DeviceOpt = "auto",
    dtype: common.DtypeOpt = "auto",
    repeat: Annotated[int, typer.Option("--repeat", help="Timed runs (the fastest is reported).")] = 2,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs before them.")] = 1,
    compile_unet: common.CompileOpt = False,
    channels_last: Annotated[str, typer.Option(
        "--channels-last", help="auto | on | off: memory format of the convolutional components "
                                "(auto: the engine's measured choice).")] = "auto",
    no_flops: Annotated[bool, typer.Option("--no-flops", help="Do not count the model's FLOPs.")] = False,
    peer: Annotated[bool, typer.Option(
        "--peer", help="Also time a reference-style loop (tile by tile, batch 1, LoRA unmerged; sd21, tiny-sd).")] = False,
    sweep_tile_batch: Annotated[Optional[list[int]], typer.Option(
        "--sweep-tile-batch", metavar="N",
        help="Run at this tile batch (repeatable); report the best (ms per tile) and the sweep.")] = None,
    peak_tflops: Annotated[Optional[float], typer.Option(
        "--peak-tflops", help="The device's peak TFLOP/s, for the fraction of peak achieved.")] = None,
    memory_scaling: Annotated[bool, typer.Option(
        "--memory-scaling", help="Compare peak memory at --scaling-sizes (each in a fresh process).")] = False,
    scaling_sizes: Annotated[tuple[int, int], typer.Option(
        "--scaling-sizes", metavar="SMALL LARGE", help="The two input sides of --memory-scaling.")] = (256, 1024),
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON to this file.")] = None,
    json_only: Annotated[bool, typer.Option("--json-only", help="Print only the JSON report (on stdout).")] = False,
) -> None:
    """Speed and memory benchmark of the engine: per-stage times, images/s, TFLOP/s, peak memory.

    --model also takes tiny-sd, sd21 (SD 2.1-base size) and resshift-v1 (SinSR/ResShift size): random
    weights, no downloads.
    """
    from ..bench import BenchSettings, run
    from ..engine.pipeline import UpscaleOptions

    options = UpscaleOptions(tile=tile, overlap=overlap, tile_batch=tile_batch, color_fix=color_fix,
                             prompt_extractor=prompt_extractor, pixel_guidance=pixel_guidance,
                             semantic_guidance=semantic_guidance, detail=detail)
    settings = BenchSettings(
        model=model or "lite", size=size, image=image, options=options, device=device, dtype=dtype, repeat=repeat,
        warmup=warmup, compile_unet=compile_unet, channels_last=channels_last, count_flops=not no_flops, peer=peer,
        sweep_tile_batch=tuple(sweep_tile_batch or ()), peak_tflops=peak_tflops, memory_scaling=memory_scaling,
        scaling_sizes=scaling_sizes, json_file=json_file, json_only=json_only,
    )
    check_settings(settings)
    run(settings)


def _at_least(flag: str, values: int | tuple[int, ...] | None, minimum: int) -> None:
    for value in values if isinstance(values, tuple) else (values,):
        if value is not None and value < minimum:
            fail(f"argument {flag}: must be at least {minimum}, got {value}")


def check_settings(s) -> None:
    """User errors found before anything is loaded or measured: one line each, exit 2."""
    from ..bench import RANDOM_WEIGHTS
    from ..models.registry import is_model_dir, registry

    o = s.options
    for flag, value, minimum in (("--size", s.size, 1), ("--tile", o.tile, 0), ("--overlap", o.overlap, 0),
                                 ("--tile-batch", o.tile_batch, 1), ("--repeat", s.repeat, 1),
                                 ("--warmup", s.warmup, 0), ("--sweep-tile-batch", s.sweep_tile_batch, 1),
                                 ("--scaling-sizes", s.scaling_sizes, 1)):
        _at_least(flag, value, minimum)
    if s.channels_last not in CHANNELS_LAST:
        fail(f"--channels-last must be one of {', '.join(CHANNELS_LAST)}, got {s.channels_last!r}")
    if (s.model not in RANDOM_WEIGHTS and s.model not in registry() and not is_model_dir(s.model)
            and not Path(s.model).expanduser().is_file()):
        fail(f"--model {s.model!r}: not {', '.join(RANDOM_WEIGHTS)}, a registry model "
             f"({', '.join(sorted(registry()))}), a model directory or a model file")
    if s.image is not None:
        _check_image(s.image)
    if s.json_file is not None:
        _check_writable(s.json_file)


def _check_image(image: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    if not image.is_file():
        fail(f"{image}: no such file" if not image.exists() else f"{image}: not a file")
    if image.stat().st_size == 0:
        fail(f"{image}: the file is empty (0 bytes)")
    try:
        with Image.open(image) as im:
            im.size  # noqa: B018 - the header is read: enough to know Pillow can open it
    except (UnidentifiedImageError, OSError, ValueError) as e:
        fail(f"{image}: not an image Pillow can read ({e})")


def _check_writable(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        fail(f"--json {path}: is a folder")
    if not folder.is_dir():
        fail(f"--json {path}: the folder {folder} does not exist")
    existed = path.exists()
    try:  # open it for writing now (appending nothing): a benchmark is not run for a report it cannot write
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666))
    except OSError as e:
        fail(f"--json {path}: cannot write ({e.strerror or e})")
    if not existed:
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m sr_cli.bench``: this command on its own (exits with its code, as ``srx bench``)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.command()(bench)
    try:
        code = app(args=argv, prog_name="python -m sr_cli.bench", standalone_mode=False)
    except typer.Abort:
        raise SystemExit(130) from None
    except typer.TyperException as e:  # a value that does not parse, an unknown option: as srx reports them
        e.show()
        raise SystemExit(e.exit_code) from None
    if code:
        raise SystemExit(code)
