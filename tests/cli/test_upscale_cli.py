"""`srx upscale` end to end on a tiny model: real-world folders, data safety, exit codes, JSON."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import png
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from sr_cli.cli import app

runner = CliRunner()
RNG = np.random.default_rng(0)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _rgb(h=12, w=16):
    return (RNG.random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture()
def mixed(tmp_path) -> Path:
    """A folder as users have them: good and broken files side by side."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    exif[0x010F] = "SRXCam"
    Image.fromarray(_rgb()).save(d / "photo.jpg", quality=95, exif=exif.tobytes(), icc_profile=ICC, dpi=(300, 300))
    alpha = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (12, 1))
    Image.fromarray(np.dstack([_rgb(), alpha])).save(d / "alpha.png")
    Image.fromarray(_rgb()[:, :, 0]).save(d / "gray.png")
    Image.fromarray((RNG.random((12, 16)) * 65535).astype(np.uint16)).save(d / "gray16.png")
    c16 = (RNG.random((12, 16, 3)) * 65535).astype(np.uint16)
    with open(d / "color16.png", "wb") as f:
        png.Writer(16, 12, greyscale=False, bitdepth=16).write(f, c16.reshape(12, 48))
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "JPEG")
    (d / "corrupt.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "fake.png").write_text("this is text, not a PNG")
    (d / "notes.txt").write_text("ignored: not an image extension")
    Image.fromarray(_rgb()).save(d / "sub" / "nested.png")
    Image.fromarray(_rgb()).save(d / "ünï cødé name.png")
    return d


@pytest.fixture()
def model_args(hf_home, tiny_sd, osediff_pkl):
    return ["--model", "osediff", "--base", str(tiny_sd), "--weights", str(osediff_pkl), "--prompt-extractor", "none"]


GOOD = ["alpha", "color16", "gray", "gray16", "photo", "ünï cødé name"]
BAD = ["corrupt.jpg", "empty.png", "fake.png"]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_mixed_folder(mixed, model_args, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["upscale", str(mixed), "-r", "-o", str(out), "--json", *model_args])
    assert r.exit_code == 1  # some failed, the others written
    assert _files(out) == sorted([f"{n}_srx.png" for n in GOOD] + ["sub/nested_srx.png"])

    photo = Image.open(out / "photo_srx.png")
    assert photo.size == (48, 64)  # EXIF orientation applied: 16x12 rotated, then x4
    exif = photo.getexif()
    assert exif.get(0x010F) == "SRXCam" and 0x0112 not in exif  # other tags kept, orientation reset
    assert photo.info.get("icc_profile") == ICC
    assert round(photo.info["dpi"][0]) == 300

    rgba = Image.open(out / "alpha_srx.png")
    assert rgba.mode == "RGBA" and rgba.size == (64, 48)
    a = np.asarray(rgba)[:, :, 3].astype(int)
    assert a[:, 0].mean() < 20 and a[:, -1].mean() > 235 and np.all(np.diff(a[24], axis=0) >= -2)  # smooth ramp kept

    assert Image.open(out / "gray_srx.png").mode == "L"
    g16 = Image.open(out / "gray16_srx.png")
    assert g16.mode == "I;16" and len(np.unique(np.asarray(g16))) > 256
    w, h, rows, info = png.Reader(filename=str(out / "color16_srx.png")).read()
    arr = np.vstack([np.asarray(r_, dtype=np.uint16) for r_ in rows])
    assert (w, h, info["bitdepth"], info["planes"]) == (64, 48, 16, 3)
    assert len(np.unique(arr)) > 256  # really 16-bit, not 8-bit values scaled

    report = json.loads(r.stdout)
    by_name = {Path(f["input"]).name: f for f in report["files"]}
    for bad in BAD:
        assert by_name[bad]["status"] == "failed" and bad in by_name[bad]["error"]
    assert by_name["photo.jpg"]["status"] == "written"
    assert by_name["photo.jpg"]["input_size"] == [12, 16] and by_name["photo.jpg"]["output_size"] == [48, 64]
    assert report["totals"]["written"] == 7 and report["totals"]["failed"] == 3
    assert "notes.txt" not in by_name
    # one line per bad file, naming it
    for bad in BAD:
        assert sum(bad in line for line in r.stderr.splitlines() if line.startswith("error:")) == 1
    assert not [p for p in out.rglob("*") if p.name.endswith(".srx-tmp")]


def test_rerun_skips_and_overwrite_replaces(mixed, model_args, tmp_path):
    out = tmp_path / "out"
    runner.invoke(app, ["upscale", str(mixed / "gray.png"), str(mixed / "alpha.png"), "-o", str(out), *model_args])
    target = out / "gray_srx.png"
    target.write_bytes(b"user's own file")
    r = runner.invoke(app, ["upscale", str(mixed / "gray.png"), str(mixed / "alpha.png"), "-o", str(out), "--json",
                            *model_args])
    assert r.exit_code == 0
    assert target.read_bytes() == b"user's own file"  # never silently replaced
    assert {f["status"] for f in json.loads(r.stdout)["files"]} == {"skipped"}
    r = runner.invoke(app, ["upscale", str(mixed / "gray.png"), "-o", str(out), "--overwrite", *model_args])
    assert r.exit_code == 0
    assert Image.open(target).size == (64, 48)


def test_single_file_output_and_formats(mixed, model_args, tmp_path):
    r = runner.invoke(app, ["upscale", str(mixed / "photo.jpg"), "-o", str(tmp_path / "x.webp"), "--quality", "80",
                            *model_args])
    assert r.exit_code == 0 and Image.open(tmp_path / "x.webp").format == "WEBP"
    r = runner.invoke(app, ["upscale", str(mixed / "alpha.png"), "-o", str(tmp_path / "flat.jpg"), *model_args])
    assert r.exit_code == 0 and "no alpha channel" in r.stderr
    assert Image.open(tmp_path / "flat.jpg").mode == "RGB"
    r = runner.invoke(app, ["upscale", str(mixed / "photo.jpg"), "-o", str(tmp_path / "same"), "--format", "same",
                            "--suffix", "_big", *model_args])
    assert r.exit_code == 0 and (tmp_path / "same" / "photo_big.jpg").is_file()
    r = runner.invoke(app, ["upscale", str(mixed / "gray16.png"), "-o", str(tmp_path / "g.tif"), *model_args])
    assert r.exit_code == 0 and Image.open(tmp_path / "g.tif").mode == "I;16"


def test_scale_factor(mixed, model_args, tmp_path):
    r = runner.invoke(app, ["upscale", str(mixed / "gray.png"), "-o", str(tmp_path / "s.png"), "--scale", "2.5",
                            *model_args])
    assert r.exit_code == 0 and Image.open(tmp_path / "s.png").size == (40, 30)


def test_collisions_and_input_equal_output(tmp_path, model_args):
    d = tmp_path / "c"
    d.mkdir()
    Image.fromarray(_rgb()).save(d / "a.jpg")
    Image.fromarray(_rgb()).save(d / "a.png")
    r = runner.invoke(app, ["upscale", str(d), "-o", str(tmp_path / "o"), "--json", *model_args])
    assert r.exit_code == 1
    files = json.loads(r.stdout)["files"]
    assert sorted(f["status"] for f in files) == ["failed", "written"]
    assert "collide" in next(f["error"] for f in files if f["status"] == "failed")
    assert _files(tmp_path / "o") == ["a_srx.png"]
    r = runner.invoke(app, ["upscale", str(d), "-o", str(tmp_path / "o2"), "--format", "same", *model_args])
    assert r.exit_code == 0 and _files(tmp_path / "o2") == ["a_srx.jpg", "a_srx.png"]
    before = (d / "a.png").read_bytes()
    r = runner.invoke(app, ["upscale", str(d / "a.png"), "-o", str(d / "a.png"), "--overwrite", *model_args])
    assert r.exit_code == 1 and "is an input file" in r.stderr
    assert (d / "a.png").read_bytes() == before


def test_usage_errors_exit_2(mixed, model_args, tmp_path):
    for extra in (["--format", "gif"], ["--quality", "0"], ["--skip-existing", "--overwrite"], ["--tile", "13"],
                  ["--color-fix", "magic"], ["--scale", "0.5"]):
        r = runner.invoke(app, ["upscale", str(mixed / "gray.png"), *model_args, *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert "Traceback" not in r.output
    r = runner.invoke(app, ["upscale", str(tmp_path / "empty_dir_that_does_not_exist"), *model_args])
    assert r.exit_code == 2 and "no such file" in r.stderr  # no input at all, like an empty folder
    (tmp_path / "nothing").mkdir()
    r = runner.invoke(app, ["upscale", str(tmp_path / "nothing"), *model_args])
    assert r.exit_code == 2 and "no input images" in r.stderr
    r = runner.invoke(app, ["upscale", str(mixed / "gray.png"), "--model", "nope"])
    assert r.exit_code == 2 and "unknown model 'nope'" in r.stderr
    r = runner.invoke(app, ["upscale", "--bogus-flag", str(mixed / "gray.png")])
    assert r.exit_code == 2


def test_max_pixels_refuses_big_images(mixed, model_args, tmp_path):
    r = runner.invoke(app, ["upscale", str(mixed / "gray.png"), "-o", str(tmp_path / "o.png"), "--max-pixels", "100",
                            *model_args])
    assert r.exit_code == 1 and "exceeds --max-pixels" in r.stderr and not (tmp_path / "o.png").exists()


def test_globs_and_default_output_beside_input(tmp_path, model_args):
    d = tmp_path / "g"
    d.mkdir()
    for n in ("x1", "x2"):
        Image.fromarray(_rgb()).save(d / f"{n}.png")
    r = runner.invoke(app, ["upscale", str(d / "x*.png"), *model_args])
    assert r.exit_code == 0
    assert _files(d) == ["x1.png", "x1_srx.png", "x2.png", "x2_srx.png"]
    r = runner.invoke(app, ["upscale", str(d), "--json", *model_args])  # outputs are not taken as inputs
    assert {f["status"] for f in json.loads(r.stdout)["files"]} == {"skipped"} and len(json.loads(r.stdout)["files"]) == 2


def test_quiet_prints_only_errors(mixed, model_args, tmp_path):
    r = runner.invoke(app, ["upscale", str(mixed / "gray.png"), str(mixed / "empty.png"), "-o", str(tmp_path / "q"),
                            "--quiet", *model_args])
    assert r.exit_code == 1
    assert [line for line in r.stderr.splitlines() if line.strip()] == [f"error: {mixed / 'empty.png'}: empty file (0 bytes)"]
    assert r.stdout == ""


# ----------------------------------------------------------------------------- the installed command

needs_srx = pytest.mark.skipif(shutil.which("srx") is None, reason="srx is not installed on PATH")


def _batch(tmp_path: Path, n: int = 24, size: int = 80) -> Path:
    d = tmp_path / "batch"
    d.mkdir()
    for i in range(n):
        Image.fromarray(_rgb(size, size)).save(d / f"img{i:02d}.png")
    return d


def _wait_for_output(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if out.is_dir() and any(p.suffix == ".png" for p in out.iterdir()):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    raise AssertionError("no output appeared")


def _all_complete(out: Path) -> list[Path]:
    done = sorted(p for p in out.iterdir() if p.suffix == ".png")
    for p in done:
        with Image.open(p) as im:
            im.load()  # a truncated file would raise here
            assert im.size == (320, 320)
    return done


@needs_srx
def test_killed_run_leaves_no_partial_outputs_and_rerun_completes(tmp_path, model_args):
    src, out = _batch(tmp_path), tmp_path / "out"
    cmd = ["srx", "upscale", str(src), "-o", str(out), "--tile", "0", *model_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_output(out, proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    done = _all_complete(out)
    assert 0 < len(done) < 24
    p = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    statuses = [f["status"] for f in json.loads(p.stdout)["files"]]
    assert statuses.count("skipped") >= len(done) and statuses.count("written") == 24 - statuses.count("skipped")
    assert len(_all_complete(out)) == 24
    assert not [q for q in out.iterdir() if q.name.endswith((".srx-tmp", ".srx-claim"))]  # stale temp files cleaned


@needs_srx
def test_ctrl_c_cleans_up_and_exits_130(tmp_path, model_args):
    src, out = _batch(tmp_path), tmp_path / "out"
    proc = subprocess.Popen(["srx", "upscale", str(src), "-o", str(out), "--tile", "0", *model_args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_output(out, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "not done" in err
    _all_complete(out)
    assert not [q for q in out.iterdir() if q.name.endswith((".srx-tmp", ".srx-claim"))]


@needs_srx
def test_installed_srx_json_on_stdout_only(mixed, model_args, tmp_path):
    p = subprocess.run(["srx", "upscale", str(mixed), "-o", str(tmp_path / "o"), "--json", *model_args],
                       capture_output=True, text=True, env=dict(os.environ))
    assert p.returncode == 1
    doc = json.loads(p.stdout)  # nothing but the JSON document on stdout
    assert doc["totals"]["failed"] == 3 and doc["totals"]["written"] == 6
