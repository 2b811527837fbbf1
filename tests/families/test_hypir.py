"""HYPIR: `srx upscale` against the authors' own test.py, end to end, on a tiny `HYPIR_sd2.pth` in the published
layout (recordings made by tests/fixtures/authors_parity/make_hypir_fixtures.py, which says exactly what was run and
what was changed), plus the published format, the registry entry, the offline message and the real weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.hypir_tiny import make_hypir_pth
from helpers.paths import fixture_script, FIXTURES_DIR
from helpers.tiny import TINY_REPO, place_in_hf_cache
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app

FIXTURES = FIXTURES_DIR / "authors_parity"
META = json.loads((FIXTURES / "hypir_meta.json").read_text())
HYPIR_REPO = "lxq007/HYPIR"
HYPIR_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
runner = CliRunner()


def _generator():
    return fixture_script("make_hypir_fixtures")


@pytest.fixture(scope="session")
def hypir_pth(tiny_sd, tmp_path_factory) -> Path:
    path = make_hypir_pth(tiny_sd, tmp_path_factory.mktemp("hypir") / "HYPIR_sd2.pth")
    generator = _generator()
    assert generator.weights_digest(path) == META["weights"], "tests/helpers/hypir_tiny.py changed: re-record"
    assert generator.base_digest(tiny_sd) == META["base"], "tests/helpers/tiny.py's base changed: re-record"
    return path


@pytest.fixture()
def hypir_hub(hf_home, hypir_pth) -> Path:
    """The offline Hub cache also holds the tiny ``HYPIR_sd2.pth`` as ``lxq007/HYPIR``."""
    return place_in_hf_cache(hypir_pth.parent, hf_home / "hub", repo=HYPIR_REPO, commit=HYPIR_COMMIT)


def _args(case: str) -> list[str]:
    """srx's options for a recorded case: their patch size and stride as --tile/--overlap, their caption."""
    c = META["cases"][case]
    args = [] if c["patch"] == 512 else ["--tile", str(c["patch"]), "--overlap", str(c["patch"] - c["stride"])]
    if not c["mean"]:
        args += ["--seed", str(META["seed"])]
    if c["prompt"]:
        args += ["--prompt", c["prompt"]]
    if c.get("upscale", 4) != 4:
        args += ["--scale", str(c["upscale"])]  # run at that factor, as theirs (not x4 then resized)
    return args


def _lr(case: str) -> Path:
    w, h, seed = META["cases"][case]["lr"]
    return FIXTURES / f"hypir_lr_{w}x{h}_{seed}.png"


def _upscale(case: str, out: Path, *extra: str) -> np.ndarray:
    lr = _lr(case)
    r = runner.invoke(app, ["upscale", str(lr), "--model", "hypir", "--base", TINY_REPO, "--device", "cpu",
                            "--dtype", "fp32", "-o", str(out), *_args(case), *extra])
    assert r.exit_code == 0, r.output
    return np.asarray(Image.open(out / f"{lr.stem}_srx.png").convert("RGB")).astype(np.int16)


def _distance(ours: np.ndarray, case: str) -> tuple[int, float]:
    theirs = np.asarray(Image.open(FIXTURES / f"{case}.png").convert("RGB")).astype(np.int16)
    w, h, _ = META["cases"][case]["lr"]
    s = META["cases"][case].get("upscale", 4)
    assert ours.shape == theirs.shape == (s * h, s * w, 3)
    diff = np.abs(ours - theirs)
    print(f"{case}: max {diff.max()}, mean {diff.mean():.4f}, differing {np.mean(diff > 0):.4%}")
    return int(diff.max()), float(diff.mean())


@pytest.mark.parametrize("case", list(META["cases"]))
def test_upscale_equals_the_authors_script_on_8bit_output(hypir_hub, case, tmp_path):
    """Through the Hub cache and the real loading path: enlargement of small images, padding, the three tiled
    stages, seeded or mean posterior, a caption, their defaults (512/256), their wavelet fix, x1 and x2."""
    ours = _upscale(case, tmp_path)
    worst, mean = _distance(ours, case)
    assert worst <= 2 and mean <= 0.5, (worst, mean)
    # In fact the same 8-bit levels but where float noise crosses a level boundary (the truncation).
    theirs = np.asarray(Image.open(FIXTURES / f"{case}.png").convert("RGB")).astype(np.int16)
    assert worst <= 1 and np.mean(ours != theirs) < 0.001, np.mean(ours != theirs)


