"""`srx evaluate` reliability: pairing by name, the SR cache follows the LR content, offline metrics name
their files, --json on stdout, write errors are one line and the run goes on."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app

pyiqa = pytest.importorskip("pyiqa")
runner = CliRunner()


def _image(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.random((size[1] // 4 + 1, size[0] // 4 + 1, 3))
    img = Image.fromarray((base * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_set(root: Path, lr_names, hr_names, hr_size=(32, 24)) -> Path:
    """LR/HR folders; each HR is seeded by its name's digits so that im1 and im2 differ."""
    for name in hr_names:
        _image(root / "HR" / f"{name}.png", hr_size, seed=int("".join(c for c in name if c.isdigit()) or 0))
    for name in lr_names:
        _image(root / "LR" / f"{name}.png", (hr_size[0] // 4, hr_size[1] // 4), seed=100)
    return root


# ----------------------------------------------------------------------------- offline metrics


def test_offline_maniqa_and_clipiqa_name_their_missing_files_without_touching_the_network(
        hf_home, tmp_path, monkeypatch):
    from pyiqa.utils import download_util

    from sr_cli.evaluate.metrics import MetricSuite, parse_metric_list

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "empty_pyiqa"))
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: no_network(addr))
    suite = MetricSuite(parse_metric_list("maniqa,clipiqa", True), torch.device("cpu"))
    assert attempts == []
    assert set(suite.unavailable) == {"maniqa", "clipiqa"}
    clip = suite.unavailable["clipiqa"]
    assert str(tmp_path / "torch_home" / "hub" / "clip" / "RN50.pt") in clip
    assert "https://openaipublic.azureedge.net/clip/models/" in clip and "offline" in clip
    maniqa = suite.unavailable["maniqa"]
    assert "model.safetensors of timm/vit_base_patch8_224" in maniqa and str(hf_home / "hub") in maniqa
    assert "https://huggingface.co/timm/vit_base_patch8_224" in maniqa
    assert all("\n" not in m for m in suite.unavailable.values())


# ----------------------------------------------------------------------------- pairing


def test_partly_overlapping_names_are_refused_naming_every_unpaired_file(hf_home, tmp_path):
    data = make_set(tmp_path / "set", ["im0", "im1", "im2"], ["im1", "im2", "im3"])
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr"])
    assert r.exit_code == 2, r.output
    assert "no HR image of the same name for im0.png" in r.output and "no LR image for im3.png" in r.output
    assert "psnr" not in r.output  # nothing scored: never im1 against im2


def test_pairs_by_name_with_lr_hr_marks_and_notes_unused_hr_images(tmp_path):
    from sr_cli.evaluate.datasets import folder_set

    data = make_set(tmp_path / "set", ["im0", "im1_LR4", "im2x4"], ["im0", "im1_HR", "im2", "im3"])
    s = folder_set(data)
    assert [(x.name, x.lr.name, x.hr.name) for x in s.samples] == [
        ("im0", "im0.png", "im0.png"), ("im1_LR4", "im1_LR4.png", "im1_HR.png"), ("im2x4", "im2x4.png", "im2.png")]
    assert any("no LR image for im3.png: not used" in n for n in s.notes)
    assert any("im1_LR4.png" in n or "im2x4.png" in n for n in s.notes)  # the mark-stripped pairing is reported


# ----------------------------------------------------------------------------- the SR cache


def _psnr_by_image(csv_path: Path) -> dict[str, float]:
    import csv

    return {row["image"]: float(row["psnr"]) for row in csv.DictReader(csv_path.open()) if row["image"] != "mean"}


