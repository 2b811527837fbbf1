"""The file-system layer every srx writer uses: atomic writes with the umask's modes, locks, claims, stale files."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.files import umask

from sr_cli.models import hub
from sr_cli.io.fsio import Claim, DestinationExists, atomic_write, is_stale, locked, stale_files
from sr_cli.models.registry import get_spec


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path):
    with umask(0o022):
        atomic_write(tmp_path / "a" / "new.bin", b"1")
    with umask(0o077):
        atomic_write(tmp_path / "private.bin", b"2")
    assert _mode(tmp_path / "a" / "new.bin") == 0o644 and _mode(tmp_path / "private.bin") == 0o600
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    with umask(0o022):
        atomic_write(kept, writer=lambda tmp: tmp.write_bytes(b"new"))
    assert kept.read_bytes() == b"new" and _mode(kept) == 0o640


def test_no_overwrite_and_failed_writers_leave_the_destination_alone(tmp_path):
    dest = tmp_path / "d.bin"
    dest.write_bytes(b"mine")
    with pytest.raises(DestinationExists):
        atomic_write(dest, b"theirs", overwrite=False)

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError):
        atomic_write(dest, writer=broken)
    assert dest.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin"]  # no temporary file left


def _hold(path: Path, kind: str) -> subprocess.Popen:
    """Another process holding ``path``'s lock (as a running srx does) until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from sr_cli.io.fsio import Claim, locked
        if {kind!r} == "claim":
            c = Claim(Path({str(path)!r})); assert c.take()
        else:
            ctx = locked(Path({str(path)!r})); ctx.__enter__()
        print("held", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_claims_exclude_other_processes_and_go_away_when_released(tmp_path):
    dest = tmp_path / "out" / "x.png"
    other = _hold(dest, "claim")
    try:
        assert not Claim(dest).take()
        assert stale_files(dest.parent) == []  # a live claim is not stale
    finally:
        other.stdin.close()
        other.wait()
    mine = Claim(dest)
    assert mine.take()  # the other process is gone: its claim is free
    mine.release()
    assert list(dest.parent.iterdir()) == []


def test_stale_means_nobody_holds_the_lock(tmp_path):
    tmp_path.joinpath(".a.png.1.srx-tmp").write_bytes(b"")
    live = tmp_path / ".b.png.2.srx-tmp"
    other = _hold(live, "lock")
    try:
        assert is_stale(tmp_path / ".a.png.1.srx-tmp") and not is_stale(live)
        assert stale_files(tmp_path) == [tmp_path / ".a.png.1.srx-tmp"]
    finally:
        other.stdin.close()
        other.wait()
    assert is_stale(live)


def test_hash_records_from_parallel_processes_are_all_kept(tmp_path):
    code = textwrap.dedent("""
        import sys
        from sr_cli.models import hub
        for i in range(25):
            hub.record_hash(f"{sys.argv[1]}/{i}", "%064x" % i)
    """)
    env = {**os.environ, "SRX_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code, name], env=env, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b", "c")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    os.environ["SRX_CACHE"], saved = str(tmp_path), os.environ.get("SRX_CACHE")
    try:
        recorded = hub.read_lock()
    finally:
        os.environ.pop("SRX_CACHE") if saved is None else os.environ.__setitem__("SRX_CACHE", saved)
    assert len(recorded) == 75  # no update lost to a concurrent read-modify-write


def test_imported_weights_get_the_umask_mode(hf_home, hero_pkl):
    with umask(0o022):
        dest = hub.import_weights(get_spec("hero-sr"), hero_pkl)
    assert _mode(dest) == 0o644 and dest.read_bytes() == hero_pkl.read_bytes()
    assert _mode(hub.cache_root() / hub.LOCK_FILE) == 0o644
    assert not [p for p in dest.parent.iterdir() if p.name.endswith((".part", ".srx-tmp"))]


def test_locked_waits_for_the_holder(tmp_path):
    lock = tmp_path / ".cache.srx-lock"
    other = _hold(lock, "lock")
    code = f"from sr_cli.io.fsio import locked\nwith locked({str(lock)!r}): print('got it')"
    waiter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(timeout=3)  # blocked while the other process holds it
    finally:
        other.stdin.close()
        other.wait()
    assert waiter.communicate(timeout=60)[0].strip() == "got it"
    with locked(lock):  # reusable afterwards
        pass


def test_downloaded_dataset_folder_follows_the_umask(hf_home, tmp_path):
    import io
    import zipfile

    from PIL import Image

    from sr_cli.evaluate.datasets import resolve_dataset

    snapshot = hf_home / "hub" / "datasets--Iceclear--StableSR-TestSets" / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    with zipfile.ZipFile(snapshot / "StableSR_testsets.zip", "w") as zf:
        for sub, size in (("lq", 8), ("gt", 32)):
            buf = io.BytesIO()
            Image.new("RGB", (size, size), "gray").save(buf, "PNG")
            zf.writestr(f"StableSR_testsets/DIV2K_V2_val/{sub}/img0.png", buf.getvalue())
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("c" * 40)
    with umask(0o022):
        root = resolve_dataset("div2k-val").root
    assert _mode(root) == 0o755 and _mode(root / ".srx-complete.json") == 0o644  # not mkdtemp's 0700


def test_import_into_a_read_only_cache_is_one_clear_error(hf_home, hero_pkl, tmp_path, monkeypatch):
    from sr_cli.errors import SrxError

    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=False, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        monkeypatch.setenv("SRX_CACHE", str(ro))
        with pytest.raises(SrxError, match=r"cannot write \(Read-only file system"):
            hub.import_weights(get_spec("hero-sr"), hero_pkl)
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False, capture_output=True)
