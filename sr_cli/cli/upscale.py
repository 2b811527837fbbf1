"""``srx upscale``: super-resolve files, folders and globs; safe to run in scripts over thousands of files."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from typing import Annotated

import typer

from ..limits import DEFAULT_MAX_PIXELS
from ..serve.client import hand_to_worker
from ..engine.options import UpscaleOptions
from ..usecases.upscale import UpscaleRequest
from .common import (
    BaseOpt,
    ColorFixOpt,
    CompileOpt,
    DetailOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    OverlapOpt,
    PixelGuidanceOpt,
    PromptExtractorOpt,
    PromptOpt,
    SamplerOpt,
    SeedOpt,
    SemanticGuidanceOpt,
    TileBatchOpt,
    TileOpt,
    WeightsOpt,
    err_console,
    print_error,
    print_line,
    report_errors,
    user_message,
)


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
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

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


def _planned_by_worker(remote, json_out: bool, quiet: bool) -> Reporter:
    """The worker's plan (its usage errors reported as a direct run reports them) and the Reporter for it."""
    from ..errors import SrxError

    try:
        jobs = remote.plan()
    except SrxError as e:
        if json_out:
            _emit_json({"error": user_message(e)})
        raise
    return Reporter(len(jobs), quiet)


def _emit_json(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


@report_errors
def upscale(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Output file (with one input file) or folder (created if missing; a trailing / "
                               "always means a folder). Default: beside each input, named <name><suffix>.<ext>.")] = None,
    model: ModelOpt = None,
    base: BaseOpt = None,
    weights: WeightsOpt = None,
    scale: Annotated[float | None, typer.Option(
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
    detail: DetailOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    compile_unet: CompileOpt = False,
    fmt: Annotated[str | None, typer.Option(
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
    ray: Annotated[bool, typer.Option("--ray", help="Run as a Ray Data job on the cluster at --ray-address, else "
                                                    "$RAY_ADDRESS, else a local one (pip install \"srx\\[ray]\").")] = False,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="The Ray cluster for --ray "
                                                                           "(implies --ray).")] = None,
    no_server: Annotated[bool, typer.Option(
        "--no-server", help="Run here even when a `srx serve` worker with this model runs.")] = False,
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
    remote = None
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Terminated(signum)

    options = UpscaleOptions(scale=scale, tile=tile, overlap=overlap, tile_batch=tile_batch, color_fix=color_fix,
                             prompt=prompt, seed=seed, sampler=sampler, prompt_extractor=prompt_extractor,
                             pixel_guidance=pixel_guidance, semantic_guidance=semantic_guidance, detail=detail)
    request = UpscaleRequest(
        inputs=list(inputs), output=output, model=model, base=base, weights=str(weights) if weights else None,
        options=options, device=device, dtype=dtype, compile_unet=compile_unet, fmt=fmt, quality=quality,
        suffix=suffix, recursive=recursive, skip_existing=skip_existing, overwrite=overwrite, max_pixels=max_pixels)
    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (e.g. embedded use)
        previous_term = None
    try:
        local = no_server or ray or ray_address  # --ray: the cluster's actors hold the models
        remote = None if local else hand_to_worker(request, started)  # a warm `srx serve` worker
        if remote is not None:
            reporter = _planned_by_worker(remote, json_out, quiet)
            jobs = remote.jobs
            remote.follow(reporter)
        else:
            with _interrupt_held():  # torch and the engine: a half-done import would crash the rest of the run
                from ..errors import SrxError
                from ..io import batch as io_batch  # noqa: F401  (imports torch under the held Ctrl-C)
                from ..models import loading as model_loading  # noqa: F401
                from ..usecases import sharding
                from ..usecases import upscale as usecase

            try:
                devices = sharding.device_list(request.device)  # a list: one worker process per device
                batch = usecase.prepare(request)
            except SrxError as e:
                if json_out:
                    _emit_json({"error": user_message(e)})
                raise
            jobs = batch.jobs
            reporter = Reporter(len(jobs), quiet)
            for job in jobs:  # failures and skips found while planning
                if job.status != "pending":
                    reporter.done(job)
            if batch.pending:
                sr = None  # stays None when Ray or the device workers convert the files
                try:
                    if ray or ray_address:
                        from ..usecases.ray_job import run_on_ray

                        run_on_ray(batch, ray_address, on_done=reporter.done)
                    elif devices:
                        sharding.run_sharded(batch, devices, on_start=reporter.start, on_done=reporter.done)
                    else:
                        sr = usecase.load(request, batch.options)
                except SrxError as e:
                    if json_out:
                        _emit_json({"error": user_message(e), **usecase.report(jobs, started, None)})
                    raise
                if sr is not None:
                    usecase.run(batch, sr, on_start=reporter.start, on_tile=reporter.on_tile, on_done=reporter.done)
    except KeyboardInterrupt:
        interrupted = signal.SIGINT
    except _Terminated as t:
        interrupted = t.signum
    finally:
        if reporter is not None:
            reporter.stop()
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)

    from ..usecases.upscale import report

    doc = remote.report(interrupted) if remote is not None else report(jobs, started, interrupted)
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
