"""``srx upscale``: super-resolve files, folders and globs; safe to run in scripts over thousands of files."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..limits import DEFAULT_MAX_PIXELS
from .common import (BaseOpt, ColorFixOpt, CompileOpt, DeviceOpt, DtypeOpt, ModelOpt, OverlapOpt, PromptOpt,
                     SamplerOpt, SeedOpt, TileBatchOpt, TileOpt, WeightsOpt, err_console, fail, report_errors)

FORMATS = ("same", "png", "jpg", "webp", "tiff")


class _Terminated(BaseException):
    """SIGTERM turned into an exception so that temporary files are cleaned up on the way out."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Reporter:
    """Progress and per-file lines on stderr; ``--json`` owns stdout; ``--quiet`` leaves only errors."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.progress = None
        if not quiet and err_console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=err_console, transient=True)
            self.files = self.progress.add_task("images", total=total)
            self.tiles = self.progress.add_task("tiles", total=1, visible=False)
            self.progress.start()

    def line(self, text: str, error: bool = False) -> None:
        if error:
            err_console.print(f"[red]error:[/red] {text}", soft_wrap=True, highlight=False, markup=True)
        elif not self.quiet:
            err_console.print(text, soft_wrap=True, highlight=False, markup=False)

    def start(self, job) -> None:
        if self.progress:
            self.progress.update(self.files, description=job.source.name)

    def on_tile(self, done: int, total: int) -> None:
        if self.progress:
            self.progress.update(self.tiles, completed=done, total=total, visible=total > 1)

    def done(self, job) -> None:
        if job.status == "failed":
            self.line(job.error, error=True)
        else:
            for note in job.notes:
                self.line(f"note: {job.source}: {note}")
            if job.status == "written":
                w, h = job.output_size
                self.line(f"written {job.source} -> {job.dest} ({w}x{h}, {job.seconds:.1f}s)")
            else:
                self.line(f"skipped {job.source}: {job.error}")
        if self.progress:
            self.progress.advance(self.files)
            self.progress.update(self.tiles, visible=False)

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()


@report_errors
def upscale(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Output file (with one input file) or folder (created if missing). "
                               "Default: beside each input, named <name><suffix>.<ext>.")] = None,
    model: ModelOpt = None,
    base: BaseOpt = None,
    weights: WeightsOpt = None,
    scale: Annotated[Optional[float], typer.Option(
        "--scale", help="Output scale, any factor >= 1. The model runs at its native scale (x4 for every "
                        "published model) and other factors resize its result with Lanczos.")] = None,
    tile: TileOpt = None,
    overlap: OverlapOpt = None,
    tile_batch: TileBatchOpt = None,
    color_fix: ColorFixOpt = None,
    prompt: PromptOpt = None,
    seed: SeedOpt = None,
    sampler: SamplerOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    compile_unet: CompileOpt = False,
    fmt: Annotated[str, typer.Option("--format", help="Output format: same (as the input) | png | jpg | webp | tiff.")] = "png",
    quality: Annotated[int, typer.Option("--quality", help="JPEG/WebP quality, 1-100.")] = 95,
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names.")] = "_srx",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Walk subfolders; mirror them under -o.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip outputs that exist (the default).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist.")] = False,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Refuse inputs with more pixels than this.")] = DEFAULT_MAX_PIXELS,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON report on stdout at the end.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Super-resolve images with a one-step diffusion model.

    Exit codes: 0 every image written or skipped, 1 some failed (the others are written),
    2 usage error, 130 interrupted. Existing outputs are skipped unless --overwrite.
    """
    from ..batch import BatchSummary, discover, plan_outputs, run_jobs
    from ..engine.pipeline import UpscaleOptions
    from ..imageio import stale_temp_files
    from ..loading import resolve_spec

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 1 <= quality <= 100:
        fail(f"--quality must be in 1..100, got {quality}")
    if skip_existing and overwrite:
        fail("--skip-existing and --overwrite exclude each other")
    if max_pixels < 1:
        fail("--max-pixels must be positive")
    model = model or "lite"  # the embedded default: no download, runs on a CPU
    weights_arg = str(weights) if weights else None
    spec = resolve_spec(model, base, weights_arg)
    options = UpscaleOptions(scale=scale, tile=tile, overlap=overlap, tile_batch=tile_batch, color_fix=color_fix,
                             prompt=prompt, seed=seed, sampler=sampler)
    options.resolved(spec)  # usage errors before any work

    jobs = discover(inputs, recursive, suffix)
    if not jobs:
        fail("no input images found")
    plan_outputs(jobs, output, fmt, suffix, overwrite)
    for folder in {j.dest.parent for j in jobs if j.dest is not None}:
        for stale in stale_temp_files(folder):  # left by a killed run
            stale.unlink(missing_ok=True)

    reporter = Reporter(len(jobs), quiet)
    started = time.perf_counter()
    interrupted: int | None = None
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Terminated(signum)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (e.g. embedded use)
        previous_term = None
    try:
        for job in jobs:  # failures and skips found while planning
            if job.status != "pending":
                reporter.done(job)
        if any(j.status == "pending" for j in jobs):
            from ..loading import load_model

            sr = load_model(model, base=base, weights=weights_arg, device=device, dtype=dtype,
                            compile_unet=compile_unet)

            def process(job) -> None:
                reporter.start(job)
                convert_one(sr, job, options, fmt, quality, max_pixels, overwrite, reporter.on_tile)

            run_jobs(jobs, process, reporter.done)
    except KeyboardInterrupt:
        interrupted = signal.SIGINT
    except _Terminated as t:
        interrupted = t.signum
    finally:
        reporter.stop()
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)

    summary = BatchSummary.of(jobs, time.perf_counter() - started)
    if json_out:
        doc = {"files": [j.to_json() for j in jobs], "totals": summary.__dict__, "interrupted": interrupted is not None}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        sys.stdout.flush()
    if interrupted is not None:
        err_console.print(f"interrupted: {summary.written} written, {summary.skipped} skipped, {summary.failed} failed, "
                          f"{summary.pending} not done")
        raise typer.Exit(128 + int(interrupted))
    if not quiet:
        err_console.print(f"{summary.written} written, {summary.skipped} skipped, {summary.failed} failed "
                          f"({summary.seconds:.1f}s)", highlight=False)
    raise typer.Exit(1 if summary.failed else 0)


