"""The ResShift family: schedule, samplers, Swin-UNet, VQ-f4 conversion, official key layouts, upscale."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from sr_cli.models.checkpoints_resshift import read_resshift
from sr_cli.cli import app
from sr_cli.engine.resshift import ResShiftSchedule, ResShiftSR
from sr_cli.nets.swin_unet import official_state_dict, shifted_window_mask
from sr_cli.nets.vqgan import convert_ldm_vq_state_dict
from helpers.digests import checkpoint_digest
from helpers.tiny import TINY_VQ_CONFIG, make_resshift_files, make_tiny_swin_unet, make_tiny_vq, vq_state_to_ldm
from helpers.paths import FIXTURES_DIR

runner = CliRunner()

# ResShift (arXiv:2307.12348): sqrt(eta) of the released 15-step v1 schedule.
V1_SQRT_ETAS = [0.02, 0.1172, 0.1763, 0.2336, 0.2916, 0.3510, 0.4124, 0.4759, 0.5417, 0.6099, 0.6807, 0.7540, 0.8300,
                0.9086, 0.99]


def test_schedule_matches_the_released_v1_values():
    s = ResShiftSchedule()
    assert np.allclose(s.sqrt_etas, V1_SQRT_ETAS, atol=5e-5)
    assert s.sqrt_etas.dtype == np.float64
    k, m, j = s.deterministic_coefficients()
    assert np.allclose(k + m + j, 1.0, atol=1e-12)
    eta, prev = s.etas, s.etas_prev
    assert np.allclose(m[1:], np.sqrt(eta[:-1] / eta[1:]))
    assert np.allclose(j[1:], eta[:-1] - np.sqrt(eta[:-1] * eta[1:]))
    assert (k[0], m[0], j[0]) == (1.0, 0.0, 0.0)  # the last step returns x0_hat
    # input scaling 1/sqrt(eta kappa^2 + 1) at T-1: 1/sqrt(0.99^2 * 4 + 1)
    assert s.input_scale()[-1] == pytest.approx(1 / np.sqrt(0.99 ** 2 * 4 + 1))


def test_deterministic_step_is_invertible():
    model = ResShiftSR(make_tiny_swin_unet(), make_tiny_vq(), ResShiftSchedule())
    g = torch.Generator().manual_seed(0)
    x0, x_t, y = (torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for t in range(1, 15):
        x_prev = model.deterministic_step(x0.float(), x_t.float(), y.float(), t)
        back = model.deterministic_inverse_step(x0.float(), x_prev, y.float(), t)
        assert torch.allclose(back, x_t.float(), atol=1e-4), t
        # and the forward step equals the formula with float64 coefficients
        k, m, j = ResShiftSchedule().deterministic_coefficients()
        assert torch.allclose(x_prev.double(), k[t] * x0 + m[t] * x_t + j[t] * y, atol=1e-5)


def test_shifted_window_mask_reproduces_the_authors_labels():
    # Independent derivation of what the authors' code computes: labels are written along the height
    # axis only (NCHW indexed as NHWC) and flattened transposed, so the token at (a, b) of window (wi, wj)
    # carries the row label of image row wi*ws + b.
    h = w = 8
    ws, shift = 4, 2

    def row_label(r):
        return 6 if r < h - ws else (7 if r < h - shift else 8)

    mask = shifted_window_mask(h, w, ws, shift)
    assert mask.shape == (4, 16, 16)
    for win in range(4):
        wi = win // (w // ws)
        labels = [row_label(wi * ws + (p % ws)) for p in range(ws * ws)]
        expected = torch.tensor([[0.0 if a == b else -100.0 for b in labels] for a in labels])
        assert torch.equal(mask[win], expected)


@pytest.mark.parametrize("layout", ["flat", "state_dict", "module"])
def test_official_layouts_load_and_round_trip(tmp_path, layout):
    unet, vq = make_tiny_swin_unet(), make_tiny_vq()
    denoiser, ae = make_resshift_files(tmp_path, layout, unet, vq)
    ckpt = read_resshift(denoiser, ae)
    model = ResShiftSR.from_checkpoint(ckpt)
    ref = unet.state_dict()
    got = model.unet.state_dict()
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    assert all(torch.equal(model.vq.state_dict()[k], v) for k, v in vq.state_dict().items())
    # the authors' layout is reproduced exactly, buffers (attn_mask, relative_position_index) included
    saved = torch.load(denoiser, weights_only=True)
    saved = saved["state_dict"] if layout == "state_dict" else saved
    prefix = "module." if layout == "module" else ""
    again = official_state_dict(model.unet, prefix=prefix)
    assert set(again) == set(saved) and all(torch.equal(again[k], saved[k]) for k in saved)
    assert any(k.endswith("attn_mask") for k in saved) and any(k.endswith("relative_position_index") for k in saved)


def test_vq_key_conversion_round_trips():
    vq = make_tiny_vq()
    ldm = vq_state_to_ldm(vq.state_dict())
    assert "encoder.down.0.block.0.conv1.weight" in ldm and "decoder.up.2.upsample.conv.weight" in ldm
    back = convert_ldm_vq_state_dict({"module." + k: v for k, v in ldm.items()}, TINY_VQ_CONFIG)
    assert set(back) == set(vq.state_dict())
    assert all(torch.equal(back[k], v) for k, v in vq.state_dict().items())


def test_refuses_pickled_code_and_swapped_files(tmp_path):
    from sr_cli.errors import CheckpointFormatError

    denoiser, ae = make_resshift_files(tmp_path)
    with pytest.raises(CheckpointFormatError, match="autoencoder, not the denoiser"):
        read_resshift(ae, ae)
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "f": Path("x")}, evil)  # a non-tensor object
    with pytest.raises(CheckpointFormatError, match="refused|not a tensor"):
        read_resshift(evil, ae)


def independent_one_step(unet, vq, lr, eps):
    """The one-step student by the formula of docs/engine.md (ResShift family), written out with the bare networks."""
    kappa, sqrt_eta_T = 2.0, 0.99
    with torch.no_grad():
        y = vq.encode(F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)).latents
        x_T = y + kappa * sqrt_eta_T * eps
        x0 = unet(x_T / np.sqrt(sqrt_eta_T ** 2 * kappa ** 2 + 1), torch.tensor([14]), lr)
        return vq.decode(x0).sample.clamp(-1, 1)


def test_one_step_student_equals_the_formula(tmp_path):
    unet, vq = make_tiny_swin_unet(), make_tiny_vq()
    model = ResShiftSR.from_checkpoint(read_resshift(*make_resshift_files(tmp_path, "flat", unet, vq)))
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(1, 3, 16, 24, generator=g) * 2 - 1  # multiples of the tiny net's 8: no padding
    eps = torch.randn(1, 3, 16, 24, generator=g)
    with torch.no_grad():
        ours = model.sample(torch.cat([lr, eps], 1), "one-step")
    ref = independent_one_step(unet, vq, lr, eps)
    assert ours.shape == (1, 3, 64, 96)
    assert torch.allclose(ours, ref, atol=1e-5)
    # the multi-step samplers differ from it, and the deterministic one is repeatable
    with torch.no_grad():
        det1 = model.sample(torch.cat([lr, eps], 1), "deterministic")
        det2 = model.sample(torch.cat([lr, eps], 1), "deterministic")
    assert torch.equal(det1, det2) and not torch.allclose(det1, ours, atol=1e-3)


@pytest.fixture()
def sinsr_cached(hf_home, tmp_path) -> tuple[Path, Path]:
    """SinSR's two files where `srx models download sinsr` puts them (the srx cache)."""
    from sr_cli.models import hub
    from sr_cli.models.registry import get_spec

    denoiser, ae = make_resshift_files(tmp_path / "files", "module")
    dl = hub.cache_root() / "downloads" / "sinsr"
    dl.mkdir(parents=True)
    shutil.copy(denoiser, dl / "SinSR_v1.pth")
    ae_dest = hub.manual_path(hub.autoencoder_spec(get_spec("sinsr")))
    ae_dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ae, ae_dest)
    return dl / "SinSR_v1.pth", ae_dest


