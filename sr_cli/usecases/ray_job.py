"""A batch as a Ray Data job (``srx upscale --ray``): for clusters of machines; install with ``pip install "srx[ray]"``.

The planned jobs become a dataset; ``map_batches`` runs them on actors that each load the model once (one GPU per
actor when the cluster has GPUs). Each actor converts a file exactly as a single run does (``convert_one`` under
the same output claims, atomic writes, existing outputs skipped), so a rerun resumes and a bad file fails alone.
Ray schedules; srx only plans the jobs and reports the results the driver streams back.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

from .sharding import JOB_RESULT_FIELDS
from .upscale import PreparedBatch


def run_on_ray(batch: PreparedBatch, address: str | None = None, on_done: Callable | None = None) -> None:
    """Convert the batch's pending jobs on a Ray cluster (``address``; None: ``RAY_ADDRESS`` or a local one)."""
    from ..errors import SrxError, UsageError

    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError('--ray needs Ray: pip install "srx[ray]"') from None
    on_done = on_done or (lambda job: None)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-dataset INFO lines are not srx's report
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # srx reports per file; Ray's bars would interleave with it
    context.print_on_execution_start = False
    try:
        jobs = batch.jobs
        for second in (False, True):  # second: jobs sharing an output with an earlier one, now settled
            indices = [i for i, j in enumerate(jobs) if j.status == "pending" and (second or j.collides_with is None)]
            if indices:
                _run_pass(ray, batch, indices, on_done)
    except ray.exceptions.RayError as e:
        cause = _srx_cause(e)
        if cause is not None:  # e.g. weights missing on the actors: the single run's line and exit code
            raise cause from None
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise SrxError(f"ray: {last}") from None
    finally:
        if started_here:
            ray.shutdown()


def _srx_cause(error: BaseException):
    """The SrxError an actor raised, found under Ray's wrappers (``cause``, ``__cause__``), or None."""
    from .. import errors
    from ..errors import SrxError

    original, seen = error, 0
    while error is not None and seen < 10:
        if isinstance(error, SrxError):
            return error
        error = getattr(error, "cause", None) or error.__cause__
        seen += 1
    # An actor that died in its constructor comes back as text only: its last line names the error.
    last = (str(original).strip().splitlines() or [""])[-1]
    found = re.match(r"sr_cli\.errors\.(\w+): (.+)", last)
    kind = getattr(errors, found.group(1), None) if found else None
    if isinstance(kind, type) and issubclass(kind, SrxError):
        rebuilt = SrxError(found.group(2))
        rebuilt.exit_code = kind.exit_code
        return rebuilt
    return None


def _run_pass(ray, batch: PreparedBatch, indices: list[int], on_done: Callable) -> None:
    jobs = batch.jobs
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    request = batch.request.to_json()
    if "," in request["device"]:
        request["device"] = "auto"  # a --device list means nothing here: Ray places the actors
    if gpus:
        actors, per_actor = min(gpus, len(indices)), {"num_gpus": 1}
    else:  # leave a CPU for Ray Data's own tasks
        actors, per_actor = max(1, min(len(indices), int(resources.get("CPU", 1)) // 2)), {"num_cpus": 1}
    items = [{"index": i, "job": json.dumps(_job_doc(jobs[i]))} for i in indices]
    dataset = ray.data.from_items(items).map_batches(
        ConvertOnActor, fn_constructor_args=(request,), batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors), **per_actor)
    for row in dataset.iter_rows():  # streamed as files finish: the report grows as the job runs
        job = jobs[int(row["index"])]
        result = json.loads(row["result"])
        for name in JOB_RESULT_FIELDS:
            value = result[name]
            setattr(job, name, tuple(value) if isinstance(value, list) and name != "notes" else value)
        on_done(job)


def _job_doc(job) -> dict:
    """What an actor needs of a planned job, in plain values (the row of the dataset)."""
    first = job.collides_with
    return {"source": str(job.source), "dest": str(job.dest), "dest_before": job.dest_before,
            "first": None if first is None else {"source": str(first.source), "status": first.status}}


def _job_from_doc(doc: dict):
    from pathlib import Path

    from ..io.batch import Job

    first = doc["first"]
    return Job(Path(doc["source"]), Path(doc["dest"]),
               dest_before=None if doc["dest_before"] is None else tuple(doc["dest_before"]),
               collides_with=None if first is None else Job(Path(first["source"]), status=first["status"]))


class ConvertOnActor:
    """One Ray actor: the model loaded once, then one file per call, written where the plan says."""

    def __init__(self, request_doc: dict):
        from .upscale import UpscaleRequest, check_request, load

        self.request = UpscaleRequest.from_json(request_doc)
        self.options = check_request(self.request)
        self.sr = load(self.request, self.options)

    def __call__(self, rows: dict) -> dict:
        from ..io.batch import run_jobs
        from .upscale import convert_one

        req = self.request
        results = []
        for blob in rows["job"]:
            job = _job_from_doc(json.loads(blob))

            def process(job) -> None:
                convert_one(self.sr, job, self.options, req.quality, req.max_pixels, req.overwrite)

            run_jobs([job], process, lambda job: None, overwrite=req.overwrite)
            results.append(json.dumps({name: getattr(job, name) for name in JOB_RESULT_FIELDS}))
        return {"index": list(rows["index"]), "result": results}
