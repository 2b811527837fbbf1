"""Batch conversion for ``srx upscale``: find inputs, plan outputs, run, report.

Planning happens before any model is loaded: missing inputs, outputs equal to inputs and already
existing outputs are settled first, so a rerun over a finished batch loads nothing and a broken command
fails fast. Two inputs that map to the same output are settled at run time: the second one is refused
only when the first one was written.

Parallel runs share the work: each output is claimed (an exclusive lock beside it) before it is
computed; a run that finds an output claimed moves on and comes back to it at the end, when it is
normally finished (then reported as skipped).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .fsio import Claim
from .imagefiles import image_extensions, list_images
from .imageio import ALPHA_FORMATS, EXTENSION_BY_FORMAT, FORMAT_BY_NAME, SIXTEEN_BIT_FORMATS

GLOB_CHARS = set("*?[")
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
    collides_with: "Job | None" = None  # an earlier job with the same output (settled at run time)
    dest_before: tuple | None = None  # identity of an output that existed when planning (--overwrite)

    def fail(self, message: str) -> None:
        self.status, self.error = "failed", message

    def to_json(self) -> dict:
        return {
            "input": str(self.source),
            "output": str(self.dest) if self.dest is not None else None,
            "status": self.status,
            "error": self.error,
            "input_size": list(self.input_size) if self.input_size else None,
            "output_size": list(self.output_size) if self.output_size else None,
            "output_bytes": self.output_bytes,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


def discover(inputs: list[str], recursive: bool, suffix: str) -> list[Job]:
    """Jobs for files, folders (images inside; subfolders with ``recursive``) and globs.

    A path that does not exist becomes a failed job. Folder scans skip hidden files, srx's temporary
    files and files that look like srx outputs (``<name><suffix>.<ext>``, not with an empty suffix), so a
    rerun does not upscale its own results. A file named twice (``a.png ./a.png``, ``. .``) is one job.
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
            for f in list_images(path, recursive, exts):
                if not (suffix and f.stem.endswith(suffix)):
                    jobs.append(Job(f, relative=f.relative_to(path)))
        elif path.exists():  # a file, or something that is not one (FIFO, device): reading says which
            jobs.append(Job(path))
        else:
            jobs.append(Job(path, status="failed", error=f"{raw}: no such file or directory"))
    return _unique(jobs)


def _unique(jobs: list[Job]) -> list[Job]:
    """Drop repeats of the same file (by its real path); the first mention wins."""
    seen: set = set()
    kept = []
    for job in jobs:
        key = os.path.realpath(job.source) if job.status == "pending" else ("missing", str(job.source))
        if key not in seen:
            seen.add(key)
            kept.append(job)
    return kept


def output_format(source: Path, fmt: str) -> str:
    """PIL format name for the output: ``same`` keeps the input's (by its extension)."""
    if fmt == "same":
        return FORMAT_BY_NAME.get(source.suffix.lower().lstrip("."), "PNG")
    return FORMAT_BY_NAME[fmt]


def _identity(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def plan_outputs(jobs: list[Job], output: Path | None, fmt: str, suffix: str, overwrite: bool,
                 single_file: bool = False) -> None:
    """Set each job's destination; settle input==output and existing outputs, mark shared outputs.

    ``single_file``: ``output`` is the output file of the one pending job (else a folder, or None for
    beside each input).
    """
    pending = [j for j in jobs if j.status == "pending"]
    first_with: dict[str, Job] = {}
    inputs = {os.path.realpath(j.source) for j in jobs}
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
        key = os.path.realpath(job.dest)
        if job.dest.suffix.lower().lstrip(".") not in FORMAT_BY_NAME:
            job.fail(f"{job.dest}: unknown output format {job.dest.suffix!r} (use .png, .jpg, .webp or .tif)")
        elif key in inputs:
            job.fail(f"{job.source}: output {job.dest} is an input file; refusing to overwrite it")
        elif key in first_with:
            job.collides_with = first_with[key]  # decided when its turn comes: the first one may fail
        else:
            first_with[key] = job
            job.dest_before = _identity(job.dest)
            if job.dest_before is not None and not overwrite:
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


def run_jobs(jobs: list[Job], process: Callable[[Job], None], on_done: Callable[[Job], None],
             overwrite: bool = False) -> None:
    """Process pending jobs in order; a failure is recorded and the batch goes on.

    Each output is claimed before it is computed. Outputs another running srx has claimed are left for
    the end; by then that run has normally finished them and they are reported as skipped.
    """
    later = [job for job in jobs if job.status == "pending" and not _run_one(job, process, overwrite, wait=False,
                                                                             on_done=on_done)]
    for job in later:
        _run_one(job, process, overwrite, wait=True, on_done=on_done)


def _run_one(job: Job, process: Callable[[Job], None], overwrite: bool, wait: bool,
             on_done: Callable[[Job], None]) -> bool:
    """Claim, check and process one job; False when another process holds its claim (and ``wait`` is off)."""
    first = job.collides_with
    if first is not None and first.status in ("written", "skipped"):
        job.fail(f"{job.source}: output {job.dest} would collide with the output of {first.source}; "
                 f"not written (use --suffix or --format same to keep both)")
        on_done(job)
        return True
    claim = Claim(job.dest)
    try:
        if not claim.take(blocking=wait):
            return False
    except OSError as e:
        job.fail(f"{job.dest}: cannot write ({_reason(e)})")
        on_done(job)
        return True
    try:
        if _finished_meanwhile(job, overwrite):
            job.status = "skipped"
            job.error = f"{job.dest} was written meanwhile by another run"
        else:
            _process(job, process)
    finally:
        claim.release()
    on_done(job)
    return True


def _finished_meanwhile(job: Job, overwrite: bool) -> bool:
    """Whether the output appeared (or, with --overwrite, changed) since planning: another run made it."""
    now = _identity(job.dest)
    if now is None:
        return False
    return not overwrite or now != job.dest_before


def _process(job: Job, process: Callable[[Job], None]) -> None:
    from ..errors import SrxError

    start = time.perf_counter()
    try:
        process(job)
        job.status = "written"
    except SrxError as e:
        job.fail(str(e))
    except OSError as e:  # anything the file system refuses: this file fails, the batch goes on
        job.fail(f"{job.source}: {_reason(e)}")
    except (RuntimeError, MemoryError, ValueError) as e:  # e.g. out of memory on one huge image: the batch goes on
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        job.fail(f"{job.source}: processing failed ({type(e).__name__}: {first})")
    finally:
        job.seconds = time.perf_counter() - start


def _reason(e: OSError) -> str:
    reason = e.strerror or str(e) or type(e).__name__
    return f"{reason}: {e.filename}" if e.filename else reason
