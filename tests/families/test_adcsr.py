"""AdcSR: `srx upscale` against the authors' own test script, end to end, on small files in the published layouts
(the recording made by tests/fixtures/authors_parity/make_adcsr_fixtures.py, which says what was run and changed),
plus the registry entry, the offline message and the real weights when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.adcsr_tiny import ADCSR_COMMIT, ADCSR_REPO, make_adcsr_base, make_adcsr_files
from helpers.paths import FIXTURES_DIR
from helpers.digests import base_digest, checkpoint_digest
from helpers.tiny import place_in_hf_cache
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app

FIXTURES = FIXTURES_DIR / "authors_parity"
META = json.loads((FIXTURES / "adcsr_meta.json").read_text())
runner = CliRunner()


@pytest.fixture(scope="module")
def adcsr_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the small base directory, net_params_200.pkl, halfDecoder.ckpt)."""
    root = tmp_path_factory.mktemp("adcsr")
    base = make_adcsr_base(root / "base")
    files = make_adcsr_files(base, root / "files")
    assert checkpoint_digest(*files) == META["files"] and base_digest(base) == META["base"], \
        "tests/helpers/adcsr_tiny.py's files changed: re-run make_adcsr_fixtures.py"
    return base, *files


@pytest.fixture()
def adcsr_hub(hf_home, adcsr_files) -> Path:
    """The offline Hub cache holds the two files as ``Guaishou74851/AdcSR``; the base is a local directory."""
    place_in_hf_cache(adcsr_files[1].parent, hf_home / "hub", repo=ADCSR_REPO, commit=ADCSR_COMMIT)
    return adcsr_files[0]


def _upscale(base: Path, out: Path, *extra: str) -> np.ndarray:
    r = runner.invoke(app, ["upscale", str(FIXTURES / "lr.png"), "--model", "adcsr", "--base", str(base),
                            "--device", "cpu", "--dtype", "fp32", "-o", str(out), *extra])
    assert r.exit_code == 0, r.output
    return np.asarray(Image.open(out / "lr_srx.png").convert("RGB")).astype(np.int16)


def _diff(ours: np.ndarray) -> tuple[int, float]:
    theirs = np.asarray(Image.open(FIXTURES / "adcsr.png").convert("RGB")).astype(np.int16)
    assert ours.shape == theirs.shape == (80, 112, 3)
    diff = np.abs(ours - theirs)
    print(f"max {diff.max()}, mean {diff.mean():.4f}, differing {np.mean(diff > 0):.4%}")
    return int(diff.max()), float(diff.mean())


def test_upscale_equals_the_authors_script_on_8bit_output(adcsr_hub, tmp_path):
    worst, mean = _diff(_upscale(adcsr_hub, tmp_path))
    assert worst <= 2 and mean <= 0.5, (worst, mean)


def test_network_output_equals_the_authors_before_quantization(adcsr_hub):
    from sr_cli import load_model

    sr = load_model("adcsr", base=str(adcsr_hub), device="cpu", dtype="fp32")
    lr = torch.from_numpy(np.asarray(Image.open(FIXTURES / "lr.png").convert("RGB"), dtype=np.float32) / 255)
    with torch.no_grad():
        y = sr.net(lr.permute(2, 0, 1)[None] * 2 - 1)
    ours = (y[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0)
    theirs = torch.from_numpy(np.load(FIXTURES / "adcsr.npy").astype(np.float32) / 65535)
    assert (ours - theirs).abs().max() * 255 < 0.05, (ours - theirs).abs().max() * 255


@pytest.mark.parametrize("change", ["no color normalisation", "input in [0, 1]",
                                    "decoder residual bias +0.1"])
def test_parity_check_catches_a_changed_step(adcsr_hub, monkeypatch, change, tmp_path):
    from sr_cli.engine import adcsr as engine

    forward = engine.AdcSR.forward
    if change == "no color normalisation":
        monkeypatch.setattr(engine.AdcSR, "forward",
                            lambda self, x, stats=None: self.net(x).float())
    elif change == "input in [0, 1]":
        monkeypatch.setattr(engine.AdcSR, "forward", lambda self, x, stats=None: forward(self, (x + 1) / 2, stats))
    else:
        def scaled(self, x, stats=None):
            with torch.no_grad():
                self.decoder.up_blocks[0].resnets[0].conv2.bias.add_(0.1)
            try:
                return forward(self, x, stats)
            finally:
                with torch.no_grad():
                    self.decoder.up_blocks[0].resnets[0].conv2.bias.sub_(0.1)

        monkeypatch.setattr(engine.AdcSR, "forward", scaled)
    worst, mean = _diff(_upscale(adcsr_hub, tmp_path))
    assert worst > 2 or mean > 0.5, (worst, mean)


def test_registry_entry_names_both_hub_files():
    r = runner.invoke(app, ["models", "info", "adcsr"], env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "hf://Guaishou74851/AdcSR/net_params_200.pkl@main" in text
    assert "halfDecoder.ckpt: Guaishou74851/AdcSR" in text
    assert "license: Apache-2.0" in text and "color fix: none" in text


def test_offline_download_names_the_missing_file(hf_home, tiny_sd):
    place_in_hf_cache(tiny_sd, hf_home / "hub", repo="stabilityai/stable-diffusion-2-1-base")
    r = runner.invoke(app, ["models", "download", "adcsr"], env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code != 0
    errors = [line for line in r.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Guaishou74851/AdcSR/net_params_200.pkl" in errors[0], r.output
    assert "srx models download adcsr" in errors[0], r.output


@pytest.mark.real_weights
def test_real_weights_upscale_a_photo():
    from huggingface_hub import try_to_load_from_cache

    if not all(isinstance(try_to_load_from_cache(ADCSR_REPO, f), str) for f in ("net_params_200.pkl",
                                                                                  "halfDecoder.ckpt")) \
            or not isinstance(try_to_load_from_cache("stabilityai/stable-diffusion-2-1-base", "unet/config.json"), str):
        pytest.skip("AdcSR's weights (Guaishou74851/AdcSR) or SD 2.1-base's UNet config are not in the HF cache")
    from sr_cli import load_model

    sr = load_model("adcsr", download=False)
    lr = Image.open(FIXTURES / "lr.png").convert("RGB").resize((32, 32))
    out = sr.upscale(lr)
    assert out.size == (128, 128)
    small = np.asarray(out.resize(lr.size, Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(small - np.asarray(lr, dtype=np.float32)).mean() < 20
