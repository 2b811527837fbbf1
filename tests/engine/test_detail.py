"""Models with a detail weight set: the input-softness measure, the auto curve, the per-image weight blend,
`srx models combine`, `--detail`, and the shipped lite / lite-faithful pair."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.data.kernels import gaussian_blur
from sr_cli.data.resize import bicubic_downsample
from sr_cli.engine.detail import DetailCurve, input_softness
from sr_cli.engine.pipeline import UpscaleOptions
from sr_cli.models.loading import load_model
from sr_cli.train.config import resolve_config
from sr_cli.train.loop import export_model
from sr_cli.train.methods import build_method

runner = CliRunner()


def pink_noise_photo(seed: int, size: int = 256) -> torch.Tensor:
    """A (1, 3, size, size) image in [0, 1] with a natural image's 1/f amplitude spectrum."""
    f = (torch.fft.fftfreq(size)[:, None] ** 2 + torch.fft.fftfreq(size)[None] ** 2).sqrt()
    phase = torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed))
    x = torch.fft.ifft2(torch.fft.fft2(phase) / (f + 1 / size)).real
    return ((x - x.mean()) / x.std() * 0.15 + 0.5).clamp(0, 1)[None].float()


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def lr_of(hr: torch.Tensor, blur: float) -> torch.Tensor:
    """The 8-bit x1/4 bicubic LR of ``hr`` after a Gaussian blur of std ``blur`` HR pixels (camera optics)."""
    x = hr if blur == 0 else gaussian_blur(hr, blur, 2 * int(3 * blur) + 1)
    return to_8bit(bicubic_downsample(x, 4))


def test_softness_falls_with_optical_blur_and_separates_clean_from_camera_like_inputs():
    for seed in range(3):
        hr = pink_noise_photo(seed)
        values = [input_softness(lr_of(hr, blur)) for blur in (0, 1, 2, 3)]
        assert values == sorted(values, reverse=True), values
        # A clean bicubic downsampling reads as clean, a blur of 3 HR pixels (camera LR of RealSR/DRealSR:
        # 1.5-2.5) as soft, for the shipped curve (-1.2 .. -0.9).
        assert values[0] > -0.9 and values[3] < -1.2, values


def test_softness_is_none_for_tiny_or_constant_images_and_float_input_reads_as_8bit():
    assert input_softness(torch.full((1, 3, 64, 64), 128, dtype=torch.uint8)) is None
    assert input_softness(torch.randint(0, 255, (1, 3, 20, 300), dtype=torch.uint8)) is None
    lr = lr_of(pink_noise_photo(0), 2)
    assert input_softness(lr.float() / 255) == pytest.approx(input_softness(lr), abs=1e-6)


def test_softness_of_a_large_image_reads_a_bounded_number_of_windows():
    big = torch.zeros(1, 3, 2000, 3000, dtype=torch.uint8)
    small_lr = lr_of(pink_noise_photo(1, 512), 1)  # 128 x 128: one window
    big[:, :, :128, :128] = small_lr
    # A texture in one corner of a flat image: the windows that see it decide (the flat ones add no power).
    assert input_softness(big) == pytest.approx(input_softness(small_lr), abs=0.05)


def test_auto_curve_is_linear_between_its_soft_and_clean_points():
    curve = DetailCurve(soft=-1.2, clean=-0.9, top=0.8)
    assert [curve(s) for s in (-2.0, -1.2, -1.05, -0.9, 0.0)] == pytest.approx([0.8, 0.8, 0.4, 0.0, 0.0])
    assert curve(None) == 0.0  # nothing to judge: no generated detail


# ----------------------------------------------------------------------------- two-set models


