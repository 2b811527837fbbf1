"""The lite family: network, engine formula, training method, export, and the embedded default model."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.engine.pipeline import UpscaleOptions
from sr_cli.engine.resize import pil_resize
from sr_cli.nets.lite import LiteUNet
from sr_cli.train.config import resolve_config
from sr_cli.train.loop import export_model, make_optimizers
from sr_cli.train.methods import build_method
from helpers.paths import PACKAGE_DIR

runner = CliRunner()


def tiny_lite_cfg(tmp_path, **kw):
    values = dict(data=["unused"], output=str(tmp_path / "lite"), resolution=64, batch_size=2, lite_channels=[8, 16, 24],
                  lite_blocks=1, max_steps=2, checkpoint_every=1, log_every=1, validate_every=0)
    values.update(kw)
    return resolve_config("lite", None, **values)


def test_unet_starts_as_identity_and_keeps_shape():
    net = LiteUNet(4, (8, 16, 24), 1)
    z = torch.randn(2, 48, 16, 12)
    assert torch.equal(net(z), z)  # zero-initialized output conv: x0 = x_T before training
    assert net.multiple == 16


def test_engine_output_equals_formula(tmp_path):
    from sr_cli import load_model

    torch.manual_seed(0)
    method = build_method(tiny_lite_cfg(tmp_path), None)
    torch.nn.init.normal_(method.net.unet.conv_out.weight, std=0.05)
    model_dir = export_model(method, tmp_path / "m")
    model = load_model(str(model_dir), device="cpu", dtype="fp32")
    lr = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(1))
    ours = model.upscale_tensor(lr, UpscaleOptions(tile=0))
    # Independent: PIL-bicubic x4, to [-1,1], reflect-pad to 16, pixel-unshuffle, UNet, pixel-shuffle, crop.
    x = pil_resize(lr, 36, 44) * 2 - 1
    xp = F.pad(x, (0, 4, 0, 12), mode="reflect")
    with torch.no_grad():
        y = F.pixel_shuffle(method.net.unet(F.pixel_unshuffle(xp, 4)), 4)[:, :, :36, :44].clamp(-1, 1)
    assert ours.shape == (1, 3, 36, 44)
    assert torch.allclose(ours, (y + 1) / 2, atol=1e-5)
    assert (ours - (x + 1) / 2).abs().max() > 1e-3  # not just the bicubic input


def test_lite_learns_and_exports(tmp_path):
    cfg = tiny_lite_cfg(tmp_path, lr=1e-3)
    method = build_method(cfg, None)
    opt, aux = make_optimizers(method, cfg)
    assert aux is None
    hq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    hq = F.interpolate(F.avg_pool2d(hq, 2), scale_factor=2, mode="nearest")  # detail bicubic cannot restore
    lq = F.interpolate(hq, scale_factor=0.25, mode="bicubic", antialias=True)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        terms = method(lq, hq)
        assert torch.isfinite(terms["l1"])
        terms["total"].backward()
        assert all(p.grad is not None for p in method.net.unet.parameters())
        opt.step()
        losses.append(terms["total"].item())
    assert losses[-1] < losses[0]
    spec, ckpt = method.export()
    assert spec["family"] == "lite" and ckpt.net == {"latent_factor": 4, "channels": [8, 16, 24], "blocks": 1}


def test_train_cli_lite_end_to_end(tmp_path):
    from helpers.tiny import make_hq_folder

    data = make_hq_folder(tmp_path / "hq", n=3, size=96)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--method", "lite", "--data", str(data), "--output", str(out), "--resolution",
                            "64", "--batch-size", "2", "--max-steps", "2", "--checkpoint-every", "2", "--log-every", "1"])
    assert r.exit_code == 0, r.output
    assert (out / "srx_model.json").is_file() and (out / "checkpoints" / "step-000002" / "state.json").is_file()
    r = runner.invoke(app, ["upscale", str(data / "hq0.png"), "--model", str(out), "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 0, r.output


EMBEDDED = PACKAGE_DIR / "weights" / "lite" / "weights.safetensors"


@pytest.mark.skipif(not EMBEDDED.exists(), reason="embedded lite weights not built yet")
def test_embedded_default_model(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert EMBEDDED.stat().st_size <= 20 * 1024 * 1024
    img = tmp_path / "x.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(img)
    r = runner.invoke(app, ["upscale", str(img), "-o", str(tmp_path / "y.png")])  # no --model: lite
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "y.png").size == (96, 80)
    r = runner.invoke(app, ["models", "list"], terminal_width=200)
    assert "lite" in r.output and "embedded" in r.output


def test_upscale_compile_gives_the_same_image(tmp_path):
    """`--compile` (torch.compile of the denoiser, inductor on the CPU) changes speed, not the result."""
    import shutil

    import numpy as np
    from PIL import Image

    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("torch.compile on the CPU needs a C compiler")
    img = tmp_path / "x.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8)).save(img)
    outs = []
    for extra in ([], ["--compile"]):
        dest = tmp_path / f"y{len(extra)}.png"
        r = runner.invoke(app, ["upscale", str(img), "-o", str(dest), *extra])
        assert r.exit_code == 0, r.output
        outs.append(np.asarray(Image.open(dest)).astype(int))
    assert outs[0].shape == (96, 80, 3)
    assert np.abs(outs[0] - outs[1]).max() <= 1  # float reassociation may move a value across a rounding edge


FLAT_MAX_LEVELS = 2  # inside a flat block, the shipped models stay within this many 8-bit levels of bicubic


def _shipped(name):
    from sr_cli.models.loading import load_model

    return load_model(name, device="cpu", dtype="fp32")


def _flat_block_image():
    """A smooth gradient with a flat block in it: nothing for a model to sharpen or invent inside the block."""

    ramp = np.tile(np.linspace(40, 200, 64, dtype=np.float32), (64, 1))
    rgb = np.stack([ramp, ramp * 0.8 + 20, np.full_like(ramp, 128)], -1)
    rgb[16:48, 16:48] = (90, 140, 60)
    return torch.from_numpy(rgb.round() / 255).permute(2, 0, 1)[None].float()


def test_shipped_lite_leaves_flat_areas_flat():
    lr = _flat_block_image()
    sr = _shipped("lite").upscale_tensor(lr)
    bicubic = pil_resize(lr, 256, 256)
    inside = ((sr - bicubic).abs() * 255)[:, :, 96:160, 96:160]  # the block (64..192), 32 px from its edges
    assert inside.max() <= FLAT_MAX_LEVELS, float(inside.max())


def test_shipped_lite_tiles_without_seams():
    x = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(3))
    model = _shipped("lite")
    for detail in ("auto", 1.0):  # the faithful set (noise reads as clean) and the sharp one
        tiled = model.upscale_tensor(x, UpscaleOptions(tile=192, overlap=64, detail=detail))
        whole = model.upscale_tensor(x, UpscaleOptions(tile=0, detail=detail))
        psnr = 10 * torch.log10(1 / ((tiled - whole) ** 2).mean())
        assert psnr >= 40, (detail, float(psnr))


def test_shipped_lite_keeps_small_dark_text_on_white():
    """Earlier weights, trained on photographs only, washed small dark strokes out (PSNR-Y 4 dB under bicubic)."""
    from PIL import Image, ImageDraw, ImageFont

    hr = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(hr)
    font = ImageFont.load_default(size=44)
    for i, line in enumerate(("Super-resolution", "srx lite 0123", "THE QUICK fox")):
        draw.text((6, 20 + i * 70), line, fill="black", font=font)
    to_tensor = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    lr = hr.resize((64, 64), Image.Resampling.BICUBIC)
    truth = to_tensor(hr)
    sr = (_shipped("lite").upscale_tensor(to_tensor(lr)) * 255).round() / 255
    bicubic = to_tensor(lr.resize((256, 256), Image.Resampling.BICUBIC))
    weights = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255

    def psnr_y(x):
        return float(10 * torch.log10(1 / ((((x - truth) * weights).sum(1)) ** 2).mean()))

    assert psnr_y(sr) > psnr_y(bicubic) + 2, (psnr_y(sr), psnr_y(bicubic))


def _gradient_energy(x):
    y = x.mean(1)
    return float((y[:, 1:, :] - y[:, :-1, :]).abs().mean() + (y[:, :, 1:] - y[:, :, :-1]).abs().mean())


def test_shipped_lite_sharpens_a_soft_photo_and_leaves_a_clean_one_to_its_faithful_set():
    """The default model blends its sharp set in by the input's softness: the shipped sample (a clean bicubic
    downsampling) runs the faithful set exactly (lite-faithful), the same photo softened like camera optics gets
    the sharp set, and more edge energy than lite-faithful gives it."""
    from PIL import Image

    from sr_cli.data.kernels import gaussian_blur

    sample = np.asarray(Image.open(PACKAGE_DIR / "samples" / "astronaut_lr.png").convert("RGB"))
    clean = torch.from_numpy(sample).permute(2, 0, 1)[None].contiguous()
    lite, faithful = _shipped("lite"), _shipped("lite-faithful")
    assert torch.equal(lite.upscale_tensor(clean), faithful.upscale_tensor(clean))
    assert lite.net.detail == 0.0
    soft = (gaussian_blur(clean.float() / 255, 0.7, 5) * 255).round().to(torch.uint8)
    sharp = lite.upscale_tensor(soft)
    assert lite.net.detail == 1.0
    assert _gradient_energy(sharp) > 1.5 * _gradient_energy(faithful.upscale_tensor(soft))


def test_lite_faithful_is_lite_at_detail_zero():
    x = (torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8)
    lite = _shipped("lite")
    assert torch.equal(_shipped("lite-faithful").upscale_tensor(x), lite.upscale_tensor(x, UpscaleOptions(detail=0)))
    assert not torch.equal(lite.upscale_tensor(x, UpscaleOptions(detail=1)), lite.upscale_tensor(x, UpscaleOptions(detail=0)))
