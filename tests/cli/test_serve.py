"""`srx serve`: a warm worker takes over `srx upscale` jobs with the same outputs, reports and exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SRX = [sys.executable, "-c", "import sys; from sr_cli.entry import main; sys.exit(main())"]


def _images(folder: Path, n: int, size: int = 24) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def worker(tmp_path):
    """A `srx serve` subprocess on a private runtime folder; always stopped at the end."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*SRX, "serve", "--idle-timeout", "300"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sock = runtime / "srx" / "worker.sock"
    deadline = time.monotonic() + 120
    while not sock.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.2)

    def srx(*args, **kwargs):
        return subprocess.run([*SRX, *args], env=env, capture_output=True, text=True, timeout=300, check=False,
                              **kwargs)

    def jobs_served() -> int:
        out = srx("serve", "--status")
        return int(re.search(r"jobs (\d+)", out.stdout).group(1)) if out.returncode == 0 else -1

    class Handle:
        pass

    h = Handle()
    h.proc, h.env, h.sock, h.runtime, h.srx, h.jobs_served = proc, env, sock, runtime, srx, jobs_served
    try:
        yield h
    finally:
        if proc.poll() is None:
            subprocess.run([*SRX, "serve", "--stop"], env=env, capture_output=True, timeout=60, check=False)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _untimed(text: str) -> str:
    return re.sub(r"\d+\.\d+s\)", "Ts)", text)


def _untimed_json(text: str) -> dict:
    doc = json.loads(text)
    for f in doc["files"]:
        f["seconds"] = 0
    doc["totals"]["seconds"] = 0
    return doc


