"""Where the worker listens and how messages travel: one JSON object per line over a Unix socket."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from pathlib import Path

SOCKET_NAME = "worker.sock"


def socket_dir(create: bool = False) -> Path:
    """A folder only this user can enter: ``$XDG_RUNTIME_DIR/srx`` or ``<tmp>/srx-<uid>``, mode 0700."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) / "srx" if runtime and os.path.isdir(runtime) else \
        Path(tempfile.gettempdir()) / f"srx-{os.getuid()}"
    if create:
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
    if folder.exists():
        info = os.lstat(folder)
        # a folder someone else made (or a link) in a shared temp folder would let them answer our requests
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise PermissionError(f"{folder}: not a folder owned by this user; refusing to use it")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(folder, 0o700)
    return folder


def socket_path(create: bool = False) -> Path:
    return socket_dir(create) / SOCKET_NAME


def send(conn: socket.socket, message: dict) -> None:
    conn.sendall((json.dumps(message) + "\n").encode())


class Lines:
    """Reads one JSON message at a time from a socket (``None`` when the other side has gone)."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.buffer = b""

    def read(self) -> dict | None:
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def connect(path: Path | None = None, timeout: float | None = None) -> socket.socket | None:
    """A connection to the running worker, or None when none listens."""
    try:
        path = path or socket_path()
    except PermissionError:
        return None
    if not path.exists():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn
