"""Batch conversion for ``srx upscale``: find inputs, plan outputs, run, report.

Planning happens before any model is loaded: missing inputs, output name collisions, outputs equal
to inputs and already existing outputs are settled first, so a rerun over a finished batch loads
nothing and a broken command fails fast.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from .imageio import ALPHA_FORMATS, EXTENSION_BY_FORMAT, FORMAT_BY_NAME, SIXTEEN_BIT_FORMATS, TEMP_SUFFIX

GLOB_CHARS = set("*?[")


def image_extensions() -> set[str]:
    """Extensions Pillow can open (what a folder scan picks up)."""
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


@dataclass
class Job:
    source: Path
    dest: Path | None = None
    status: str = "pending"  # pending | written | skipped | failed
    error: str = ""
    input_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    output_bytes: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    relative: Path | None = None  # path below the scanned folder (for --recursive mirroring)

    def fail(self, message: str) -> None:
        self.status, self.error = "failed", message

    def to_json(self) -> dict:
        d = asdict(self)
        d["input"] = str(d.pop("source"))
        d["output"] = str(d.pop("dest")) if self.dest else None
        d.pop("relative")
        d["input_size"] = list(self.input_size) if self.input_size else None
        d["output_size"] = list(self.output_size) if self.output_size else None
        d["seconds"] = round(self.seconds, 3)
        return d


def discover(inputs: list[str], recursive: bool, suffix: str) -> list[Job]:
    """Jobs for files, folders (images inside; subfolders with ``recursive``) and globs.

    A path that does not exist becomes a failed job. Folder scans skip hidden files, srx's temporary
    files and files that look like srx outputs (``<name><suffix>.<ext>``), so a rerun does not upscale
    its own results.
    """
    exts = image_extensions()
    jobs: list[Job] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists() and GLOB_CHARS & set(raw):
            matches = sorted(glob.glob(raw, recursive=recursive))
            if not matches:
                jobs.append(Job(path, status="failed", error=f"{raw}: no file matches this pattern"))
            for m in matches:
                if Path(m).is_file():
                    jobs.append(Job(Path(m)))
            continue
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for f in sorted(path.glob(pattern)):
                rel = f.relative_to(path)
                if not f.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                if f.suffix.lower() not in exts or f.name.endswith(TEMP_SUFFIX) or f.stem.endswith(suffix):
                    continue
                jobs.append(Job(f, relative=rel))
        elif path.is_file():
            jobs.append(Job(path))
        else:
            jobs.append(Job(path, status="failed", error=f"{raw}: no such file or directory"))
    return jobs


def output_format(source: Path, fmt: str) -> str:
    """PIL format name for the output: ``same`` keeps the input's (by its extension)."""
    if fmt == "same":
        return FORMAT_BY_NAME.get(source.suffix.lower().lstrip("."), "PNG")
    return FORMAT_BY_NAME[fmt]


def plan_outputs(jobs: list[Job], output: Path | None, fmt: str, suffix: str, overwrite: bool) -> None:
    """Set each job's destination; settle collisions, input==output and existing outputs."""
    pending = [j for j in jobs if j.status == "pending"]
    single_file = output is not None and len(pending) == 1 and pending[0].relative is None and bool(output.suffix) \
        and not output.is_dir()
    claimed: dict[Path, Job] = {}
    inputs = {j.source.resolve() for j in jobs}
    for job in pending:
        if single_file:
            job.dest = output
        else:
            ext = EXTENSION_BY_FORMAT[output_format(job.source, fmt)]
            if fmt == "same" and job.source.suffix.lower() in (".jpeg", ".tiff"):
                ext = job.source.suffix.lower()
            name = f"{job.source.stem}{suffix}{ext}"
            if output is None:
                job.dest = job.source.parent / name
            elif job.relative is not None:
                job.dest = output / job.relative.parent / name
            else:
                job.dest = output / name
        key = job.dest.resolve()
        if job.dest.suffix.lower().lstrip(".") not in FORMAT_BY_NAME:
            job.fail(f"{job.dest}: unknown output format {job.dest.suffix!r} (use .png, .jpg, .webp or .tif)")
        elif key in inputs:
            job.fail(f"{job.source}: output {job.dest} is an input file; refusing to overwrite it")
        elif key in claimed:
            job.fail(f"{job.source}: output {job.dest} would collide with the output of {claimed[key].source}; "
                     f"not written (use --suffix or --format same to keep both)")
        else:
            claimed[key] = job
            if job.dest.exists() and not overwrite:
                job.status = "skipped"
                job.error = f"{job.dest} exists (use --overwrite to replace it)"


def check_output_format(fmt: str, has_alpha: bool, bit_depth: int) -> list[str]:
    """Warnings for what a format cannot hold."""
    notes = []
    if has_alpha and fmt not in ALPHA_FORMATS:
        notes.append(f"{fmt} has no alpha channel: transparency flattened onto white")
    if bit_depth == 16 and fmt not in SIXTEEN_BIT_FORMATS:
        notes.append(f"{fmt} holds 8 bits per channel: 16-bit input written as 8-bit")
    return notes


@dataclass
class BatchSummary:
    written: int = 0
    skipped: int = 0
    failed: int = 0
    pending: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, jobs: list[Job], seconds: float) -> "BatchSummary":
        s = cls(seconds=round(seconds, 3))
        for j in jobs:
            setattr(s, j.status, getattr(s, j.status) + 1)
        return s


def run_jobs(jobs: list[Job], process: Callable[[Job], None], on_done: Callable[[Job], None]) -> None:
    """Process pending jobs in order; a failure is recorded and the batch goes on."""
    from .errors import SrxError

    for job in jobs:
        if job.status != "pending":
            continue
        start = time.perf_counter()
        try:
            process(job)
            job.status = "written"
        except SrxError as e:
            job.fail(str(e))
        except (RuntimeError, MemoryError) as e:  # e.g. out of memory on one huge image: the batch goes on
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            job.fail(f"{job.source}: processing failed ({type(e).__name__}: {first})")
        finally:
            job.seconds = time.perf_counter() - start
        on_done(job)
