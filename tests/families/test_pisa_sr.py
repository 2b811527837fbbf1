"""PiSA-SR: `srx upscale` against the authors' own inference script (`test_pisasr.py` with `pisasr.py`), end to
end, on a tiny `pisa_sr.pkl` in the published layout, in the default setting and with adjusted pixel/semantic
guidance (recordings made by tests/fixtures/authors_parity/make_pisa_sr_fixtures.py, which says exactly what was
run and what was changed); the guidance options' usage errors; the registry entry and its offline messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.paths import FIXTURES_DIR
from helpers.digests import base_digest, checkpoint_digest
from helpers.tiny import TINY_REPO
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
    assert checkpoint_digest(pkl) == META["pisa_sr_pkl"], \
        "tests/helpers/tiny_pisa.py's checkpoint changed: re-run make_pisa_sr_fixtures.py"
    assert base_digest(tiny_sd) == META["base"], \
        "tests/helpers/tiny.py's base model changed: re-run make_pisa_sr_fixtures.py"
    return pkl


@pytest.fixture(scope="module")
def pisa_model(pisa_pkl, tiny_sd, tmp_path_factory):
    """The tiny model loaded once (its own srx cache), for the tests that call the engine directly."""
    from sr_cli import load_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRX_CACHE", str(tmp_path_factory.mktemp("srx_cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield load_model("pisa-sr", base=str(tiny_sd), weights=str(pisa_pkl), device="cpu", dtype="fp32")


def _cli_upscale(pkl: Path | None, out: Path, *, posterior: str, guidance=None, color_fix: str = "none") -> np.ndarray:
    """`srx upscale` as a user runs it (the registry entry, conversion, loading) with the recording's settings;
    ``pkl`` None: the weights imported into the cache."""
    args = ["upscale", str(FIXTURES / META["lr"]), "--model", "pisa-sr", "--base", TINY_REPO,
            "--color-fix", color_fix, "--tile", "0", "--device", "cpu", "--dtype", "fp32", "-o", str(out)]
    if pkl is not None:
        args += ["--weights", str(pkl)]
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


END_TO_END = sorted(n for n, r in META["recordings"].items() if r["process_size"])  # 8-bit PNGs
NETWORK = sorted(n for n, r in META["recordings"].items() if not r["process_size"])  # float outputs


def _assert_parity(name: str, ours: np.ndarray) -> None:
    theirs = _recording(name)
    assert ours.shape == theirs.shape == (80, 112, 3)
    diff = np.abs(ours - theirs)
    print(f"{name}: max {diff.max()}, mean {diff.mean():.4f}, differing {np.mean(diff > 0):.4%}")
    assert diff.max() <= 2 and diff.mean() <= 0.5, (diff.max(), diff.mean())
    # The same 8-bit levels (ToPILImage's truncation, PIL's rounding) but where float noise crosses a boundary.
    assert np.mean(diff > 0) < 0.02, np.mean(diff > 0)


# Their script with its defaults (the small input enlarged to a shorter side of 128 first, the result shrunk
# back): without a color fix, in the default setting and with adjusted guidance (with their default adain fix:
# test_imported_weights_upscale_as_the_authors_script_with_its_defaults).
@pytest.mark.parametrize("name", [n for n in END_TO_END if n != "pisa_sr_enlarged_default_adain"])
def test_upscale_equals_the_authors_script_on_8bit_output(hf_home, pisa_pkl, name, tmp_path):
    _assert_parity(name, _cli_upscale(pisa_pkl, tmp_path, **_setting(name)))


def test_the_end_to_end_comparison_fails_with_the_default_setting(pisa_model):
    name = "pisa_sr_enlarged_adjustable_seed"  # passes with its own settings (the test above)
    diff = np.abs(_api_upscale(pisa_model, **(_setting(name) | {"guidance": None})) - _recording(name))
    assert diff.max() > 2 or diff.mean() > 0.5, (diff.max(), diff.mean())


def _network_output(sr, *, posterior: str, guidance, color_fix=None) -> torch.Tensor:
    """The network on the 8-bit-resized input (``ToTensor(PIL 8-bit resize) * 2 - 1``, as the script with
    ``--process_size 0``), as an image in [0, 1] before the 8-bit conversion."""
    from sr_cli.engine.pipeline import pil_to_uint8
    from sr_cli.engine.resize import upsample_input

    lr = pil_to_uint8(Image.open(FIXTURES / META["lr"]).convert("RGB"))
    x = upsample_input(lr, 80, 112) * 2 - 1
    t = sr.net.choose_timesteps(x, sr.fixed_timestep())
    assert t.tolist() == [1.0]
    generator = torch.Generator().manual_seed(META["seed"]) if posterior == "sample" else None
    with torch.no_grad():
        y = sr.net(x, t, sr.net.text_condition(""), generator, guidance=guidance)
    return (y[0] * 0.5 + 0.5).clamp(0, 1)


def _npy(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(FIXTURES / f"{name}.npy").astype(np.float32) / 65535)


@pytest.mark.parametrize("name", NETWORK)
def test_network_output_equals_the_authors_before_quantization(pisa_model, name):
    """Default setting and adjusted guidance, posterior sample and mean: the same to a few hundredths of a level."""
    setting = _setting(name)
    ours = _network_output(pisa_model, posterior=setting["posterior"], guidance=setting["guidance"])
    assert (ours - _npy(name)).abs().max() * 255 < 0.05, (ours - _npy(name)).abs().max() * 255


def test_network_output_with_unmerged_adapters_equals_the_authors(pisa_pkl, tiny_sd, monkeypatch, tmp_path):
    """``merge_lora=False`` keeps the six adapters as peft layers; the pixel-only pass still removes the semantic
    LoRA exactly."""
    from sr_cli import load_model

    monkeypatch.setenv("SRX_CACHE", str(tmp_path))
    sr = load_model("pisa-sr", base=str(tiny_sd), weights=str(pisa_pkl), device="cpu", dtype="fp32",
                    merge_lora=False, download=False)
    name = "pisa_sr_adjustable_mean"
    ours = _network_output(sr, posterior="mean", guidance=_setting(name)["guidance"])
    assert (ours - _npy(name)).abs().max() * 255 < 0.05, (ours - _npy(name)).abs().max() * 255


@pytest.mark.parametrize("wrong", [
    {"guidance": (0.6, 1.3)},  # a semantic scale 0.1 off
    {"guidance": (0.7, 1.4)},  # a pixel scale 0.1 off
    {"guidance": None},  # the default setting
    {"posterior": "mean"},  # the posterior mean where the authors draw a sample
], ids=["semantic-scale", "pixel-scale", "default-setting", "posterior-mean"])
def test_the_network_comparison_fails_when_a_setting_differs(pisa_model, wrong):
    name = "pisa_sr_adjustable_seed"
    setting = {k: v for k, v in _setting(name).items() if k != "color_fix"} | wrong
    assert (_network_output(pisa_model, **setting) - _npy(name)).abs().max() * 255 > 2


def test_two_pass_guidance_at_one_one_equals_the_single_pass(pisa_model):
    """The authors' adjustable path at (1, 1) is their default setting; srx runs it in one UNet pass."""
    sr = pisa_model
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t, text = torch.tensor([1.0]), sr.net.text_condition("")
    z = sr.net.encode(x)
    single = sr.net.latent_step(z, t, text, guidance=(1.0, 1.0))
    # The two passes, as the adjustable path computes them (pixel-only pass with the semantic LoRA removed).
    full = sr.net.unet(z, t, encoder_hidden_states=text).sample
    with sr.net.pixel_only() as unet:
        pix = unet(z, t, encoder_hidden_states=text).sample
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
    assert "small inputs: a side under 128 px: enlarged to it first" in text
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


