"""PiSA-SR: `srx upscale` against the authors' own inference script (`test_pisasr.py` with `pisasr.py`), end to
end, on a tiny `pisa_sr.pkl` in the published layout, in the default setting and with adjusted pixel/semantic
guidance (recordings made by tests/fixtures/authors_parity/make_pisa_sr_fixtures.py, which says exactly what was
run and what was changed); the guidance options' usage errors; the registry entry and its offline messages."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.paths import FIXTURES_DIR
from helpers.tiny import TINY_REPO, place_in_hf_cache
from helpers.tiny_pisa import make_pisa_sr_pkl
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app

FIXTURES = FIXTURES_DIR / "authors_parity"
META = json.loads((FIXTURES / "pisa_sr_meta.json").read_text())
runner = CliRunner()


@pytest.fixture(scope="session")
def pisa_pkl(tiny_sd, tmp_path_factory) -> Path:
    pkl = make_pisa_sr_pkl(tiny_sd, tmp_path_factory.mktemp("pisa") / "pisa_sr.pkl")
    spec = importlib.util.spec_from_file_location("make_sd_fixtures", FIXTURES / "make_sd_fixtures.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.checkpoint_digest(pkl) == META["pisa_sr_pkl"], \
        "tests/helpers/tiny_pisa.py's checkpoint changed: re-run make_pisa_sr_fixtures.py"
    return pkl


@pytest.fixture(scope="module")
def pisa_model(pisa_pkl, tiny_sd, tmp_path_factory):
    """The tiny model loaded once (its own srx cache), for the tests that call the engine directly."""
    from sr_cli import load_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRX_CACHE", str(tmp_path_factory.mktemp("srx_cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield load_model("pisa-sr", base=str(tiny_sd), weights=str(pisa_pkl), device="cpu", dtype="fp32")


def _cli_upscale(pkl: Path, out: Path, *, posterior: str, guidance=None, color_fix: str = "none") -> np.ndarray:
    """`srx upscale` as a user runs it (the registry entry, conversion, loading) with the recording's settings."""
    args = ["upscale", str(FIXTURES / META["lr"]), "--model", "pisa-sr", "--base", TINY_REPO, "--weights", str(pkl),
            "--color-fix", color_fix, "--tile", "0", "--device", "cpu", "--dtype", "fp32", "-o", str(out)]
    if posterior == "sample":
        args += ["--seed", str(META["seed"])]  # the authors sample the VAE posterior: the same draws
    if guidance is not None:
        args += ["--pixel-guidance", str(guidance[0]), "--semantic-guidance", str(guidance[1])]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return np.asarray(Image.open(out / "lr_srx.png").convert("RGB")).astype(np.int16)


def _api_upscale(model, *, posterior: str, guidance=None, color_fix: str = "none") -> np.ndarray:
    """``SRModel.upscale`` (what the command runs per image) with the recording's settings."""
    pixel, semantic = guidance or (None, None)
    out = model.upscale(Image.open(FIXTURES / META["lr"]), color_fix=color_fix, tile=0,
                        seed=META["seed"] if posterior == "sample" else None,
                        pixel_guidance=pixel, semantic_guidance=semantic)
    return np.asarray(out).astype(np.int16)


def _recording(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / f"{name}.png").convert("RGB")).astype(np.int16)


def _setting(name: str) -> dict:
    rec = META["recordings"][name]
    guidance = None if rec["default"] else (rec["lambda_pix"], rec["lambda_sem"])
    color_fix = "none" if rec["align_method"] == "nofix" else rec["align_method"]
    return {"posterior": rec["posterior"], "guidance": guidance, "color_fix": color_fix}


def _assert_parity(name: str, ours: np.ndarray) -> None:
    theirs = _recording(name)
    assert ours.shape == theirs.shape == (80, 112, 3)
    diff = np.abs(ours - theirs)
    print(f"{name}: max {diff.max()}, mean {diff.mean():.4f}, differing {np.mean(diff > 0):.4%}")
    assert diff.max() <= 2 and diff.mean() <= 0.5, (diff.max(), diff.mean())
    # The same 8-bit levels (ToPILImage's truncation) but where float noise crosses a level boundary.
    assert np.mean(diff > 0) < 0.01, np.mean(diff > 0)


# Through the command: the default setting (one UNet pass), adjusted guidance (two passes), the authors' default
# color fix; the posterior-mean recordings through the loaded model.
CLI_RECORDINGS = ["pisa_sr_default_seed", "pisa_sr_adjustable_seed", "pisa_sr_default_adain"]


@pytest.mark.parametrize("name", CLI_RECORDINGS)
def test_upscale_equals_the_authors_script_on_8bit_output(hf_home, pisa_pkl, name, tmp_path):
    _assert_parity(name, _cli_upscale(pisa_pkl, tmp_path, **_setting(name)))


@pytest.mark.parametrize("name", sorted(set(META["recordings"]) - set(CLI_RECORDINGS)))
def test_model_equals_the_authors_script_without_posterior_sampling(pisa_model, name):
    _assert_parity(name, _api_upscale(pisa_model, **_setting(name)))