def tiny_lite(tmp_path, name: str, seed: int, base: dict | None = None):
    """A tiny lite model directory (the training method's export); with ``base``, its weights plus noise."""
    cfg = resolve_config("lite", None, data=["unused"], output=str(tmp_path / name), resolution=64, batch_size=2,
                         lite_channels=[8, 16, 24], lite_blocks=1)
    method = build_method(cfg, None)
    torch.manual_seed(seed)
    with torch.no_grad():
        if base is not None:
            method.net.unet.load_state_dict(base)
        for p in method.net.unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return export_model(method, tmp_path / name), {k: v.clone() for k, v in method.net.unet.state_dict().items()}


@pytest.fixture()
def pair(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    faithful, weights = tiny_lite(tmp_path, "faithful", 0)
    sharp, sharp_weights = tiny_lite(tmp_path, "sharp", 1, base=weights)
    out = tmp_path / "pair"
    r = runner.invoke(app, ["models", "combine", str(faithful), str(sharp), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out, faithful, sharp, weights, sharp_weights


def run(model, lr, **options):
    return model.upscale_tensor(lr, UpscaleOptions(**options))


def test_detail_zero_runs_the_faithful_set_exactly_and_one_the_sharp_set(pair):
    out, faithful, sharp, _, _ = pair
    model = load_model(str(out), device="cpu", dtype="fp32")
    lr = to_8bit(torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(run(model, lr, detail=0), run(load_model(str(faithful), device="cpu", dtype="fp32"), lr))
    sharp_out = run(load_model(str(sharp), device="cpu", dtype="fp32"), lr)
    assert (run(model, lr, detail=1) - sharp_out).abs().max() < 1e-5
    assert (run(model, lr, detail=0) - sharp_out).abs().max() > 1e-3  # the two sets differ


def test_detail_blends_the_two_sets_in_weight_space(pair, tmp_path):
    out, _, _, weights, sharp_weights = pair
    model = load_model(str(out), device="cpu", dtype="fp32")
    lr = to_8bit(torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(3)))
    ours = run(model, lr, detail=0.3)
    # Independent: a one-set model whose weights are 0.7 * faithful + 0.3 * sharp.
    cfg = resolve_config("lite", None, data=["unused"], output=str(tmp_path / "blend"), lite_channels=[8, 16, 24],
                         lite_blocks=1)
    method = build_method(cfg, None)
    method.net.unet.load_state_dict({k: 0.7 * weights[k] + 0.3 * sharp_weights[k] for k in weights})
    reference = run(load_model(str(export_model(method, tmp_path / "blend")), device="cpu", dtype="fp32"), lr)
    assert (ours - reference).abs().max() < 1e-5
    assert (ours - run(model, lr, detail=0)).abs().max() > 1e-3


def test_auto_detail_follows_the_input_and_is_the_same_for_every_tile(pair):
    out, _, _, _, _ = pair
    model = load_model(str(out), device="cpu", dtype="fp32")
    hr = pink_noise_photo(4, 384)
    clean, soft = lr_of(hr, 0), lr_of(hr, 3)
    run(model, clean)
    assert model.net.detail == 0.0
    run(model, soft)
    assert model.net.detail == 1.0
    middle = lr_of(hr, 2)  # softness about -1.1: between the curve's points
    whole = run(model, middle, tile=0)
    assert 0 < model.net.detail < 1
    tiled = run(model, middle, tile=192, overlap=64)
    assert 0 < model.net.detail < 1
    psnr = 10 * torch.log10(1 / ((tiled - whole) ** 2).mean())
    assert psnr >= 40, float(psnr)
    assert torch.equal(run(model, middle, tile=0, detail=model.net.detail), whole)


def test_combined_model_records_its_curve_and_refuses_a_two_set_model_as_the_sharp_one(pair, tmp_path):
    out, faithful, _, _, _ = pair
    doc = json.loads((out / "srx_model.json").read_text())
    assert doc["defaults"]["detail"] == "auto"
    assert doc["checkpoint"]["net"]["detail"] == {"soft": -1.2, "clean": -0.9, "top": 1.0}
    r = runner.invoke(app, ["models", "combine", str(faithful), str(out), "-o", str(tmp_path / "again")])
    assert r.exit_code == 2 and "holds a detail set already" in r.output
    assert not (tmp_path / "again").exists()
    r = runner.invoke(app, ["models", "combine", str(faithful), str(faithful), "-o", str(out)])
    assert r.exit_code == 2 and "not an empty folder" in r.output
    assert json.loads((out / "srx_model.json").read_text()) == doc  # nothing overwritten


def test_combining_again_from_the_two_set_model_reproduces_its_weights(pair, tmp_path):
    """The shipped lite is `srx models combine lite-faithful SHARP`: lite-faithful (the same file at --detail 0)
    gives its faithful set, so combining again writes the same tensors."""
    from safetensors.torch import load_file

    out, _, sharp, _, _ = pair
    r = runner.invoke(app, ["models", "combine", str(out), str(sharp), "-o", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    first, second = load_file(out / "weights.safetensors"), load_file(tmp_path / "again" / "weights.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_combine_refuses_two_different_networks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    faithful, _ = tiny_lite(tmp_path, "a", 0)
    cfg = resolve_config("lite", None, data=["unused"], output=str(tmp_path / "b"), lite_channels=[8, 16, 32],
                         lite_blocks=1)
    other = export_model(build_method(cfg, None), tmp_path / "b")
    r = runner.invoke(app, ["models", "combine", str(faithful), str(other), "-o", str(tmp_path / "c")])
    assert r.exit_code == 2 and "another architecture" in r.output
    assert not (tmp_path / "c").exists()


def test_combine_refuses_a_model_of_another_family(tmp_path, monkeypatch):
    from helpers.classic import make_model_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    faithful, _ = tiny_lite(tmp_path, "a", 0)
    compact = make_model_file(tmp_path, "compact", 4)
    r = runner.invoke(app, ["models", "combine", str(faithful), str(compact), "-o", str(tmp_path / "c")])
    assert r.exit_code == 2 and "a spandrel model; combine takes two lite models" in r.output, r.output
    assert not (tmp_path / "c").exists()


def test_detail_flag_is_a_usage_error_for_models_without_a_detail_set_and_out_of_range(pair, tmp_path):
    out, faithful, _, _, _ = pair
    img = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    r = runner.invoke(app, ["upscale", str(img), "--model", str(faithful), "--detail", "0.5", "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 2 and "--detail" in r.output and "has none" in r.output
    for bad in ("1.5", "-0.1", "sharp", "nan"):
        r = runner.invoke(app, ["upscale", str(img), "--model", str(out), "--detail", bad, "-o", str(tmp_path / "o.png")])
        assert r.exit_code == 2 and "--detail must be auto or a number in [0, 1]" in r.output, (bad, r.output)
    assert not (tmp_path / "o.png").exists()
    r = runner.invoke(app, ["upscale", str(img), "--model", str(out), "--detail", "0.25", "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 0, r.output


def test_a_detail_default_without_detail_tensors_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    faithful, _ = tiny_lite(tmp_path, "a", 0)
    doc = json.loads((faithful / "srx_model.json").read_text())
    doc["defaults"]["detail"] = "auto"
    (faithful / "srx_model.json").write_text(json.dumps(doc))
    from sr_cli.errors import CheckpointFormatError

    with pytest.raises(CheckpointFormatError, match="no detail set"):
        load_model(str(faithful), device="cpu", dtype="fp32")


def test_training_from_a_two_set_model_starts_from_its_faithful_set_and_exports_one_set(pair, tmp_path):
    out, _, _, weights, _ = pair
    cfg = resolve_config("lite", None, data=["unused"], output=str(tmp_path / "student"), lite_channels=[8, 16, 24],
                         lite_blocks=1, student=str(out))
    method = build_method(cfg, None)
    assert all(torch.equal(method.net.unet.state_dict()[k], weights[k]) for k in weights)
    spec, ckpt = method.export()
    assert spec["defaults"]["detail"] is None and "detail" not in ckpt.net