def test_imported_weights_upscale_as_the_authors_script_with_its_defaults(hf_home, pisa_pkl, osediff_pkl, tmp_path):
    """`srx models import` refuses another model's file, takes the published one; `srx upscale --model pisa-sr`
    then runs it with every default (guidance 1/1, adain) as their script with its defaults."""
    r = runner.invoke(app, ["models", "import", "pisa-sr", str(osediff_pkl)])
    assert r.exit_code == 2 and "expected pisa-sr-pkl" in r.output, r.output
    r = runner.invoke(app, ["models", "import", "pisa-sr", str(pisa_pkl)])
    assert r.exit_code == 0, r.output
    name = "pisa_sr_enlarged_default_adain"
    assert _setting(name) == {"posterior": "sample", "guidance": None, "color_fix": "adain"}
    args = ["upscale", str(FIXTURES / META["lr"]), "--model", "pisa-sr", "--base", TINY_REPO, "--device", "cpu",
            "--dtype", "fp32", "--seed", str(META["seed"]), "-o", str(tmp_path / "o.png")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    _assert_parity(name, np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(np.int16))


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


def test_a_16bit_small_input_takes_the_same_enlargement_in_float(pisa_model):
    """Float (16-bit) inputs follow the 8-bit path's steps without its 8-bit rounding: close to it, not equal."""
    from sr_cli.engine.pipeline import UpscaleOptions, pil_to_uint8

    lr = pil_to_uint8(Image.open(FIXTURES / META["lr"]).convert("RGB"))
    options = UpscaleOptions(tile=0, color_fix="none")
    eight_bit = pisa_model.upscale_tensor(lr, options)
    floating = pisa_model.upscale_tensor(lr.float() / 255, options)
    assert floating.shape == eight_bit.shape == (1, 3, 80, 112)
    diff = (floating - eight_bit).abs() * 255
    assert 0 < diff.mean() < 2, diff.mean()


def test_the_default_setting_runs_the_folded_unet_without_peft_wrappers(pisa_pkl, tiny_sd, monkeypatch, tmp_path):
    """Both LoRAs folded into the weights; the semantic LoRA's removal copy appears only with adjusted guidance."""
    from sr_cli import load_model
    from sr_cli.models.lora import has_adapters

    monkeypatch.setenv("SRX_CACHE", str(tmp_path))
    sr = load_model("pisa-sr", base=str(tiny_sd), weights=str(pisa_pkl), device="cpu", dtype="fp32", download=False)
    image = Image.open(FIXTURES / META["lr"])
    sr.upscale(image, color_fix="none")
    assert not has_adapters(sr.net.unet)
    sr.upscale(image, color_fix="none", semantic_guidance=0.5)
    assert has_adapters(sr.net.unet)