def test_cached_outputs_follow_the_lr_content_not_its_name_size_or_mtime(hf_home, tmp_path):
    """An LR image replaced by another one of the same name, byte size and mtime is computed again."""
    root = tmp_path / "set"
    for i in range(2):
        _image(root / "HR" / f"im{i}.png", (32, 24), seed=i)
        _image(root / "LR" / f"im{i}.bmp", (8, 6), seed=10 + i)  # BMP: the size depends on the dimensions only
    args = ["evaluate", "--dataset", str(root), "--model", "bicubic", "--metrics", "psnr"]
    assert runner.invoke(app, [*args, "--csv", str(tmp_path / "a.csv")]).exit_code == 0
    first = _psnr_by_image(tmp_path / "a.csv")
    lr = root / "LR" / "im1.bmp"
    st = lr.stat()
    _image(lr, (8, 6), seed=99)
    os.utime(lr, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lr.stat().st_size == st.st_size and lr.stat().st_mtime_ns == st.st_mtime_ns
    assert runner.invoke(app, [*args, "--csv", str(tmp_path / "b.csv")]).exit_code == 0
    second = _psnr_by_image(tmp_path / "b.csv")
    assert runner.invoke(app, [*args, "--csv", str(tmp_path / "c.csv"), "--recompute"]).exit_code == 0
    fresh = _psnr_by_image(tmp_path / "c.csv")
    assert second == fresh  # the changed image was computed again, the other one is the same
    assert second["im0"] == first["im0"] and abs(second["im1"] - first["im1"]) > 0.01
    cached = sorted(p.name for p in (hf_home / "srx" / "eval").glob("bicubic-*/im*.png"))
    assert len(cached) == 2 and cached[0].startswith("im0.") and cached[1].startswith("im1.")  # no stale copy


# ----------------------------------------------------------------------------- --json, write errors


def test_json_prints_one_document_on_stdout_and_the_table_on_stderr(hf_home, tmp_path):
    data = make_set(tmp_path / "set", ["im0", "im1"], ["im0", "im1"])
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr", "--json",
                            "--json-file", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # stdout is the document alone
    assert [i["image"] for i in doc["systems"][0]["per_image"]] == ["im0", "im1"] and doc["write_errors"] == []
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    assert "psnr" in r.stderr  # the table


def test_usage_errors_under_json_print_an_error_document(hf_home, tmp_path):
    data = make_set(tmp_path / "set", ["im0", "im1"], ["im1", "im2"])
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr", "--json"])
    assert r.exit_code == 2 and "no HR image of the same name for im0.png" in json.loads(r.stdout)["error"]
    r = runner.invoke(app, ["evaluate", "--dataset", str(data / "LR"), "--metrics", "sharpness", "--json"])
    assert r.exit_code == 2 and json.loads(r.stdout)["error"].startswith("unknown metric(s) sharpness")
    r = runner.invoke(app, ["evaluate", "--dataset", str(data / "LR"), "--limit", "0", "--json"])
    assert r.exit_code == 2 and json.loads(r.stdout) == {"error": "--limit must be positive"}


def test_unwritable_reports_are_one_line_each_and_the_rest_is_written(hf_home, tmp_path):
    data = make_set(tmp_path / "set", ["im0", "im1"], ["im0", "im1"])
    blocker = tmp_path / "out[bold]"  # a file where a folder is needed; its name holds markup-like text
    blocker.write_text("not a folder")
    (tmp_path / "csv_dir").mkdir()
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr", "--json",
                            "--save-images", str(blocker), "--sheet", str(blocker / "sheet.png"),
                            "--csv", str(tmp_path / "csv_dir"), "--json-file", str(blocker / "r.json"),
                            "--sheet-images", "1"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)  # still printed, with every failed write
    failed = [str(blocker / "im0.png"), str(blocker / "im1.png"), str(blocker / "sheet.png"),
              str(tmp_path / "csv_dir"), str(blocker / "r.json")]
    assert sorted(e.split(": cannot write")[0] for e in doc["write_errors"]) == sorted(failed)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert sorted(e.removeprefix("error: ").split(": cannot write")[0] for e in errors) == sorted(failed)
    assert doc["systems"][0]["images_scored"] == 2 and "Traceback" not in r.output


