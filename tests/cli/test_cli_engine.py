"""The CLI over the engine: `srx upscale` with the SD-family models equals the one-step formula, models subcommands,
errors and exit codes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from helpers.reference import authors_style_osediff, clip_embedding, one_step_formula
from helpers.tiny import TINY_REPO
from typer.testing import CliRunner

from sr_cli.cli import app

runner = CliRunner()


@pytest.fixture()
def img(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    Image.fromarray((rng.random((16, 24, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_upscale_osediff_equals_the_one_step_formula(hf_home, tiny_sd, osediff_pkl, img, tmp_path):
    from diffusers import DDPMScheduler

    out = tmp_path / "out.png"
    r = runner.invoke(app, ["upscale", str(img), "--model", "osediff", "--base", str(tiny_sd), "--weights",
                            str(osediff_pkl), "--color-fix", "none", "--tile", "0", "--prompt-extractor", "none",
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    got = np.asarray(Image.open(out)).astype(np.float32) / 255
    assert got.shape == (64, 96, 3)

    # The authors' input: the 8-bit image resized by PIL (8-bit result), ToTensor, * 2 - 1.
    lr8 = Image.open(img).convert("RGB")
    x = torch.from_numpy(np.asarray(lr8.resize((96, 64), Image.BICUBIC)).astype(np.float32) / 255)
    x = x.permute(2, 0, 1)[None] * 2 - 1
    unet, vae = authors_style_osediff(tiny_sd, osediff_pkl)
    sched = DDPMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    ref = (one_step_formula(unet, vae, sched.alphas_cumprod, x, 999, clip_embedding(tiny_sd, ", ,")) + 1) / 2
    ref = np.floor(ref[0].permute(1, 2, 0).numpy() * 255) / 255  # the script's 8-bit levels (ToPILImage)
    diff = np.abs(got - ref)
    assert diff.max() <= 1 / 255 + 1e-4 and np.mean(diff > 0.5 / 255) < 0.01  # a level apart at float ties only


def test_upscale_hero_sr_writes_a_4x_image(hf_home, tiny_sd, hero_pkl, img, tmp_path):
    out = tmp_path / "hero.png"
    r = runner.invoke(app, ["upscale", str(img), "--model", "hero-sr", "--base", str(tiny_sd), "--weights",
                            str(hero_pkl), "--color-fix", "none", "--tile", "0", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (96, 64)


def test_offline_nothing_cached_is_one_line_exit_2(hf_home, img, tmp_path):
    r = runner.invoke(app, ["upscale", str(img), "--model", "osediff", "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 2
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "srx models download osediff" in lines[0]
    assert "Traceback" not in r.output
    assert not (tmp_path / "o.png").exists()


def test_manual_weights_message(hf_home, img, tiny_sd, tmp_path):
    r = runner.invoke(app, ["upscale", str(img), "--model", "hero-sr", "--base", str(tiny_sd), "-o",
                            str(tmp_path / "o.png")])
    assert r.exit_code == 2
    assert "drive.google.com" in r.output and "srx models import hero-sr" in r.output


def test_unknown_model_and_bad_options(hf_home, img, osediff_pkl, tiny_sd, tmp_path):
    r = runner.invoke(app, ["upscale", str(img), "--model", "nope"])
    assert r.exit_code == 2 and "unknown model 'nope'" in r.output
    r = runner.invoke(app, ["upscale", str(img), "--model", "osediff", "--base", str(tiny_sd), "--weights",
                            str(osediff_pkl), "--tile", "100", "--prompt-extractor", "none"])
    assert r.exit_code == 2 and "multiple of 8" in r.output
    r = runner.invoke(app, ["upscale", str(tmp_path / "missing.png"), "--model", "osediff"])
    assert r.exit_code == 2 and "missing.png: no such file" in r.output  # no input at all: a usage error


def test_models_import_then_verify_and_use(hf_home, hero_pkl, tiny_sd, img, tmp_path):
    r = runner.invoke(app, ["models", "import", "hero-sr", str(hero_pkl)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "verify", "hero-sr"])
    assert r.exit_code == 0 and "OK" in r.output
    out = tmp_path / "o.png"
    r = runner.invoke(app, ["upscale", str(img), "--model", "hero-sr", "--base", str(tiny_sd), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file()
    # A corrupted cached file is refused, and not used.
    from sr_cli.models import hub
    from sr_cli.models.registry import get_spec

    with open(hub.manual_path(get_spec("hero-sr")), "ab") as f:
        f.write(b"x")
    r = runner.invoke(app, ["models", "verify", "hero-sr"])
    assert r.exit_code == 2 and "sha256 mismatch" in r.output


def test_models_import_refuses_wrong_format(hf_home, osediff_pkl):
    r = runner.invoke(app, ["models", "import", "hero-sr", str(osediff_pkl)])
    assert r.exit_code == 2 and "expected hero-sr-pkl" in r.output


def test_models_list_and_info(hf_home):
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "osediff" in r.output and "hero-sr" in r.output
    r = runner.invoke(app, ["models", "info", "hero-sr"], terminal_width=200)
    assert r.exit_code == 0
    assert "Non-Commercial" in r.output and "sd-turbo" in r.output and "dtsm" in r.output
    r = runner.invoke(app, ["models", "info", "nope"])
    assert r.exit_code == 2


def test_models_download_offline(hf_home):
    r = runner.invoke(app, ["models", "download", "osediff"])
    assert r.exit_code == 2 and "offline" in r.output


def test_placeholder_commands_are_registered():
    for cmd in ("train", "distill", "evaluate"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0


def test_help_does_not_import_torch():
    """`srx --help` through the console entry point (start-up work included) stays free of torch."""
    code = ("import sys\nsys.argv = ['srx', '--help']\nfrom sr_cli.cli import main\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["False", "False"]


@pytest.mark.skipif(shutil.which("srx") is None, reason="srx is not installed on PATH")
def test_installed_srx_subprocess(hf_home, tiny_sd, osediff_pkl, img, tmp_path):
    out = tmp_path / "sub.png"
    env = dict(os.environ)
    cmd = ["srx", "upscale", str(img), "--model", "osediff", "--base", str(tiny_sd), "--weights", str(osediff_pkl),
           "--color-fix", "none", "--tile", "0", "--prompt-extractor", "none", "-o", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert Image.open(out).size == (96, 64)
    p = subprocess.run(["srx", "upscale", str(img), "--model", "osediff"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "srx models download osediff" in p.stderr