@pytest.mark.parametrize("case", ["hypir_small_mean"])
def test_batched_tiles_give_the_authors_result(hypir_hub, case, tmp_path):
    """--tile-batch 4: encoder, UNet and decoder tiles together (without a seed), the same result."""
    worst, mean = _distance(_upscale(case, tmp_path, "--tile-batch", "4"), case)
    assert worst <= 1 and mean <= 0.01, (worst, mean)


@pytest.mark.parametrize("case", ["hypir_large_seed"])
def test_float_output_equals_the_authors_before_quantization(hypir_pth, hf_home, case):
    """The float image their ``tensor2image`` receives, not only its 8-bit levels (a float input takes srx's
    16-bit path: the same steps without the 8-bit truncation)."""
    from sr_cli import load_model
    from sr_cli.engine.pipeline import UpscaleOptions

    c = META["cases"][case]
    sr = load_model("hypir", base=TINY_REPO, weights=str(hypir_pth), device="cpu", dtype="fp32")
    lr = torch.from_numpy(np.asarray(Image.open(_lr(case)).convert("RGB"), dtype=np.float32) / 255)
    opts = UpscaleOptions(tile=c["patch"], overlap=c["patch"] - c["stride"], seed=META["seed"], prompt=c["prompt"])
    ours = sr.upscale_tensor(lr.permute(2, 0, 1)[None].contiguous(), opts)[0]
    theirs = torch.from_numpy(np.load(FIXTURES / f"{case}.npy").astype(np.float32) / 65535)
    assert (ours - theirs).abs().max() * 255 < 0.05, (ours - theirs).abs().max() * 255


@pytest.mark.parametrize("change", ["LoRA alpha 8 (peft's default) instead of the rank", "PIL bicubic input",
                                    "overlap 16 instead of their stride", "color fix after clamping"])
def test_parity_check_catches_a_changed_step(hypir_hub, hypir_pth, monkeypatch, change, tmp_path):
    """Each step the parity rests on moves the output past the tolerance when it is changed."""
    from sr_cli.engine import hypir as engine
    from sr_cli.engine.resize import pil_resize
    from sr_cli.families import hypir as family

    extra: list[str] = []
    if change.startswith("LoRA alpha"):
        convert = family.convert_hypir

        def peft_default_alpha(ckpt, path):
            converted = convert(ckpt, path)
            converted.unet_adapters = [a.__class__(a.name, a.rank, 8.0, a.target_modules) for a in converted.unet_adapters]
            return converted

        monkeypatch.setitem(family.HYPIRFamily.formats, family.HYPIR_FORMAT, peft_default_alpha)
        extra = ["--weights", str(hypir_pth)]  # converted afresh (not from the cache)
    elif change == "PIL bicubic input":
        monkeypatch.setattr(engine, "authors_upsample", lambda lr, h, w: pil_resize(lr.clamp(0, 1), h, w))
    elif change.startswith("overlap"):
        extra = ["--overlap", "16"]
    else:
        enhance = engine.hypir_enhance

        def fix_after_clamp(net, reference, *args, color_fix, **kwargs):
            from sr_cli.engine.color import apply_color_fix

            y = enhance(net, reference, *args, color_fix="none", **kwargs).clamp(0, 1)
            return apply_color_fix(color_fix, y, reference)

        monkeypatch.setattr(engine, "hypir_enhance", fix_after_clamp)
    worst, mean = _distance(_upscale("hypir_small_seed", tmp_path, *extra), "hypir_small_seed")
    assert worst > 2 or mean > 0.5, (worst, mean)