def convert_one(sr, job, options, fmt: str, quality: int, max_pixels: int, overwrite: bool, on_tile) -> None:
    """Read, super-resolve (color through the model, alpha resized smoothly), encode, write atomically."""
    from PIL import Image

    from ..batch import check_output_format, output_format
    from ..engine.resize import pil_resize
    from ..imageio import encode_image, read_image, write_atomic

    image = read_image(job.source, max_pixels)
    job.input_size = image.size
    job.notes += image.notes
    out_fmt = output_format(job.dest, "same")  # the planned extension decides
    job.notes += check_output_format(out_fmt, image.alpha is not None, image.bit_depth)
    color = sr.upscale_tensor(image.color, options, on_tile=on_tile)
    alpha = None
    if image.alpha is not None:
        alpha = pil_resize(image.alpha, color.shape[-2], color.shape[-1], Image.Resampling.BICUBIC)
        if out_fmt not in ("PNG", "WEBP", "TIFF"):
            color = color * alpha + (1 - alpha)  # flatten onto white
            alpha = None
    data = encode_image(color, alpha, out_fmt, grayscale=image.grayscale, bit_depth=image.bit_depth,
                        quality=quality, exif=image.exif, icc_profile=image.icc_profile, dpi=image.dpi)
    write_atomic(job.dest, data, overwrite=overwrite)
    job.output_size = (color.shape[-1], color.shape[-2])
    job.output_bytes = len(data)