@pytest.mark.parametrize("wrong", [
    {"guidance": (0.6, 1.3)},  # a semantic scale 0.1 off
    {"guidance": (0.7, 1.4)},  # a pixel scale 0.1 off
    {"guidance": None},  # the default setting
    {"posterior": "mean"},  # the posterior mean where the authors draw a sample
    {"color_fix": "adain"},  # a color fix the recording does not have
], ids=["semantic-scale", "pixel-scale", "default-setting", "posterior-mean", "color-fix"])
def test_the_comparison_fails_when_a_setting_differs(pisa_model, wrong):
    """The recordings tell the settings apart: srx's output with one setting changed misses the tolerance."""
    name = "pisa_sr_adjustable_seed"  # with its own settings it passes (test_upscale_equals_the_authors_script...)
    diff = np.abs(_api_upscale(pisa_model, **(_setting(name) | wrong)) - _recording(name))
    assert diff.max() > 2 or diff.mean() > 0.5, (diff.max(), diff.mean())


@pytest.mark.parametrize(("name", "merge_lora"), [("pisa_sr_default_seed", True), ("pisa_sr_adjustable_mean", True),
                                                  ("pisa_sr_adjustable_mean", False)],
                         ids=["default-merged", "adjustable-merged", "adjustable-adapters"])
def test_network_output_equals_the_authors_before_quantization(pisa_model, pisa_pkl, tiny_sd, name, merge_lora,
                                                               monkeypatch, tmp_path):
    """The float image before the 8-bit conversion, from the 8-bit-resized input, with the LoRAs folded into the
    weights or kept as peft adapters: the same to a few hundredths of a level."""
    from sr_cli import load_model
    from sr_cli.engine.pipeline import pil_to_uint8
    from sr_cli.engine.resize import upsample_input

    setting = _setting(name)
    if merge_lora:
        sr = pisa_model
    else:
        monkeypatch.setenv("SRX_CACHE", str(tmp_path))
        sr = load_model("pisa-sr", base=str(tiny_sd), weights=str(pisa_pkl), device="cpu", dtype="fp32",
                        merge_lora=False, download=False)
    lr = pil_to_uint8(Image.open(FIXTURES / META["lr"]).convert("RGB"))
    x = upsample_input(lr, 80, 112) * 2 - 1  # = ToTensor(PIL 8-bit resize) * 2 - 1, as the script
    t = sr.net.choose_timesteps(x, sr.fixed_timestep())
    assert t.tolist() == [1.0]
    generator = torch.Generator().manual_seed(META["seed"]) if setting["posterior"] == "sample" else None
    with torch.no_grad():
        y = sr.net(x, t, sr.net.text_condition(""), generator, guidance=setting["guidance"])
    ours = (y[0] * 0.5 + 0.5).clamp(0, 1)
    theirs = torch.from_numpy(np.load(FIXTURES / f"{name}.npy").astype(np.float32) / 65535)
    assert (ours - theirs).abs().max() * 255 < 0.05, (ours - theirs).abs().max() * 255


def test_two_pass_guidance_at_one_one_equals_the_single_pass(pisa_model):
    """The authors' adjustable path at (1, 1) is their default setting; srx runs it in one UNet pass."""
    sr = pisa_model
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t, text = torch.tensor([1.0]), sr.net.text_condition("")
    z = sr.net.encode(x)
    single = sr.net.latent_step(z, t, text, guidance=(1.0, 1.0))
    # The two passes, as the adjustable path computes them (pixel-only pass with the semantic LoRA removed).
    full = sr.net.unet(z, t, encoder_hidden_states=text).sample
    sr.net._activate(sr.net._active + sr.net._removal)
    pix = sr.net.unet(z, t, encoder_hidden_states=text).sample
    sr.net._activate(sr.net._active)
    assert (single - (z - (pix + (full - pix)))).abs().max() < 1e-5
    assert (full - pix).abs().max() > 1e-2  # the semantic LoRA does something: the check can fail
    # Semantic 0: the pixel LoRA alone, one pass.
    assert (sr.net.latent_step(z, t, text, guidance=(0.8, 0.0)) - (z - 0.8 * pix)).abs().max() < 1e-5