def test_the_table_prints_folder_names_with_brackets_verbatim(hf_home, tmp_path):
    data = make_set(tmp_path / "pairs[bold]", ["im0"], ["im0"])
    results = tmp_path / "res[italic]"
    results.mkdir()
    (results / "im0.png").write_bytes((data / "HR" / "im0.png").read_bytes())
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--outputs", str(results), "--metrics", "psnr"])
    assert r.exit_code == 0, r.output
    assert "pairs[bold]: 1 images" in r.stdout and "res[italic]" in r.stdout


def test_an_unwritable_cache_fails_each_image_in_one_line(hf_home, tmp_path, monkeypatch):
    data = make_set(tmp_path / "set", ["im0", "im1"], ["im0", "im1"])
    (tmp_path / "a file").write_text("not a folder")
    monkeypatch.setenv("SRX_CACHE", str(tmp_path / "a file" / "cache"))
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr", "--json"])
    assert r.exit_code == 1, r.output
    system = json.loads(r.stdout)["systems"][0]
    assert system["images_failed"] == 2 and all("cannot write" in i["error"] for i in system["per_image"])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(str(tmp_path / "a file" / "cache") in e for e in errors)


def test_a_model_that_cannot_load_is_one_error_and_a_usage_exit(hf_home, tmp_path):
    """Missing weights concern the model, not each image: one line, exit 2, {"error"} under --json."""
    data = make_set(tmp_path / "set", ["im0", "im1", "im2"], ["im0", "im1", "im2"])
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "sinsr", "--metrics", "psnr", "--json"])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SinSR_v1.pth" in errors[0] and "offline" in errors[0]
    assert json.loads(r.stdout) == {"error": errors[0].removeprefix("error: ")}


def test_ctrl_c_under_json_still_prints_a_document(hf_home, tmp_path):
    import signal
    import subprocess
    import sys

    data = make_set(tmp_path / "set", ["im0"], ["im0", "im9"])  # im9: a note on stderr, then metrics load
    proc = subprocess.Popen([sys.executable, "-m", "sr_cli.cli", "evaluate", "--dataset", str(data), "--model",
                             "bicubic", "--metrics", "psnr", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for line in proc.stderr:
        if line.startswith("note:"):
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and json.loads(out) == {"error": "interrupted"}


def test_reports_carry_the_pairing_notes_and_get_the_umask_permissions(hf_home, tmp_path):
    data = make_set(tmp_path / "set", ["im0", "im1_LR4"], ["im0", "im1_HR", "im3"])
    out = tmp_path / "out"
    previous = os.umask(0o027)
    try:
        r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr",
                                "--json", "--json-file", str(out / "r.json"), "--csv", str(out / "r.csv"),
                                "--sheet", str(out / "s.png"), "--save-images", str(out / "sr")])
    finally:
        os.umask(previous)
    assert r.exit_code == 0, r.output
    notes = json.loads(r.stdout)["notes"]
    assert any("no LR image for im3.png" in n for n in notes) and any("im1_LR4.png" in n for n in notes)
    files = [out / "r.json", out / "r.csv", out / "s.png", out / "sr" / "im0.png", out / "sr" / "im1_LR4.png"]
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o640)}


def test_a_metric_that_cannot_score_an_image_fails_that_image_in_one_line(hf_home, tmp_path):
    """MS-SSIM's five scales need more than 32x24 pixels: pyiqa raises; the image fails, the run goes on."""
    data = make_set(tmp_path / "set", ["im0", "im1"], ["im0", "im1"])
    _image(data / "HR" / "big.png", (192, 192), seed=5)
    _image(data / "LR" / "big.png", (48, 48), seed=6)
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr,ms_ssim",
                            "--json"])
    assert r.exit_code == 1, r.output
    system = json.loads(r.stdout)["systems"][0]
    by_name = {i["image"]: i for i in system["per_image"]}
    assert "ms_ssim" in by_name["big"] and "psnr" in by_name["big"] and "error" not in by_name["big"]
    for name in ("im0", "im1"):
        assert by_name[name]["error"].startswith(f"{data / 'LR' / name}.png: metric 'ms_ssim' cannot score this image")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and system["mean"]["psnr"] == by_name["big"]["psnr"]
