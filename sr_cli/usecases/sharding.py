"""One batch on several devices: one worker process per device, each with the model loaded once.

``--device cuda:0,cuda:1`` (or ``cuda:all``; ``cpu,cpu`` runs two CPU processes) shards the pending files of a
batch: workers take jobs from one shared queue and send back an event per file, so the parent drives the one
progress display and writes the one report. Every worker converts with ``convert_one`` under the same output
claims as a single run, so the files written are the ones a single-device run writes.
"""

from __future__ import annotations

import os
import queue
import re
import signal
from collections.abc import Callable

from .upscale import PreparedBatch

DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?")
JOB_RESULT_FIELDS = ("status", "error", "input_size", "output_size", "output_bytes", "seconds", "notes")


def device_list(spec: str) -> list[str] | None:
    """The devices of a ``--device`` list, or None for one device (the usual single-process run).

    Every way to get the list wrong is one usage error naming the list; ``cuda:all`` needs a CUDA device.
    """
    from ..errors import UsageError

    text = spec.strip()
    if "," not in text and not text.endswith(":all"):
        return None
    if text == "cuda:all":
        count = _cuda_count()
        if count == 0:
            raise UsageError("--device cuda:all: no CUDA device found")
        return [f"cuda:{i}" for i in range(count)]
    if text.endswith(":all"):
        raise UsageError(f"--device {spec}: only cuda:all names every device")
    devices = [part.strip() for part in text.split(",")]
    for device in devices:
        if not DEVICE_PATTERN.fullmatch(device):
            raise UsageError(f"--device {spec}: {device!r} is not a device (cpu, cuda:N or mps)")
    indices = [int(d.split(":")[1]) for d in devices if d.startswith("cuda:")]
    if indices or "cuda" in devices:
        count = _cuda_count()
        missing = [i for i in indices if i >= count]
        if count == 0 or missing:
            raise UsageError(f"--device {spec}: this machine has {count} CUDA device(s)")
    return devices


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def threads_per_worker(devices: list[str]) -> int:
    """CPU threads for each CPU worker: the cores split between them, so two processes do not fight over them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, sum(d == "cpu" for d in devices)))


def run_sharded(batch: PreparedBatch, devices: list[str], on_start: Callable | None = None,
                on_done: Callable | None = None) -> None:
    """Convert the batch's pending jobs on one worker process per device; the jobs get the workers' results.

    A worker that cannot load the model stops the run with its error (as a failed load does in one process);
    a worker that dies fails the file it was converting, and the others go on with the rest.
    """
    import multiprocessing

    from ..errors import SrxError

    on_start = on_start or (lambda job: None)
    on_done = on_done or (lambda job: None)
    jobs = batch.jobs
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or thread pools
    tasks, events = context.Queue(), context.Queue()
    threads = threads_per_worker(devices)
    workers = [context.Process(target=_worker, args=(batch.request.to_json(), device, threads, tasks, events, slot),
                               daemon=True, name=f"srx-{device}")
               for slot, device in enumerate(devices)]
    outstanding: set[int] = set()
    waiting: dict[int, list[int]] = {}  # a job sharing its output with an earlier one waits for that one
    index_of = {id(job): i for i, job in enumerate(jobs)}
    current: dict[int, int] = {}  # worker slot -> job index it is converting

    def dispatch(i: int) -> None:
        first = jobs[i].collides_with
        if first is not None and first.status == "pending":
            waiting.setdefault(index_of[id(first)], []).append(i)
            return
        outstanding.add(i)
        tasks.put((i, jobs[i]))  # the worker's run_jobs settles a collision with a finished first job

    def finish(i: int) -> None:
        outstanding.discard(i)
        on_done(jobs[i])
        for later in waiting.pop(i, []):
            dispatch(later)

    for worker in workers:
        worker.start()
    try:
        for i, job in enumerate(jobs):
            if job.status == "pending":
                dispatch(i)
        while outstanding:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                _settle_dead_workers(workers, devices, current, jobs, finish)
                continue
            kind, slot = event[0], event[1]
            if kind == "fatal":  # the error a single run's load raises: same line, same exit code
                error = SrxError(event[2])
                error.exit_code = event[3]
                raise error
            if kind == "start":
                current[slot] = event[2]
                on_start(jobs[event[2]])
            elif kind == "done":
                i, result = event[2], event[3]
                current.pop(slot, None)
                for name in JOB_RESULT_FIELDS:
                    setattr(jobs[i], name, result[name])
                finish(i)
    finally:
        _stop(workers, tasks)


def _settle_dead_workers(workers, devices, current, jobs, finish) -> None:
    """Fail the file a dead worker was converting; with no worker left, fail what is still queued."""
    for slot, worker in enumerate(workers):
        if not worker.is_alive() and slot in current:
            i = current.pop(slot)
            jobs[i].fail(f"{jobs[i].source}: the worker on {devices[slot]} stopped (exit code {worker.exitcode})")
            finish(i)
    if not any(w.is_alive() for w in workers):
        for i, job in enumerate(jobs):
            if job.status == "pending" and job.dest is not None:
                job.fail(f"{job.source}: not converted: every device worker stopped")
                finish(i)


def _stop(workers, tasks) -> None:
    """Ask the workers to end; a worker still busy (an interrupted run) is terminated: its temporary file goes."""
    for _ in workers:
        try:
            tasks.put(None)
        except (OSError, ValueError):
            pass
    for worker in workers:
        worker.join(timeout=5 if worker.is_alive() else 0)
        if worker.is_alive():
            worker.terminate()  # SIGTERM: the worker unwinds, removing its temporary file
            worker.join(timeout=10)
        if worker.is_alive():
            worker.kill()
            worker.join()


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _worker(request_doc: dict, device: str, threads: int, tasks, events, slot: int) -> None:
    """Load the model on ``device`` once, then convert the jobs the queue hands out until it says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers itself
    signal.signal(signal.SIGTERM, _terminate)
    from ..errors import SrxError
    from ..io.batch import run_jobs
    from .upscale import UpscaleRequest, check_request, convert_one, load

    try:
        import torch

        if device == "cpu":
            torch.set_num_threads(threads)
        request = UpscaleRequest.from_json(request_doc)
        request.device = device
        options = check_request(request)
        sr = load(request, options)
    except SrxError as e:
        events.put(("fatal", slot, str(e), e.exit_code))
        return
    while (task := tasks.get()) is not None:
        index, job = task

        def process(job, index=index) -> None:
            events.put(("start", slot, index))
            convert_one(sr, job, options, request.quality, request.max_pixels, request.overwrite)

        def done(job, index=index) -> None:
            events.put(("done", slot, index, {name: getattr(job, name) for name in JOB_RESULT_FIELDS}))

        run_jobs([job], process, done, overwrite=request.overwrite)
