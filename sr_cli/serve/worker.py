"""The worker process behind ``srx serve``: models stay loaded; jobs run one at a time, each in its client's place.

A job runs with the client's working folder and umask, so relative paths, output names and file permissions are
those of a direct run. A client that goes away (killed, Ctrl-C) cancels its job at the next file or tile; atomic
writes leave no partial output. Anything a job raises fails that job only; the worker goes on serving.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import traceback

from .. import __version__
from .protocol import Lines, connect, send, socket_path


class ClientGone(BaseException):
    """The client closed its connection: stop its job between files or tiles (not a file failure)."""


def _client_gone(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Worker:
    def __init__(self, models: list[str], device: str, idle_timeout: float):
        self.device = device
        self.idle_timeout = idle_timeout
        self.loaded: dict[tuple, object] = {}
        self.job_lock = threading.Lock()  # one job at a time: the device is not shared
        self.busy = 0
        self.jobs_served = 0
        self.last_active = time.monotonic()
        self.stopping = threading.Event()
        for name in models:
            self._load(name)

    def _load(self, name: str) -> None:
        from ..usecases import upscale as usecase

        req = usecase.UpscaleRequest(inputs=[], model=name, device=self.device)
        self.loaded[req.model_key()] = usecase.load(req, usecase.check_request(req))

    # -- serving ---------------------------------------------------------------------------------------------
    def serve(self) -> None:
        path = socket_path(create=True)
        existing = connect(path, timeout=2)
        if existing is not None:
            existing.close()
            raise RuntimeError(f"a worker already listens on {path} (stop it with: srx serve --stop)")
        if path.exists() or path.is_symlink():
            path.unlink()  # left by a worker that was killed
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is born 0600: no window where others could connect
        try:
            listener.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        listener.listen(16)
        listener.settimeout(0.5)
        print(f"srx serve: listening on {path}", flush=True)
        try:
            while not self.stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if not self.busy and time.monotonic() - self.last_active > self.idle_timeout:
                        break
                    continue
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        finally:
            listener.close()
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _handle(self, conn: socket.socket) -> None:
        self.busy += 1
        try:
            with conn:
                message = Lines(conn).read()
                if message is None:
                    return
                op = message.get("op")
                if op == "status":
                    send(conn, {"event": "status", "pid": os.getpid(), "device": self.device,
                                "models": [list(k) for k in self.loaded], "jobs": self.jobs_served})
                elif op == "stop":
                    self.stopping.set()
                    send(conn, {"event": "stopping", "pid": os.getpid()})
                elif op == "upscale":
                    self._upscale(conn, message)
                else:
                    send(conn, {"event": "error", "message": f"unknown request {op!r}"})
        except (OSError, ValueError):
            pass  # a client that sent garbage or went away: nothing to answer
        finally:
            self.busy -= 1
            self.last_active = time.monotonic()

    def _upscale(self, conn: socket.socket, message: dict) -> None:
        from ..usecases.upscale import UpscaleRequest

        req = UpscaleRequest.from_json(message["request"])
        sr = self.loaded.get(req.model_key())
        if sr is None:
            send(conn, {"event": "declined", "reason": "this worker serves another model"})
            return
        if message.get("version") != __version__:  # an upgraded srx: its client may expect other behavior
            send(conn, {"event": "declined", "reason": f"this worker runs srx {__version__}"})
            return
        send(conn, {"event": "accepted"})
        with self.job_lock:
            self.jobs_served += 1
            old_cwd, old_umask = os.getcwd(), os.umask(int(message.get("umask", 0o022)))
            try:
                os.chdir(message["cwd"])
                self._run_job(conn, req, sr)
            except ClientGone:
                pass
            except Exception as e:  # noqa: BLE001  (a bug must not end the worker: report it to this client only)
                try:
                    send(conn, {"event": "error", "message": f"worker: {type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()})
                except OSError:
                    pass
            finally:
                os.chdir(old_cwd)
                os.umask(old_umask)

    def _run_job(self, conn: socket.socket, req, sr) -> None:
        from ..cli.common import user_message
        from ..errors import SrxError
        from ..usecases import upscale as usecase

        started = time.perf_counter()

        def emit(event: dict) -> None:
            try:
                send(conn, event)
            except OSError:
                raise ClientGone from None

        try:
            batch = usecase.prepare(req)
        except SrxError as e:
            emit({"event": "refused", "message": user_message(e), "exit_code": e.exit_code})
            return
        index = {id(job): i for i, job in enumerate(batch.jobs)}
        emit({"event": "planned", "jobs": [j.to_json() for j in batch.jobs]})

        def on_start(job) -> None:
            if _client_gone(conn):
                raise ClientGone
            emit({"event": "start", "index": index[id(job)]})

        def on_tile(done: int, total: int) -> None:
            if _client_gone(conn):
                raise ClientGone
            emit({"event": "tile", "done": done, "total": total})

        def on_done(job) -> None:
            emit({"event": "done", "index": index[id(job)], "job": job.to_json()})

        if batch.pending:
            usecase.run(batch, sr, on_start=on_start, on_tile=on_tile, on_done=on_done)
        emit({"event": "report", "doc": usecase.report(batch.jobs, started, None)})


def stop_worker() -> int | None:
    """Ask the running worker to stop; its process id, or None when none runs."""
    conn = connect(timeout=10)
    if conn is None:
        return None
    with conn:
        send(conn, {"op": "stop"})
        reply = Lines(conn).read()
    return reply.get("pid") if reply else None


def worker_status() -> dict | None:
    conn = connect(timeout=10)
    if conn is None:
        return None
    with conn:
        send(conn, {"op": "status"})
        return Lines(conn).read()
