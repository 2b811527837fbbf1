"""``srx upscale``: super-resolve files, folders and globs; safe to run in scripts over thousands of files."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..limits import DEFAULT_MAX_PIXELS
from .common import (BaseOpt, ColorFixOpt, CompileOpt, DeviceOpt, DtypeOpt, ModelOpt, OverlapOpt, PixelGuidanceOpt,
                     PromptExtractorOpt, PromptOpt, SamplerOpt, SeedOpt, SemanticGuidanceOpt, TileBatchOpt, TileOpt,
                     WeightsOpt, err_console, guidance_options, print_error, print_line, report_errors, user_message)

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
        if error:  # file names are user text: printed verbatim, never read as markup
            print_error(text)
        elif not self.quiet:
            print_line(text)

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


@contextlib.contextmanager
def _interrupt_held():
    """Hold a Ctrl-C until the block ends, then raise it.

    A module interrupted halfway through its import (torch takes seconds) cannot be imported again: the
    process would crash on the way out instead of reporting what it did.
    """
    held: list[int] = []
    try:
        previous = signal.getsignal(signal.SIGINT)
        if previous in (signal.SIG_IGN, None):
            yield
            return
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            raise KeyboardInterrupt


def _emit_json(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def _output_target(output: str | None) -> tuple[Path | None, bool]:
    """(path, names a folder for sure): a trailing slash or an existing folder."""
    if not output:
        return None, False
    path = Path(output)
    return path, output.endswith(("/", os.sep)) or path.is_dir()


def _plan(inputs, output, fmt, suffix, recursive, overwrite):
    """Discover and plan; usage errors (nothing to do, an output that cannot be what -o says) raise UsageError."""
    from ..errors import UsageError
    from ..io.batch import discover, plan_outputs
    from ..io.imageio import FORMAT_BY_NAME

    jobs = discover(inputs, recursive, suffix)
    if not jobs:
        raise UsageError("no input images found")
    pending = [j for j in jobs if j.status == "pending"]
    if not pending and all(j.status == "failed" for j in jobs):  # every input missing: nothing to do
        raise UsageError("; ".join(j.error for j in jobs))
    out_path, is_folder = _output_target(output)
    names_file = out_path is not None and not is_folder and bool(out_path.suffix)
    several = len(pending) > 1 or any(j.relative is not None for j in pending)
    out_fmt = FORMAT_BY_NAME.get(out_path.suffix.lower().lstrip(".")) if names_file else None
    if out_fmt is not None and several:
        raise UsageError(f"-o {output} names one file but there are {len(pending)} input images; "
                         f"give a folder (e.g. -o {out_path.with_suffix('')}/)")
    single_file = names_file and len(pending) == 1 and not several
    if single_file and out_fmt is not None and fmt not in (None, "same") and FORMAT_BY_NAME[fmt] != out_fmt:
        raise UsageError(f"--format {fmt} conflicts with -o {output} (a {out_path.suffix} file); drop one of them")
    plan_outputs(jobs, out_path, fmt or "png", suffix, overwrite, single_file=single_file)
    return jobs


@report_errors
def upscale(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Output file (with one input file) or folder (created if missing; a trailing / "
                               "always means a folder). Default: beside each input, named <name><suffix>.<ext>.")] = None,
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
    prompt_extractor: PromptExtractorOpt = None,
    pixel_guidance: PixelGuidanceOpt = None,
    semantic_guidance: SemanticGuidanceOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    compile_unet: CompileOpt = False,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", help="Output format: same (as the input) | png | jpg | webp | tiff. Default: png, or the "
                         "extension of -o FILE.")] = None,
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
    2 usage error (including: no input image), 130 interrupted. Existing outputs are skipped unless
    --overwrite. Parallel runs over the same outputs share the work.
    """
    started = time.perf_counter()
    interrupted: int | None = None
    jobs: list = []
    reporter: Reporter | None = None
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Terminated(signum)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (e.g. embedded use)
        previous_term = None
    try:
        with _interrupt_held():  # torch and the engine: a half-done import would crash the rest of the run
            from ..errors import SrxError
            from ..io.batch import run_jobs  # imports torch
            from ..models.loading import load_model

        try:
            jobs, sr_args = _prepare(inputs, output, model, base, weights, scale, tile, overlap, tile_batch,
                                     color_fix, prompt, seed, sampler, fmt, quality, suffix, recursive,
                                     skip_existing, overwrite, max_pixels, prompt_extractor,
                                     guidance_options(pixel_guidance, semantic_guidance))
        except SrxError as e:
            if json_out:
                _emit_json({"error": user_message(e)})
            raise
        reporter = Reporter(len(jobs), quiet)
        for job in jobs:  # failures and skips found while planning
            if job.status != "pending":
                reporter.done(job)
        if any(j.status == "pending" for j in jobs):
            spec_model, base_arg, weights_arg, options = sr_args
            try:
                sr = load_model(spec_model, base=base_arg, weights=weights_arg, device=device, dtype=dtype,
                                compile_unet=compile_unet, prompt_extractor=options.prompt_extractor)
            except SrxError as e:
                if json_out:
                    _emit_json({"error": user_message(e), **_report(jobs, started, None)})
                raise

            def process(job) -> None:
                reporter.start(job)
                convert_one(sr, job, options, quality, max_pixels, overwrite, reporter.on_tile)

            run_jobs(jobs, process, reporter.done, overwrite=overwrite)
    except KeyboardInterrupt:
        interrupted = signal.SIGINT
    except _Terminated as t:
        interrupted = t.signum
    finally:
        if reporter is not None:
            reporter.stop()
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)

    doc = _report(jobs, started, interrupted)
    if json_out:
        _emit_json(doc)
    totals = doc["totals"]
    if interrupted is not None:
        err_console.print(f"interrupted: {totals['written']} written, {totals['skipped']} skipped, "
                          f"{totals['failed']} failed, {totals['pending']} not done", highlight=False)
        raise typer.Exit(128 + int(interrupted))
    if not quiet:
        err_console.print(f"{totals['written']} written, {totals['skipped']} skipped, {totals['failed']} failed "
                          f"({totals['seconds']:.1f}s)", highlight=False)
    raise typer.Exit(1 if totals["failed"] else 0)