@pytest.mark.parametrize("flag", ["--pixel-guidance", "--semantic-guidance"])
def test_guidance_on_a_model_without_two_loras_is_a_one_line_usage_error(flag, tmp_path):
    r = runner.invoke(app, ["upscale", str(FIXTURES / META["lr"]), flag, "0.5", "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert lines == [f"error: {flag} applies to models with a pixel and a semantic LoRA (pisa-sr); lite has none"]
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf"])
def test_guidance_must_be_a_finite_non_negative_number(hf_home, pisa_pkl, value, tmp_path):
    r = runner.invoke(app, ["upscale", str(FIXTURES / META["lr"]), "--model", "pisa-sr", "--base", TINY_REPO,
                            "--weights", str(pisa_pkl), "--pixel-guidance", value, "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: --pixel-guidance must be a finite number >= 0") and r.output.count("\n") == 1


def test_evaluate_and_bench_refuse_guidance_for_other_models(tmp_path):
    """The same options on the commands that share the engine options: the same usage error."""
    from sr_cli.cli.bench import main as bench_main

    Image.open(FIXTURES / META["lr"]).save(tmp_path / "a.png")  # a folder of images: no-reference metrics
    r = runner.invoke(app, ["evaluate", "--dataset", str(tmp_path), "--model", "lite", "--semantic-guidance", "2"])
    assert r.exit_code == 2 and "--semantic-guidance applies to models with a pixel and a semantic LoRA" in r.output
    with pytest.raises(SystemExit) as e:
        bench_main(["--model", "lite", "--size", "8", "--pixel-guidance", "2", "--no-flops", "--repeat", "1",
                    "--warmup", "0"])
    assert e.value.code == 2


def test_default_guidance_is_the_authors_and_shown_by_models_info(monkeypatch):
    from sr_cli.engine.pipeline import UpscaleOptions
    from sr_cli.models.registry import get_spec

    opts = UpscaleOptions().resolved(get_spec("pisa-sr"))
    assert (opts.pixel_guidance, opts.semantic_guidance) == (1.0, 1.0)  # test_pisasr.py's lambda defaults
    assert (opts.color_fix, opts.prompt) == ("adain", "")  # its --align_method default and empty prompt
    assert UpscaleOptions().resolved(get_spec("osediff")).pixel_guidance is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(app, ["models", "info", "pisa-sr"], terminal_width=200)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "pixel guidance: 1.0" in text and "semantic guidance: 1.0" in text and "timestep: 1" in text
    assert "license: Apache-2.0 per the authors' README" in text
    assert "drive.google.com" in text and "srx models import pisa-sr pisa_sr.pkl" in text
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "pisa-sr\tsd-dual-lora\tstabilityai/stable-diffusion-2-1-base@main" in r.output


def test_models_download_offline_names_what_is_missing(hf_home):
    """Offline, nothing cached: one line naming the SD 2.1 base; with the base cached: one line saying how to get
    pisa_sr.pkl (Google Drive, then `srx models import`)."""
    r = runner.invoke(app, ["models", "download", "pisa-sr"], env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "stabilityai/stable-diffusion-2-1-base" in r.output and "srx models download pisa-sr" in r.output


def test_import_checks_the_format_then_upscales(hf_home, pisa_pkl, osediff_pkl, tmp_path):
    r = runner.invoke(app, ["models", "import", "pisa-sr", str(osediff_pkl)])
    assert r.exit_code == 2 and "expected pisa-sr-pkl" in r.output, r.output
    r = runner.invoke(app, ["models", "import", "pisa-sr", str(pisa_pkl)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["upscale", str(FIXTURES / META["lr"]), "--model", "pisa-sr", "--base", TINY_REPO,
                            "--device", "cpu", "--pixel-guidance", "0.5", "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "o.png").size == (112, 80)


def test_a_checkpoint_without_the_semantic_lora_is_refused(pisa_pkl, tmp_path):
    from sr_cli.errors import CheckpointFormatError
    from sr_cli.models.checkpoints import read_published

    ckpt = torch.load(pisa_pkl, weights_only=True)
    for part in ("encoder", "decoder", "others"):
        ckpt[f"unet_lora_{part}_modules_sem"] = []
    torch.save(ckpt, tmp_path / "pix_only.pkl")
    with pytest.raises(CheckpointFormatError, match="needs both a pixel and a semantic LoRA"):
        read_published(tmp_path / "pix_only.pkl", "pisa-sr-pkl", "pisa_sr.pkl")


@pytest.mark.real_weights
def test_real_weights_upscale_a_photo():
    """With pisa_sr.pkl imported and SD 2.1-base in the Hugging Face cache: x4 results close to the input, the
    pixel-only setting smoother than the default."""
    from sr_cli import load_model
    from sr_cli.errors import SrxError

    try:
        sr = load_model("pisa-sr", download=False, device=os.environ.get("SRX_TEST_DEVICE", "auto"))
    except SrxError as e:
        pytest.skip(f"pisa-sr's weights or its base are not in the local caches ({e})")
    lr = Image.open(FIXTURES / META["lr"]).convert("RGB").resize((128, 96), Image.Resampling.BICUBIC)
    default = sr.upscale(lr)
    pixel_only = sr.upscale(lr, semantic_guidance=0.0)
    assert default.size == pixel_only.size == (512, 384)
    for out in (default, pixel_only):
        small = np.asarray(out.resize(lr.size, Image.Resampling.BICUBIC), dtype=np.float32)
        assert np.abs(small - np.asarray(lr, dtype=np.float32)).mean() < 20
    assert np.asarray(default, dtype=np.float32).std() >= np.asarray(pixel_only, dtype=np.float32).std() * 0.9
