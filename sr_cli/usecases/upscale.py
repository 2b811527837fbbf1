"""Upscale a batch of files: validate the request, plan outputs, load the model, convert each file, report.

Everything ``srx upscale`` does between parsing its options and printing lives here, so every way of running it
(one process, a warm worker, one process per device, Ray actors) shares one definition of a job.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..engine.options import UpscaleOptions
from ..limits import DEFAULT_MAX_PIXELS

FORMATS = ("same", "png", "jpg", "webp", "tiff")


@dataclass
class UpscaleRequest:
    """Everything ``srx upscale`` was asked to do, in plain values (JSON round-trips it: the worker protocol)."""

    inputs: list[str]
    output: str | None = None
    model: str | None = None
    base: str | None = None
    weights: str | None = None
    options: UpscaleOptions = field(default_factory=UpscaleOptions)  # the engine's settings (None: the model's)
    device: str = "auto"
    dtype: str = "auto"
    compile_unet: bool = False
    fmt: str | None = None
    quality: int = 95
    suffix: str = "_srx"
    recursive: bool = False
    skip_existing: bool = False
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> UpscaleRequest:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        known["options"] = UpscaleOptions(**known.get("options", {}))
        return cls(**known)

    @property
    def model_name(self) -> str:
        return self.model or "lite"  # the embedded default: no download, runs on a CPU

    def model_key(self) -> tuple:
        """What identifies the loaded model: requests with equal keys can share one loaded network."""
        return (self.model_name, self.base, self.weights, self.device, self.dtype, self.compile_unet,
                self.options.prompt_extractor)


@dataclass
class PreparedBatch:
    """A checked request: its jobs (planned outputs, settled skips/failures) and the engine options."""

    request: UpscaleRequest
    jobs: list
    options: Any  # engine.pipeline.UpscaleOptions

    @property
    def pending(self) -> list:
        return [j for j in self.jobs if j.status == "pending"]


def output_target(output: str | None) -> tuple[Path | None, bool]:
    """(path, names a folder for sure): a trailing slash or an existing folder."""
    if not output:
        return None, False
    path = Path(output)
    return path, output.endswith(("/", os.sep)) or path.is_dir()


def plan_jobs(inputs, output, fmt, suffix, recursive, overwrite) -> list:
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
    out_path, is_folder = output_target(output)
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


def check_request(req: UpscaleRequest):
    """Every check that needs neither inputs nor a model; returns the engine's ``UpscaleOptions``."""
    from ..errors import UsageError
    from ..families import family_of
    from ..models.loading import resolve_spec

    if req.fmt is not None and req.fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {req.fmt!r}")
    if not 1 <= req.quality <= 100:
        raise UsageError(f"--quality must be in 1..100, got {req.quality}")
    if req.skip_existing and req.overwrite:
        raise UsageError("--skip-existing and --overwrite exclude each other")
    if req.max_pixels < 1:
        raise UsageError("--max-pixels must be positive")
    if req.options.scale is not None and not math.isfinite(req.options.scale):
        raise UsageError(f"--scale must be a finite number >= 1, got {req.options.scale}")
    spec = resolve_spec(req.model_name, req.base, req.weights)
    options = req.options
    resolved = options.resolved(spec)  # usage errors before any work
    family_of(spec).check_sampler(spec, resolved.sampler)  # a multi-step sampler on a one-step model
    return options


def prepare(req: UpscaleRequest) -> PreparedBatch:
    """Options, inputs, output plan; stale temporary files (left by killed runs) removed. Needs no model."""
    from ..io.fsio import remove_stale, stale_files

    options = check_request(req)
    jobs = plan_jobs(req.inputs, req.output, req.fmt, req.suffix, req.recursive, req.overwrite)
    for folder in {j.dest.parent for j in jobs if j.dest is not None}:
        for stale in stale_files(folder):  # left by a killed run; never another running srx's files
            remove_stale(stale)
    return PreparedBatch(req, jobs, options)


def load(req: UpscaleRequest, options):
    """The model the request names, on its device (the slow part: seconds to minutes)."""
    from ..models.loading import load_model

    return load_model(req.model_name, base=req.base, weights=req.weights, device=req.device, dtype=req.dtype,
                      compile_unet=req.compile_unet, prompt_extractor=options.prompt_extractor)


def convert_one(sr, job, options, quality: int, max_pixels: int, overwrite: bool, on_tile=None) -> None:
    """Read, super-resolve (color through the model, alpha resized smoothly), encode, write atomically."""
    from PIL import Image

    from ..engine.resize import pil_resize
    from ..io.batch import check_output_format, output_format
    from ..io.imageio import encode_image, read_image, write_atomic
    from .oom_fallback import upscale_fitting_memory

    image = read_image(job.source, max_pixels)
    job.input_size = image.size
    job.notes += image.notes
    out_fmt = output_format(job.dest, "same")  # the planned extension decides
    job.notes += check_output_format(out_fmt, image.alpha is not None, image.bit_depth)
    color = upscale_fitting_memory(  # out of GPU memory: smaller tile batches, then smaller tiles
        lambda opts: sr.upscale_tensor(image.model_input, opts, on_tile=on_tile),  # 8-bit: uint8, the authors' path
        options, options.resolved(sr.spec), job.notes)
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


def run(batch: PreparedBatch, sr, on_start: Callable | None = None, on_tile: Callable | None = None,
        on_done: Callable | None = None, jobs: list | None = None) -> None:
    """Convert the batch's pending jobs (or ``jobs``, a subset) on a loaded model; claims make parallel runs share."""
    from ..io.batch import run_jobs

    req = batch.request

    def process(job) -> None:
        if on_start is not None:
            on_start(job)
        convert_one(sr, job, batch.options, req.quality, req.max_pixels, req.overwrite, on_tile)

    run_jobs(batch.jobs if jobs is None else jobs, process, on_done or (lambda job: None), overwrite=req.overwrite)


def report(jobs: list, started: float, interrupted: int | None) -> dict:
    """The ``--json`` document: one entry per file, totals, whether the run was interrupted."""
    from ..io.batch import BatchSummary

    summary = BatchSummary.of(jobs, time.perf_counter() - started)
    return {"files": [j.to_json() for j in jobs], "totals": summary.__dict__, "interrupted": interrupted is not None}
