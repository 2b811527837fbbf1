"""The ``srx upscale`` side: hand the job to a running worker and replay its events through the same Reporter.

Lines, ``--json`` and exit codes come out of the same code as a direct run; only the compute happens elsewhere.
Closing the connection (Ctrl-C, a killed client) cancels the job in the worker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import __version__
from ..errors import SrxError
from .protocol import Lines, connect, send


class WorkerRefused(SrxError):
    """A usage error the worker found while planning: same message and exit code as a direct run."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class RemoteJob:
    """A job as the worker reports it: what the Reporter reads (source, dest, status, error, notes, sizes)."""

    def __init__(self, doc: dict):
        self.update(doc)

    def update(self, doc: dict) -> None:
        self.doc = doc
        self.source = Path(doc["input"])
        self.dest = Path(doc["output"]) if doc["output"] is not None else None
        self.status, self.error, self.notes = doc["status"], doc["error"], list(doc["notes"])
        self.output_size = tuple(doc["output_size"]) if doc["output_size"] else None
        self.seconds = doc["seconds"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class RemoteRun:
    def __init__(self, conn, lines: Lines, started: float):
        self.conn, self.lines, self.started = conn, lines, started
        self.jobs: list[RemoteJob] = []
        self.final: dict | None = None

    def _next(self) -> dict:
        event = self.lines.read()
        if event is None:
            raise SrxError("the srx worker stopped during the job (rerun, or use --no-server)")
        if event["event"] == "error":
            raise SrxError(event["message"])
        return event

    def plan(self) -> list[RemoteJob]:
        """The planned jobs (usage errors raise ``WorkerRefused``, as ``prepare`` would)."""
        event = self._next()
        if event["event"] == "refused":
            raise WorkerRefused(event["message"], event["exit_code"])
        self.jobs = [RemoteJob(doc) for doc in event["jobs"]]
        return self.jobs

    def follow(self, reporter) -> None:
        for job in self.jobs:  # failures and skips found while planning
            if job.status != "pending":
                reporter.done(job)
        while True:
            event = self._next()
            kind = event["event"]
            if kind == "start":
                reporter.start(self.jobs[event["index"]])
            elif kind == "tile":
                reporter.on_tile(event["done"], event["total"])
            elif kind == "done":
                job = self.jobs[event["index"]]
                job.update(event["job"])
                reporter.done(job)
            elif kind == "report":
                self.final = event["doc"]
                return

    def report(self, interrupted) -> dict:
        """The ``--json`` document; timings are this client's. Closing the connection cancels an unfinished job."""
        self.conn.close()
        seconds = round(time.perf_counter() - self.started, 3)
        if self.final is not None and interrupted is None:
            return {**self.final, "totals": {**self.final["totals"], "seconds": seconds}}
        totals = {"written": 0, "skipped": 0, "failed": 0, "pending": 0, "seconds": seconds}
        for job in self.jobs:
            totals[job.status] += 1
        return {"files": [j.doc for j in self.jobs], "totals": totals, "interrupted": interrupted is not None}


def hand_to_worker(request, started: float) -> RemoteRun | None:
    """A run the worker accepted, or None: no worker, or it serves another model (then run locally)."""
    conn = connect(timeout=10)
    if conn is None:
        return None
    try:
        send(conn, {"op": "upscale", "request": request.to_json(), "cwd": os.getcwd(), "umask": _current_umask(),
                    "version": __version__})
        lines = Lines(conn)
        reply = lines.read()
    except (OSError, ValueError):
        conn.close()
        return None
    if reply is None or reply.get("event") != "accepted":
        conn.close()
        return None
    conn.settimeout(None)  # a job takes as long as it takes
    return RemoteRun(conn, lines, started)