def _report(jobs: list, started: float, interrupted: int | None) -> dict:
    from ..io.batch import BatchSummary

    summary = BatchSummary.of(jobs, time.perf_counter() - started)
    return {"files": [j.to_json() for j in jobs], "totals": summary.__dict__, "interrupted": interrupted is not None}


def _prepare(inputs, output, model, base, weights, scale, tile, overlap, tile_batch, color_fix, prompt, seed,
             sampler, fmt, quality, suffix, recursive, skip_existing, overwrite, max_pixels, prompt_extractor=None,
             guidance=None):
    """Every check that needs no model: options, inputs, output plan; stale temporary files removed."""
    from ..engine.pipeline import UpscaleOptions
    from ..errors import UsageError
    from ..families import family_of
    from ..io.fsio import remove_stale, stale_files
    from ..models.loading import resolve_spec

    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 1 <= quality <= 100:
        raise UsageError(f"--quality must be in 1..100, got {quality}")
    if skip_existing and overwrite:
        raise UsageError("--skip-existing and --overwrite exclude each other")
    if max_pixels < 1:
        raise UsageError("--max-pixels must be positive")
    if scale is not None and not math.isfinite(scale):
        raise UsageError(f"--scale must be a finite number >= 1, got {scale}")
    model = model or "lite"  # the embedded default: no download, runs on a CPU
    weights_arg = str(weights) if weights else None
    spec = resolve_spec(model, base, weights_arg)
    options = UpscaleOptions(scale=scale, tile=tile, overlap=overlap, tile_batch=tile_batch, color_fix=color_fix,
                             prompt=prompt, seed=seed, sampler=sampler, prompt_extractor=prompt_extractor,
                             **(guidance or {}))
    resolved = options.resolved(spec)  # usage errors before any work
    family_of(spec).check_sampler(spec, resolved.sampler)  # a multi-step sampler on a one-step model

    jobs = _plan(inputs, output, fmt, suffix, recursive, overwrite)
    for folder in {j.dest.parent for j in jobs if j.dest is not None}:
        for stale in stale_files(folder):  # left by a killed run; never another running srx's files
            remove_stale(stale)
    return jobs, (model, base, weights_arg, options)


def convert_one(sr, job, options, quality: int, max_pixels: int, overwrite: bool, on_tile) -> None:
    """Read, super-resolve (color through the model, alpha resized smoothly), encode, write atomically."""
    from PIL import Image

    from ..engine.resize import pil_resize
    from ..io.batch import check_output_format, output_format
    from ..io.imageio import encode_image, read_image, write_atomic

    image = read_image(job.source, max_pixels)
    job.input_size = image.size
    job.notes += image.notes
    out_fmt = output_format(job.dest, "same")  # the planned extension decides
    job.notes += check_output_format(out_fmt, image.alpha is not None, image.bit_depth)
    color = sr.upscale_tensor(image.model_input, options, on_tile=on_tile)  # 8-bit: uint8, the authors' path
    alpha = None
    if image.alpha is not None:
        alpha = pil_resize(image.alpha, color.shape[-2], color.shape[-1], Image.Resampling.BICUBIC)
        if out_fmt not in ("PNG", "WEBP", "TIFF"):
            color = color * alpha + (1 - alpha)  # flatten onto white
            alpha = None
    data = encode_image(color, alpha, out_fmt, grayscale=image.grayscale, bit_depth=image.bit_depth,
                        quality=quality, exif=image.exif, icc_profile=image.icc_profile, dpi=image.dpi,
                        notes=job.notes)
    write_atomic(job.dest, data, overwrite=overwrite)
    job.output_size = (color.shape[-1], color.shape[-2])
    job.output_bytes = len(data)
