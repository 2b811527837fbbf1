"""``srx serve``: a warm worker for shell loops; ``srx upscale`` hands it jobs for the models it keeps loaded."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import DeviceOpt, print_line, report_errors


@report_errors
def serve(
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Model to keep loaded (repeat for several). Default: lite.")] = None,
    device: DeviceOpt = "auto",
    idle_timeout: Annotated[float, typer.Option(
        "--idle-timeout", help="Exit after this many seconds without a job.")] = 600.0,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the running worker and exit.")] = False,
    status: Annotated[bool, typer.Option("--status", help="Say whether a worker runs, and what it serves.")] = False,
) -> None:
    """Keep models loaded and take over `srx upscale` jobs that use them (same outputs, reports, exit codes).

    Listens on a Unix socket only this user can open ($XDG_RUNTIME_DIR/srx/, or a private folder in the temp
    folder); never on a network address. Jobs run one at a time. `srx upscale --no-server` runs by itself.
    Exit codes: 0 done (--status: a worker runs), 1 no worker runs (--stop/--status), 2 usage error.
    """
    from ..errors import UsageError
    from ..serve.worker import stop_worker, worker_status

    if stop and status:
        raise UsageError("--stop and --status exclude each other")
    if stop:
        pid = stop_worker()
        if pid is None:
            print_line("no srx worker runs")
            raise typer.Exit(1)
        print_line(f"stopped the srx worker (pid {pid})")
        return
    if status:
        info = worker_status()
        if info is None:
            print_line("no srx worker runs")
            raise typer.Exit(1)
        models = ", ".join(str(key[0]) for key in info["models"])
        typer.echo(f"srx worker pid {info['pid']} on {info['device']}: {models}; jobs {info['jobs']}")
        return
    if idle_timeout <= 0:
        raise UsageError("--idle-timeout must be positive")
    from ..serve.worker import Worker

    worker = Worker(model or ["lite"], device, idle_timeout)
    try:
        worker.serve()
    except RuntimeError as e:
        raise UsageError(str(e)) from None