def test_upscale_sinsr_end_to_end(sinsr_cached, tmp_path):
    from sr_cli import load_model
    from sr_cli.engine.pipeline import UpscaleOptions, pil_to_tensor

    rng = np.random.default_rng(0)
    img = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(img)
    out_dir = tmp_path / "out"
    r = runner.invoke(app, ["upscale", str(img), "--model", "sinsr", "-o", str(out_dir), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = Image.open(out_dir / "in_srx.png")
    assert out.size == (120, 80)

    # the command's result = the student formula on the whole image, padded as the authors' sampler does:
    # LR reflect-padded to the network's multiple (8 here), eps ~ N(0, 1) from seed 0 drawn over the padded
    # size (their randn_like of the padded latent: fresh noise in the padding, not a mirror of the image's)
    model = load_model("sinsr", device="cpu")
    lr = pil_to_tensor(Image.open(img))
    padded = F.pad(lr * 2 - 1, (0, 2, 0, 4), mode="reflect")  # 20x30 -> 24x32
    eps = torch.randn((1, 3, 24, 32), generator=torch.Generator().manual_seed(0))
    ref = independent_one_step(model.net.unet, model.net.vq, padded, eps)[:, :, :80, :120]
    got = torch.from_numpy(np.asarray(out, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    assert (got - (ref + 1) / 2).abs().max() <= 1 / 255 + 1e-4

    # tiled (LR tiles of 8 px, overlap 2 px): same size, finite, close to the untiled result away from seams
    tiled = model.upscale_tensor(lr, UpscaleOptions(tile=32, overlap=8))
    assert tiled.shape == (1, 3, 80, 120) and torch.isfinite(tiled).all()
    # the multi-step samplers run through the same options
    det = model.upscale_tensor(lr, UpscaleOptions(sampler="deterministic", tile=0))
    assert det.shape == (1, 3, 80, 120)


def test_sampler_option_is_checked(sinsr_cached, tmp_path):
    img = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(img)
    r = runner.invoke(app, ["upscale", str(img), "--model", "sinsr", "--sampler", "ddim", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "--sampler must be one of" in r.output
    assert not (tmp_path / "o" / "in_srx.png").exists()


def test_models_import_hf_diff_checks_the_layout(hf_home, tmp_path):
    from sr_cli.models import hub
    from sr_cli.models.registry import get_spec

    denoiser, ae = make_resshift_files(tmp_path / "f", "state_dict")
    r = runner.invoke(app, ["models", "import", "hf-diff", str(ae)])  # the autoencoder is not the model's file
    assert r.exit_code != 0 and "not a ResShift denoiser" in r.output
    assert not hub.manual_path(get_spec("hf-diff")).exists()
    r = runner.invoke(app, ["models", "import", "hf-diff", str(denoiser)])
    assert r.exit_code == 0, r.output
    assert hub.manual_path(get_spec("hf-diff")).read_bytes() == denoiser.read_bytes()


def test_models_info_shows_non_commercial_licenses(hf_home):
    for name, needle in (("resshift", "S-Lab"), ("sinsr", "CC BY-NC-SA"), ("hf-diff", "non-commercial")):
        r = runner.invoke(app, ["models", "info", name], terminal_width=300)
        assert r.exit_code == 0, r.output
        assert needle in r.output and "non-commercial" in r.output.lower()
        assert "autoencoder_vq_f4.pth" in r.output


# ----------------------------------------------------------------------------- real weights / GPU (skipped here)


def _real_model(name):
    from sr_cli import load_model
    from sr_cli.errors import SrxError

    try:
        return load_model(name, device="auto", download=False)
    except SrxError as e:
        pytest.skip(f"{name} weights not in the local cache ({e})")


@pytest.mark.real_weights
@pytest.mark.parametrize("name", ["sinsr", "resshift"])
def test_real_weights_load_with_the_v1_architecture_and_upscale(name):
    from importlib import resources

    from sr_cli.engine.pipeline import UpscaleOptions, pil_to_tensor
    from sr_cli.nets.swin_unet import SwinUNetConfig

    model = _real_model(name)
    assert model.net.unet.config == SwinUNetConfig()  # 118.6M parameters, read off the published file
    assert sum(p.numel() for p in model.net.unet.parameters()) == pytest.approx(118.6e6, rel=1e-3)
    lr = pil_to_tensor(Image.open(resources.files("sr_cli").joinpath("samples", "astronaut_lr.png")).convert("RGB"))
    sr = model.upscale_tensor(lr, UpscaleOptions(sampler="one-step" if name == "sinsr" else "deterministic"))
    assert sr.shape == (1, 3, 512, 512)
    down = F.interpolate(sr, scale_factor=0.25, mode="bicubic", antialias=True)
    psnr = 10 * torch.log10(1 / F.mse_loss(down.clamp(0, 1), lr))
    assert psnr > 25  # the SR result is consistent with its input at LR scale


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_gpu_matches_fp32(tmp_path, dtype):
    model = ResShiftSR.from_checkpoint(read_resshift(*make_resshift_files(tmp_path)))
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.randn(2, 3, 32, 32, generator=g)], 1)
    with torch.no_grad():
        ref = model.sample(x, "one-step")
        model.place(torch.device("cuda"), dtype)
        half = model.sample(x.cuda(), "one-step").cpu()
    assert torch.isfinite(half).all() and (half - ref).abs().mean() < 0.02


def test_the_three_models_share_one_autoencoder_copy(hf_home):
    from sr_cli.models import hub
    from sr_cli.models.registry import get_spec

    paths = {hub.manual_path(hub.autoencoder_spec(get_spec(n))) for n in ("resshift", "sinsr", "hf-diff")}
    assert len(paths) == 1 and next(iter(paths)).name == "autoencoder_vq_f4.pth"
    assert hub.manual_path(get_spec("sinsr")).name == "SinSR_v1.pth"


def test_evaluate_sinsr_end_to_end(sinsr_cached, tmp_path):
    import json

    from helpers.datasets import make_pairs

    data = make_pairs(tmp_path / "set", n=2, hr_size=(64, 48))
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "sinsr", "--metrics", "psnr,ssim",
                            "--baseline", "bicubic", "--save-images", str(tmp_path / "sr"), "--json-file", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    model = doc["systems"][0]
    assert model["model_runs"] == 2 and model["images_scored"] == 2
    assert np.isfinite(model["mean"]["psnr"]) and 0 < model["mean"]["ssim"] <= 1
    assert sorted(p.name for p in (tmp_path / "sr").rglob("*.png")) == ["img0.png", "img1.png"]  # SR images saved
    # the saved SR image is the engine's output for the LR image (same seed-0 prior noise)
    from sr_cli import load_model
    from sr_cli.engine.pipeline import pil_to_tensor, tensor_to_pil

    model_obj = load_model("sinsr", device="cpu")
    ref = np.asarray(tensor_to_pil(model_obj.upscale_tensor(pil_to_tensor(Image.open(data / "LR" / "img0.png").convert("RGB")))))
    saved = list((tmp_path / "sr").rglob("img0.png"))
    assert len(saved) == 1 and np.array_equal(np.asarray(Image.open(saved[0]).convert("RGB")), ref)


def test_sinsr_one_step_equals_the_authors_code_end_to_end(sinsr_cached, tmp_path):
    """`srx upscale --model sinsr` against SinSR's own code (its UNet, autoencoder, diffusion and one-step
    sampling, recorded by tests/fixtures/authors_parity/make_resshift_fixtures.py) on the tiny checkpoints:
    the same padding, the same prior noise (fresh in the padded border), the same pixels."""
    import json

    from sr_cli import load_model
    from sr_cli.engine.pipeline import UpscaleOptions, pil_to_uint8

    fixtures = FIXTURES_DIR / "authors_parity"
    meta = json.loads((fixtures / "resshift_meta.json").read_text())
    flat, ae = make_resshift_files(tmp_path / "flat")
    assert (checkpoint_digest(flat), checkpoint_digest(ae)) == (meta["denoiser"], meta["autoencoder"]), \
        "tests/helpers/tiny.py's ResShift checkpoints changed: re-run make_resshift_fixtures.py"

    r = runner.invoke(app, ["upscale", str(fixtures / meta["lr"]), "--model", "sinsr", "--seed", str(meta["seed"]),
                            "-o", str(tmp_path / "out"), "--device", "cpu", "--dtype", "fp32"])
    assert r.exit_code == 0, r.output
    ours = np.asarray(Image.open(tmp_path / "out" / "resshift_lr_srx.png")).astype(np.int16)
    theirs = np.asarray(Image.open(fixtures / "sinsr_one_step.png")).astype(np.int16)
    assert ours.shape == theirs.shape == (88, 120, 3)
    diff = np.abs(ours - theirs)
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01, (diff.max(), np.mean(diff > 0))

    model = load_model("sinsr", device="cpu", dtype="fp32")
    lr = pil_to_uint8(Image.open(fixtures / meta["lr"]))
    out = model.upscale_tensor(lr, UpscaleOptions(seed=meta["seed"]))[0]
    ref = torch.from_numpy(np.load(fixtures / "sinsr_one_step.npy").astype(np.float32) / 65535)
    assert (out - ref).abs().max() * 255 < 0.05, (out - ref).abs().max() * 255


def test_padded_tile_gets_fresh_prior_noise(tmp_path):
    """A tile whose sides are not multiples of the network's (here 8) is reflect-padded, but its prior noise in
    the padding is drawn fresh from the sampler's generator (the authors' randn_like of the padded latent),
    not mirrored from the tile's own noise."""
    unet, vq = make_tiny_swin_unet(), make_tiny_vq()
    model = ResShiftSR.from_checkpoint(read_resshift(*make_resshift_files(tmp_path, "flat", unet, vq)))
    g = torch.Generator().manual_seed(2)
    lr = torch.rand(1, 3, 10, 13, generator=g) * 2 - 1
    eps = torch.randn(1, 3, 10, 13, generator=g)
    with torch.no_grad():
        ours = model.sample(torch.cat([lr, eps], 1), "one-step", torch.Generator().manual_seed(9))
    fresh = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    fresh[:, :, :10, :13] = eps
    padded_lr = F.pad(lr, (0, 3, 0, 6), mode="reflect")
    ref = independent_one_step(unet, vq, padded_lr, fresh)[:, :, :40, :52]
    mirrored = independent_one_step(unet, vq, padded_lr, F.pad(eps, (0, 3, 0, 6), mode="reflect"))[:, :, :40, :52]
    assert ours.shape == (1, 3, 40, 52)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert (ours - mirrored).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["resshift", "sinsr", "hf-diff"])
def test_family_defaults_are_the_authors_chopping(name):
    """512 LR pixels per tile, stride 448 (overlap 64), in the output pixels that --tile/--overlap count."""
    from sr_cli.models.registry import get_spec

    d = get_spec(name).defaults
    assert (d.tile, d.overlap) == (4 * 512, 4 * 64)


def test_only_inputs_larger_than_512_lr_pixels_are_chopped(sinsr_cached):
    from sr_cli import load_model
    from sr_cli.engine.pipeline import UpscaleOptions

    model = load_model("sinsr", device="cpu", dtype="fp32")
    g = torch.Generator().manual_seed(0)
    for width, tiles in ((512, 1), (520, 2)):
        calls = []
        lr = torch.rand(1, 3, 8, width, generator=g)
        out = model.upscale_tensor(lr, UpscaleOptions(), on_tile=lambda done, total: calls.append(total))
        assert out.shape == (1, 3, 32, 4 * width) and calls[-1] == tiles