# ----------------------------------------------------------------------------- the published format
def test_published_file_converts_to_one_unet_adapter_at_scale_one(hypir_pth):
    from sr_cli.models.checkpoints import read_published

    ckpt = read_published(hypir_pth, "hypir-pth", "HYPIR_sd2.pth")
    (adapter,) = ckpt.unet_adapters
    assert (adapter.name, adapter.rank, adapter.alpha) == ("default", 4, 4.0)
    assert set(adapter.target_modules) == {"to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2",
                                           "conv_shortcut", "conv_out", "proj_in", "proj_out", "ff.net.2",
                                           "ff.net.0.proj"}
    assert ckpt.vae_adapters == [] and ckpt.dtsm is None
    assert len(ckpt.tensors) == 144 and all(k.startswith("unet.") and ".lora_" in k for k in ckpt.tensors)


@pytest.mark.parametrize(("content", "reason"), [
    ({}, "it is empty"),
    ({"down_blocks.0.resnets.0.conv1.lora_A.default.weight": torch.zeros(4, 8, 3, 3),
      "conv_in.weight": torch.zeros(8, 4, 3, 3)}, "unexpected key 'conv_in.weight'"),
])
def test_a_file_that_is_not_hypir_lora_is_refused_in_one_line(content, reason, tmp_path):
    from sr_cli.errors import CheckpointFormatError
    from sr_cli.models.checkpoints import read_published

    path = tmp_path / "HYPIR_sd2.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError) as e:
        read_published(path, "hypir-pth", "HYPIR_sd2.pth")
    assert str(e.value) == f"{path}: not a HYPIR LoRA state dict ({reason})"


def test_hypir_file_given_to_another_model_is_named(hypir_pth, osediff_pkl):
    from sr_cli.errors import CheckpointFormatError
    from sr_cli.models.checkpoints import read_published

    with pytest.raises(CheckpointFormatError, match="this is a hypir-pth checkpoint, expected osediff-pkl"):
        read_published(hypir_pth, "osediff-pkl", "osediff.pkl")
    with pytest.raises(CheckpointFormatError, match="this is a osediff-pkl checkpoint, expected hypir-pth"):
        read_published(osediff_pkl, "hypir-pth", "HYPIR_sd2.pth")


# ----------------------------------------------------------------------------- registry, downloads, real weights
def test_registry_entry_shows_the_hub_source_and_the_non_commercial_license(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(app, ["models", "info", "hypir"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "HYPIR_sd2.pth (hub): hf://lxq007/HYPIR/HYPIR_sd2.pth@main" in text
    assert "non-commercial use only" in text and "SupPixel" in text
    assert "stabilityai/stable-diffusion-2-1-base" in text
    assert "timestep: 200" in text and "color fix: wavelet" in text and "tiles: 512 px, overlap 256 px" in text
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "hypir" in r.output and "non-commercial" in " ".join(r.output.split())


def test_offline_download_names_the_missing_file_in_one_line(hf_home, tiny_sd):
    place_in_hf_cache(tiny_sd, hf_home / "hub", repo="stabilityai/stable-diffusion-2-1-base")
    r = runner.invoke(app, ["models", "download", "hypir"], env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code != 0
    errors = [line for line in r.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and r.output.endswith(errors[0] + "\n"), r.output  # the base (cached) is listed first
    assert "lxq007/HYPIR/HYPIR_sd2.pth" in errors[0] and "srx models download hypir" in errors[0], r.output


@pytest.mark.real_weights
def test_real_weights_upscale_a_photo():
    """With HYPIR_sd2.pth and SD 2.1-base in the Hugging Face cache: a x4 result close to the input."""
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(HYPIR_REPO, "HYPIR_sd2.pth"), str) or not isinstance(
            try_to_load_from_cache("stabilityai/stable-diffusion-2-1-base", "unet/config.json"), str):
        pytest.skip("HYPIR's weights (lxq007/HYPIR) or stabilityai/stable-diffusion-2-1-base are not in the "
                    "Hugging Face cache")
    from sr_cli import load_model

    sr = load_model("hypir", download=False, device=os.environ.get("SRX_TEST_DEVICE", "auto"))
    lr = Image.open(FIXTURES / "lr.png").convert("RGB")
    out = sr.upscale(lr)
    assert out.size == (4 * lr.width, 4 * lr.height)
    small = np.asarray(out.resize(lr.size, Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(small - np.asarray(lr, dtype=np.float32)).mean() < 20
