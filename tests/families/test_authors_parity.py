"""`srx upscale` against the authors' own inference scripts, end to end, on the tiny published-format
checkpoints: recordings of OSEDiff's `test_osediff.py` and Hero-SR's `test.py` made by
tests/fixtures/authors_parity/make_sd_fixtures.py (which says exactly what was run and what was changed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from helpers.tiny import TINY_REPO
from typer.testing import CliRunner

from sr_cli.cli import app
from helpers.paths import fixture_script, FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "authors_parity"
META = json.loads((FIXTURES / "meta.json").read_text())
runner = CliRunner()


def _generator():
    return fixture_script("make_sd_fixtures")


CASES = [("osediff", "osediff_pkl", "osediff"), ("hero-sr", "hero_pkl", "hero")]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def published(request, hf_home):
    model, pkl_fixture, prefix = request.param
    pkl = request.getfixturevalue(pkl_fixture)
    digest = _generator().checkpoint_digest(pkl)
    assert digest == META[f"{prefix}_pkl"], "tests/helpers/tiny.py's checkpoints changed: re-run make_sd_fixtures.py"
    return model, pkl, prefix


def _command(model: str, pkl: Path, out: Path, seeded: bool) -> list[str]:
    args = ["upscale", str(FIXTURES / "lr.png"), "--model", model, "--base", TINY_REPO, "--weights", str(pkl),
            "--color-fix", "none", "--tile", "0", "--device", "cpu", "--dtype", "fp32", "-o", str(out)]
    if model == "osediff":
        args += ["--prompt-extractor", "none"]  # no DAPE weights here: the authors' captions are empty too
    if seeded:
        args += ["--seed", str(META["seed"])]  # the authors sample the VAE posterior: the same draws
    return args


@pytest.mark.parametrize("variant", ["seed", "mean"])
def test_upscale_equals_the_authors_script_on_8bit_output(published, variant, tmp_path):
    model, pkl, prefix = published
    r = runner.invoke(app, _command(model, pkl, tmp_path, variant == "seed"))
    assert r.exit_code == 0, r.output
    ours = np.asarray(Image.open(tmp_path / "lr_srx.png").convert("RGB")).astype(np.int16)
    theirs = np.asarray(Image.open(FIXTURES / f"{prefix}_{variant}.png").convert("RGB")).astype(np.int16)
    assert ours.shape == theirs.shape == (80, 112, 3)
    diff = np.abs(ours - theirs)
    print(f"{model} {variant}: max {diff.max()}, mean {diff.mean():.4f}, differing {np.mean(diff > 0):.4%}")
    assert diff.max() <= 2 and diff.mean() <= 0.5, (diff.max(), diff.mean())
    # Same 8-bit levels (ToPILImage's truncation) but where float noise crosses a level boundary.
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01, (diff.max(), np.mean(diff > 0))


@pytest.mark.parametrize("variant", ["seed", "mean"])
def test_network_output_equals_the_authors_before_quantization(published, variant):
    """The float image before the 8-bit conversion, from the 8-bit-resized input: the same to a few hundredths
    of a level (the engine's own steps, without its final conversion to the authors' 8-bit levels)."""
    from sr_cli import load_model
    from sr_cli.engine.pipeline import pil_to_uint8
    from sr_cli.engine.resize import upsample_input

    model, pkl, prefix = published
    sr = load_model(model, base=TINY_REPO, weights=str(pkl), device="cpu", dtype="fp32", prompt_extractor="none")
    lr = pil_to_uint8(Image.open(FIXTURES / "lr.png").convert("RGB"))
    x = upsample_input(lr, 80, 112) * 2 - 1  # = ToTensor(PIL 8-bit resize) * 2 - 1, as the scripts
    t = sr.net.choose_timesteps(x, sr.fixed_timestep())
    if model == "hero-sr":  # the Dynamic Time-Step Module picks the authors' step (their Gumbel sample's mode)
        assert t.tolist() == [META[f"hero_{variant}_timestep"]]
    generator = torch.Generator().manual_seed(META["seed"]) if variant == "seed" else None
    with torch.no_grad():
        y = sr.net(x, t, sr.net.text_condition(sr.text_for(sr.spec.defaults.prompt)), generator)
    ours = (y[0] * 0.5 + 0.5).clamp(0, 1)
    theirs = torch.from_numpy(np.load(FIXTURES / f"{prefix}_{variant}.npy").astype(np.float32) / 65535)
    assert (ours - theirs).abs().max() * 255 < 0.05, (ours - theirs).abs().max() * 255


@pytest.mark.parametrize("color_fix", ["adain", "wavelet"])
def test_osediff_color_fix_equals_the_authors_script(hf_home, osediff_pkl, color_fix, tmp_path):
    """The color fix takes the authors' reference (the 8-bit-resized input) and their 8-bit output levels."""
    assert _generator().checkpoint_digest(osediff_pkl) == META["osediff_pkl"], "re-run make_sd_fixtures.py"
    args = _command("osediff", osediff_pkl, tmp_path, seeded=True)
    args[args.index("--color-fix") + 1] = color_fix
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    ours = np.asarray(Image.open(tmp_path / "lr_srx.png").convert("RGB")).astype(np.int16)
    theirs = np.asarray(Image.open(FIXTURES / f"osediff_seed_{color_fix}.png").convert("RGB")).astype(np.int16)
    diff = np.abs(ours - theirs)
    print(f"{color_fix}: max {diff.max()}, mean {diff.mean():.4f}, differing {np.mean(diff > 0):.4%}")
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01, (diff.max(), np.mean(diff > 0))