def test_worker_output_report_and_exit_code_match_a_direct_run(worker, tmp_path):
    srcs = _images(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    before = worker.jobs_served()
    # relative paths: the worker works in the client's folder
    served = worker.srx("upscale", "in/img00.png", "in/img01.png", "in/broken.png", "-o", "out/", cwd=tmp_path)
    assert worker.jobs_served() == before + 1  # it really went through the worker
    direct = worker.srx("upscale", "in/img00.png", "in/img01.png", "in/broken.png", "-o", "out/",
                        "--overwrite", "--no-server", cwd=tmp_path)
    assert worker.jobs_served() == before + 1
    assert served.returncode == direct.returncode == 1  # the bad input fails only itself
    assert "error: in/broken.png:" in served.stderr
    assert _untimed(served.stderr) == _untimed(direct.stderr)
    # bit-identical outputs: the direct run rewrote them; compare with a second served run into another folder
    again = worker.srx("upscale", *[str(p) for p in srcs], "-o", str(tmp_path / "out2") + "/")
    assert again.returncode == 0, again.stderr
    for src in srcs:
        name = src.stem + "_srx.png"
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    assert worker.jobs_served() == before + 2


def test_worker_json_report_matches_a_direct_run_apart_from_timings(worker, tmp_path):
    _images(tmp_path / "in", 2)
    served = worker.srx("upscale", "in", "-o", "a/", "--json", cwd=tmp_path)
    direct = worker.srx("upscale", "in", "-o", "b/", "--json", "--no-server", cwd=tmp_path)
    assert served.returncode == direct.returncode == 0
    a, b = _untimed_json(served.stdout), _untimed_json(direct.stdout)
    for f in b["files"]:
        f["output"] = f["output"].replace("b/", "a/")
    assert a == b
    assert (tmp_path / "a" / "img00_srx.png").read_bytes() == (tmp_path / "b" / "img00_srx.png").read_bytes()
    usage = worker.srx("upscale", "in", "-o", "c/", "--json", "--quality", "0", cwd=tmp_path)
    assert usage.returncode == 2 and "error" in json.loads(usage.stdout)


def test_socket_is_private_to_the_user(worker):
    assert stat.S_IMODE(os.stat(worker.sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(worker.sock.parent).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(worker.sock).st_mode)
    # nothing on a network address: the worker process holds no inet socket
    fds = Path(f"/proc/{worker.proc.pid}/fd")
    links = [os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()]
    inodes = set(re.findall(r"socket:\[(\d+)\]", " ".join(links)))
    net = Path("/proc/net/tcp").read_text() + Path("/proc/net/tcp6").read_text() + Path("/proc/net/udp").read_text()
    assert inodes and not any(re.search(rf"\s{i}\s", net) for i in inodes)


def test_two_clients_at_once_both_succeed(worker, tmp_path):
    # relative paths from two folders: each job must run in its own client's folder
    for k in range(2):
        _images(tmp_path / f"c{k}" / "in", 3)
    procs = [subprocess.Popen([*SRX, "upscale", "in", "-o", "out/"], cwd=tmp_path / f"c{k}", env=worker.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    for k in range(2):
        assert sorted(p.name for p in (tmp_path / f"c{k}" / "out").iterdir()) == [
            f"img{i:02d}_srx.png" for i in range(3)]
    for i in range(3):
        name = f"img{i:02d}_srx.png"
        assert (tmp_path / "c0" / "out" / name).read_bytes() == (tmp_path / "c1" / "out" / name).read_bytes()


def test_killed_client_cancels_its_job_without_partial_output(worker, tmp_path):
    srcs = _images(tmp_path / "in", 30, size=48)
    out = tmp_path / "out"
    client = subprocess.Popen([*SRX, "upscale", *map(str, srcs), "-o", str(out) + "/"], env=worker.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = client.stderr.readline()
    assert line.startswith("written"), line
    client.send_signal(signal.SIGKILL)
    client.wait()
    # the worker still serves: this job waits for the cancelled one to stop
    nxt = worker.srx("upscale", str(srcs[0]), "-o", str(tmp_path / "next.png"))
    assert nxt.returncode == 0, nxt.stderr
    written = sorted(out.iterdir())
    assert all(p.name.endswith("_srx.png") for p in written), written  # no temporary or claim files left
    assert 1 <= len(written) < len(srcs)  # cancelled, not run to the end
    for p in written:
        with Image.open(p) as im:
            im.load()
            assert im.size == (192, 192)


def test_stop_ends_the_worker(worker):
    out = worker.srx("serve", "--stop")
    assert out.returncode == 0
    worker.proc.wait(timeout=30)
    assert not worker.sock.exists()
    assert worker.srx("serve", "--status").returncode == 1


def test_ctrl_c_of_a_client_cancels_its_job_only(worker, tmp_path):
    srcs = _images(tmp_path / "in", 30, size=48)
    client = subprocess.Popen([*SRX, "upscale", *map(str, srcs), "-o", str(tmp_path / "out") + "/", "--json"],
                              env=worker.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = client.stderr.readline()
    assert line.startswith("written"), line
    client.send_signal(signal.SIGINT)
    stdout, stderr = client.communicate(timeout=120)
    assert client.returncode == 130, stderr
    doc = json.loads(stdout)
    assert doc["interrupted"] is True and doc["totals"]["pending"] > 0
    assert "interrupted:" in stderr
    nxt = worker.srx("upscale", str(srcs[0]), "-o", str(tmp_path / "next.png"))
    assert nxt.returncode == 0, nxt.stderr  # the worker goes on serving
    assert worker.proc.poll() is None
    written = sorted((tmp_path / "out").iterdir())
    assert all(p.name.endswith("_srx.png") for p in written) and len(written) < len(srcs)


def test_worker_declines_another_model_or_another_srx_version(worker, tmp_path):
    import socket

    from sr_cli import __version__

    def first_reply(message: dict) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(60)
            conn.connect(str(worker.sock))
            conn.sendall((json.dumps(message) + "\n").encode())
            return json.loads(conn.makefile().readline())

    request = {"inputs": ["x.png"], "output": str(tmp_path / "o") + "/"}
    base = {"op": "upscale", "cwd": str(tmp_path), "umask": 0o022}
    assert first_reply({**base, "request": request, "version": __version__})["event"] == "accepted"
    assert first_reply({**base, "request": request, "version": "0.0.0-old"})["event"] == "declined"
    assert first_reply({**base, "request": {**request, "model": "tiny-sd"}, "version": __version__})["event"] == \
        "declined"
    assert worker.proc.poll() is None
