"""`srx evaluate --baseline a,b,...`: several baselines (bicubic, model names, model files) scored beside the
model through the same code, in the table and in the JSON and CSV reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.classic import make_model_file, spandrel_forward
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.evaluate.report import paper_values

pytest.importorskip("pyiqa")
runner = CliRunner()


def _paired_set(root: Path, n: int = 2) -> Path:
    """HR/ 64x48 smooth images and LR/ their x4 bicubic downscales."""
    rng = np.random.default_rng(3)
    for folder in ("HR", "LR"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        base = Image.fromarray((rng.random((7, 9, 3)) * 255).astype(np.uint8))
        hr = base.resize((64, 48), Image.Resampling.BICUBIC)
        hr.save(root / "HR" / f"img{i}.png")
        hr.resize((16, 12), Image.Resampling.BICUBIC).save(root / "LR" / f"img{i}.png")
    return root


def _levels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_two_baselines_are_scored_beside_the_model(hf_home, tmp_path):
    data = _paired_set(tmp_path / "set")
    model = make_model_file(tmp_path / "models", "compact", 4, ".safetensors", seed=1)
    baseline = make_model_file(tmp_path / "models", "rrdbnet", 4, ".pth", seed=2)
    out = tmp_path / "out"
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", str(model), "--metrics", "psnr",
                            "--baseline", f"bicubic,{baseline}", "--json-file", str(out / "r.json"),
                            "--csv", str(out / "r.csv"), "--sheet", str(out / "sheet.png"), "--sheet-images", "1"])
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if "metric" in line)
    assert header.index(model.name) < header.index("bicubic") < header.index(baseline.name)  # all three printed
    doc = json.loads((out / "r.json").read_text())
    systems = [s["system"] for s in doc["systems"]]
    assert systems == [str(model), "bicubic", str(baseline)]
    means = [s["mean"]["psnr"] for s in doc["systems"]]
    assert len(set(means)) == 3 and all(np.isfinite(means))  # three different systems were scored
    # The model-file baseline ran through the engine: its outputs are spandrel's own forward on the LR images.
    for img in doc["systems"][2]["per_image"]:
        lr = torch.from_numpy(_levels(data / "LR" / f"{img['image']}.png")).permute(2, 0, 1)[None].float() / 255
        ref = (spandrel_forward(baseline, lr)[0].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(_levels(Path(img["sr_file"])) - ref).max() <= 1
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert [(row["system"], row["image"]) for row in rows if row["image"] == "mean"] == [
        (str(model), "mean"), ("bicubic", "mean"), (str(baseline), "mean")]
    assert Image.open(out / "sheet.png").size == (48 * 5, 16 + 48)  # LR | bicubic | model | baseline | HR


@pytest.mark.parametrize("value,message", [
    ("bicubic,bicubic", "--baseline 'bicubic' is named twice"),
    (" , ", "--baseline names no baseline"),
])
def test_baselines_named_twice_or_not_at_all_are_usage_errors(hf_home, tmp_path, value, message):
    data = _paired_set(tmp_path / "set", n=1)
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr",
                            "--baseline", value])
    assert r.exit_code == 2 and message in r.stderr, r.output


def test_an_unknown_baseline_is_a_usage_error_naming_it(hf_home, tmp_path):
    data = _paired_set(tmp_path / "set", n=1)
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr",
                            "--baseline", "no-such-model"])
    assert r.exit_code == 2 and "unknown model 'no-such-model'" in r.stderr, r.output


def test_a_registry_model_is_a_baseline_by_its_name(hf_home, tmp_path):
    """Offline and not downloaded yet: the registry's Real-ESRGAN is the baseline asked for, and the one line
    says how to get its file."""
    data = _paired_set(tmp_path / "set", n=1)
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr",
                            "--baseline", "realesrgan-x4plus"])
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()
    assert "RealESRGAN_x4plus.pth for 'realesrgan-x4plus'" in line and "srx models download realesrgan-x4plus" in line


def test_realesrgan_x4plus_is_compared_with_the_papers_real_esrgan_row():
    method, values, source = paper_values("realesrgan-x4plus", "RealSR")
    assert method == "Real-ESRGAN" and "OSEDiff" in source
    assert values["psnr"] == pytest.approx(25.69) and values["ssim"] == pytest.approx(0.7616)
