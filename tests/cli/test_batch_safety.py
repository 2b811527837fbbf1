"""`srx upscale` with the embedded lite model: write failures, file modes, parallel runs, inputs and -o as users
type them, exit codes and the JSON document. Tiny images: every test runs in seconds."""

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.files import umask
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app

runner = CliRunner()
RNG = np.random.default_rng(7)
SRX = [sys.executable, "-c", "import sys; from sr_cli.entry import main; sys.exit(main())"]


def _png(path: Path, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((RNG.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _folder(path: Path, n: int, size: int = 16) -> Path:
    for i in range(n):
        _png(path / f"img{i}.png", size)
    return path


def _upscale(*args: str):
    return runner.invoke(app, ["upscale", *map(str, args)])


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith((".srx-tmp", ".srx-claim"))]


@contextlib.contextmanager
def _mounted_tmpfs(where: Path, options: str):
    where.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=False, capture_output=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


# ----------------------------------------------------------------------------- write failures: one line per file


def test_output_blocked_by_a_file_fails_each_file_and_json_is_printed(tmp_path):
    src = _folder(tmp_path / "in", 2)
    (tmp_path / "notes.txt").write_text("not a folder")
    r = _upscale(src / "img0.png", src / "img1.png", "-o", tmp_path / "notes.txt", "--json")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    errors = _errors(r.stderr)
    assert len(errors) == 2 and all("cannot write" in e and "notes.txt" in e for e in errors)
    doc = json.loads(r.stdout)
    assert [f["status"] for f in doc["files"]] == ["failed", "failed"]
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


def test_dangling_symlink_as_output_folder_fails_per_file(tmp_path):
    src = _folder(tmp_path / "in", 2)
    (tmp_path / "out").symlink_to(tmp_path / "gone" / "away")
    r = _upscale(src, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert len(_errors(r.stderr)) == 2 and all("cannot write" in e for e in _errors(r.stderr))
    assert json.loads(r.stdout)["totals"]["failed"] == 2


def test_one_unwritable_subfolder_does_not_stop_the_batch(tmp_path):
    src = tmp_path / "in"
    _png(src / "a.png"), _png(src / "sub" / "b.png"), _png(src / "z.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the mirrored subfolder should go")
    r = _upscale(src, "-r", "-o", out, "--json")
    assert r.exit_code == 1, r.output
    by_name = {Path(f["input"]).name: f for f in json.loads(r.stdout)["files"]}
    assert by_name["b.png"]["status"] == "failed" and "cannot write" in by_name["b.png"]["error"]
    assert by_name["a.png"]["status"] == by_name["z.png"]["status"] == "written"  # the file after it too
    assert (out / "a_srx.png").is_file() and (out / "z_srx.png").is_file()


def test_read_only_folder_fails_every_file_with_one_line(tmp_path):
    src = _folder(tmp_path / "in", 3)
    with _mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        r = _upscale(src, "-o", ro, "--json")
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert len(_errors(r.stderr)) == 3 and all("Read-only file system" in e for e in _errors(r.stderr))
        assert json.loads(r.stdout)["totals"]["failed"] == 3


@pytest.mark.parametrize("limit", ["size=40k", "nr_inodes=6"])
def test_disk_full_fails_the_files_that_do_not_fit(tmp_path, limit):
    src = _folder(tmp_path / "in", 6)
    with _mounted_tmpfs(tmp_path / "small", limit) as small:
        r = _upscale(src, "-o", small, "--json")
        assert "Traceback" not in r.output
        assert r.exit_code == 1, r.output
        doc = json.loads(r.stdout)
        failed = [f for f in doc["files"] if f["status"] == "failed"]
        assert failed and all("No space left on device" in f["error"] for f in failed)
        assert len(_errors(r.stderr)) == len(failed) == doc["totals"]["failed"]
        for f in doc["files"]:
            if f["status"] == "written":
                with Image.open(f["output"]) as im:
                    im.load()  # complete, not truncated
        assert not _temp_files(small)


# ----------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_umask_permissions(tmp_path, mask, mode):
    src = _png(tmp_path / "a.png")
    with umask(mask):
        r = _upscale(src, "-o", tmp_path / "out" / "a.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "a.png").stat().st_mode & 0o777 == mode


def test_overwrite_keeps_the_mode_of_the_replaced_file(tmp_path):
    src = _png(tmp_path / "a.png")
    dest = tmp_path / "a_srx.png"
    dest.write_bytes(b"old")
    dest.chmod(0o640)
    with umask(0o022):
        r = _upscale(src, "--overwrite")
    assert r.exit_code == 0, r.output
    assert dest.stat().st_mode & 0o777 == 0o640 and Image.open(dest).size == (64, 64)


# ----------------------------------------------------------------------------- temporary files and parallel runs


def test_start_up_removes_only_stale_temp_files(tmp_path):
    import fcntl

    src = _png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".x_srx.png.k1ll3d.srx-tmp"  # left by a killed run: nobody holds its lock
    stale.write_bytes(b"partial")
    live = out / ".y_srx.png.w0rk1ng.srx-tmp"  # another srx writing right now: it holds the lock
    live.write_bytes(b"in flight")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        r = _upscale(src, "-o", out)
        assert r.exit_code == 0, r.output
        assert not stale.exists()
        assert live.read_bytes() == b"in flight"


def test_an_output_claimed_by_another_run_is_left_to_it(tmp_path):
    """While another run holds the claim on an output, srx does the other files first, then waits for it
    and reports it skipped once the other run has written it."""
    from sr_cli.io.fsio import Claim

    src = _folder(tmp_path / "in", 3)
    out = tmp_path / "out"
    claim = Claim(out / "img0_srx.png")
    assert claim.take()
    proc = subprocess.Popen([*SRX, "upscale", str(src), "-o", str(out), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((out / "img1_srx.png").exists() and (out / "img2_srx.png").exists()):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the unclaimed outputs were not written"
            time.sleep(0.05)
        time.sleep(0.3)
        assert not (out / "img0_srx.png").exists() and proc.poll() is None  # waiting for the claim
        Image.new("RGB", (64, 64), "red").save(out / "img0_srx.png")  # the other run finishes it
    finally:
        claim.release()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    status = {Path(f["input"]).name: f["status"] for f in json.loads(stdout)["files"]}
    assert status == {"img0.png": "skipped", "img1.png": "written", "img2.png": "written"}
    assert Image.open(out / "img0_srx.png").getpixel((0, 0)) == (255, 0, 0)  # not redone
    assert not _temp_files(out)


def test_two_parallel_runs_share_the_work(tmp_path):
    src = _folder(tmp_path / "in", 6, size=32)
    out = tmp_path / "out"
    cmd = [*SRX, "upscale", str(src), "-o", str(out), "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    docs = [json.loads(o) for o, _ in results]
    written = [{f["input"] for f in d["files"] if f["status"] == "written"} for d in docs]
    assert not written[0] & written[1]  # no output computed twice
    assert len(written[0] | written[1]) == 6
    for d in docs:
        assert {f["status"] for f in d["files"]} <= {"written", "skipped"}
    assert sorted(p.name for p in out.iterdir()) == [f"img{i}_srx.png" for i in range(6)]
    assert not _temp_files(out)


# ----------------------------------------------------------------------------- inputs as users give them


def test_empty_suffix_still_finds_inputs(tmp_path):
    src = _folder(tmp_path / "in", 2)
    r = _upscale(src, "--suffix", "", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png"]


def test_folder_scan_skips_formats_that_cannot_be_opened_here(tmp_path):
    from PIL import EpsImagePlugin

    src = _folder(tmp_path / "in", 1)
    Image.new("RGB", (16, 16)).save(src / "doc.pdf")  # Pillow writes PDF but cannot read it
    if not EpsImagePlugin.has_ghostscript():
        Image.new("RGB", (16, 16)).save(src / "fig.eps")  # readable through Ghostscript only
    r = _upscale(src, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    assert [Path(f["input"]).name for f in json.loads(r.stdout)["files"]] == ["img0.png"]


def test_the_same_file_named_twice_is_one_job(tmp_path, monkeypatch):
    src = _folder(tmp_path / "in", 2)
    monkeypatch.chdir(src)
    r = _upscale("img0.png", "img0.png", "./img0.png", src / "img0.png", "-o", tmp_path / "o1", "--json")
    assert r.exit_code == 0, r.output
    assert [f["status"] for f in json.loads(r.stdout)["files"]] == ["written"]
    r = _upscale(".", ".", "-o", tmp_path / "o2", "--json")
    assert r.exit_code == 0, r.output
    assert sorted(f["status"] for f in json.loads(r.stdout)["files"]) == ["written", "written"]


def test_a_collision_does_not_block_the_second_file_when_the_first_fails(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")  # sorted first, fails
    _png(src / "a.png")  # same output name a_srx.png
    r = _upscale(src, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 1
    status = {Path(f["input"]).name: f["status"] for f in json.loads(r.stdout)["files"]}
    assert status == {"a.jpg": "failed", "a.png": "written"}
    assert Image.open(tmp_path / "out" / "a_srx.png").size == (64, 64)


# ----------------------------------------------------------------------------- -o and --format as users type them


def test_output_with_trailing_slash_is_a_folder(tmp_path):
    src = _png(tmp_path / "a.png")
    r = _upscale(src, "-o", f"{tmp_path / 'runs' / '2024.05.01'}/")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / "2024.05.01" / "a_srx.png").is_file()


def test_format_conflicting_with_output_extension_is_a_usage_error(tmp_path):
    src = _png(tmp_path / "a.png")
    r = _upscale(src, "--format", "jpg", "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "conflicts" in r.stderr and not (tmp_path / "x.png").exists()
    r = _upscale(src, "--format", "png", "-o", tmp_path / "x.png")  # agreeing is fine
    assert r.exit_code == 0 and Image.open(tmp_path / "x.png").format == "PNG"


def test_several_inputs_into_one_file_name_is_a_usage_error(tmp_path):
    src = _folder(tmp_path / "in", 2)
    r = _upscale(src / "img0.png", src / "img1.png", "-o", tmp_path / "result.png", "--json")
    assert r.exit_code == 2 and not (tmp_path / "result.png").exists()
    assert "result.png" in json.loads(r.stdout)["error"]


# ----------------------------------------------------------------------------- exit codes and JSON


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_scale_is_a_usage_error(tmp_path, value):
    r = _upscale(_png(tmp_path / "a.png"), "--scale", value, "--json")
    assert r.exit_code == 2 and "Traceback" not in r.output and "--scale" in r.stderr
    assert "--scale" in json.loads(r.stdout)["error"]


def test_usage_errors_print_a_json_document(tmp_path):
    src = _png(tmp_path / "a.png")
    for extra in (["--quality", "0"], ["--format", "gif"], ["--model", "nope"], ["--tile", "13"]):
        r = _upscale(src, "--json", *extra)
        assert r.exit_code == 2, (extra, r.output)
        doc = json.loads(r.stdout)
        assert list(doc) == ["error"] and doc["error"] in r.stderr


def test_multistep_sampler_on_a_one_step_model_is_refused_up_front(tmp_path):
    r = _upscale(_png(tmp_path / "a.png"), "--sampler", "deterministic", "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "one-step model" in r.stderr and not (tmp_path / "o.png").exists()


def test_no_input_at_all_is_exit_2_but_some_missing_is_exit_1(tmp_path):
    r = _upscale(tmp_path / "missing.png")
    assert r.exit_code == 2 and "no such file" in r.stderr
    r = _upscale(tmp_path / "nothing-*.png", "--json")
    assert r.exit_code == 2 and "no file matches" in json.loads(r.stdout)["error"]
    src = _png(tmp_path / "a.png")
    r = _upscale(tmp_path / "missing.png", src, "--json")
    assert r.exit_code == 1
    assert [f["status"] for f in json.loads(r.stdout)["files"]] == ["failed", "written"]


def test_json_output_is_null_for_files_without_one(tmp_path):
    r = _upscale(tmp_path / "missing.png", _png(tmp_path / "a.png"), "--json")
    files = json.loads(r.stdout)["files"]
    assert files[0]["output"] is None and "dest" not in files[0]
    assert set(files[0]) == set(files[1])  # one schema for every file


# ----------------------------------------------------------------------------- Ctrl-C


def _interrupt_after(delay: float, args: list[str]) -> tuple[int, str, str]:
    proc = subprocess.Popen([*SRX, "upscale", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _python_start_up_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def test_ctrl_c_while_starting_is_quiet_and_exits_130(tmp_path):
    src = _folder(tmp_path / "in", 2)
    bare = _python_start_up_seconds()  # before the interpreter runs srx's code, Python itself would print
    for delay in (max(0.15, 2 * bare), max(0.4, 4 * bare)):
        rc, _, err = _interrupt_after(delay, [str(src), "-o", str(tmp_path / "out")])
        assert rc == 130 and "Traceback" not in err, (delay, err)


def test_ctrl_c_while_loading_still_prints_the_json_document(tmp_path):
    src = _folder(tmp_path / "in", 60, size=48)  # enough work that the run is still going when Ctrl-C comes
    for delay in (1.0, 2.0):
        rc, out, err = _interrupt_after(delay, [str(src), "-o", str(tmp_path / "out"), "--json"])
        assert rc == 130 and "Traceback" not in err, (delay, err)
        assert json.loads(out)["interrupted"] is True


def test_read_only_cache_still_upscales(tmp_path, hf_home, tiny_sd, osediff_pkl, monkeypatch):
    """A published checkpoint is converted into the cache once; a read-only cache only means no reuse."""
    src = _png(tmp_path / "a.png")
    with _mounted_tmpfs(tmp_path / "ro-cache", "ro,size=1m") as ro:
        monkeypatch.setenv("SRX_CACHE", str(ro))
        r = _upscale(src, "--model", "osediff", "--base", tiny_sd, "--weights", osediff_pkl, "--tile", "0",
                     "--prompt-extractor", "none", "-o", tmp_path / "o.png")
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        assert Image.open(tmp_path / "o.png").size == (64, 64)


def test_console_entry_point_is_light_and_runs_commands(tmp_path):
    """The `srx` script (sr_cli.entry) catches an early Ctrl-C without importing torch for --help."""
    code = ("import sys\nsys.argv = ['srx', '--help']\nfrom sr_cli.entry import main\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "False"
    p = subprocess.run([*SRX, "upscale", str(_png(tmp_path / "a.png")), "-q"], check=False, capture_output=True, text=True)
    assert p.returncode == 0 and (tmp_path / "a_srx.png").is_file(), p.stderr
