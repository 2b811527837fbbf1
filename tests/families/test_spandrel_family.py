"""Classic SR models through spandrel: a model file (or a registry model) runs through srx's own engine, tiled
and blended, and gives what spandrel's plain forward gives; files srx cannot or must not run are one-line errors."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.classic import BUILDERS, make_model_file, save_model, spandrel_forward
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.engine.pipeline import UpscaleOptions
from sr_cli.engine.resize import pil_resize
from sr_cli.errors import CheckpointFormatError
from sr_cli.families import FAMILIES
from sr_cli.models.loading import load_model
from sr_cli.models.registry import get_spec

runner = CliRunner()
CPU = torch.device("cpu")


def _lr(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth 8-bit RGB image with some noise (1, 3, h, w) uint8: neither flat nor pure noise."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((h // 6 + 1, w // 6 + 1, 3)) * 255).astype(np.uint8))
    arr = np.asarray(base.resize((w, h), Image.Resampling.BICUBIC)).astype(np.float64)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def _levels(x: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] as the 8-bit levels a PNG stores."""
    return (x.clamp(0, 1) * 255).round().to(torch.int16)


@pytest.mark.parametrize("arch,scale,suffix,size", [
    ("rrdbnet", 4, ".pth", (36, 52)),
    ("rrdbnet", 4, ".safetensors", (36, 52)),
    ("compact", 4, ".pth", (36, 52)),
    ("compact", 2, ".safetensors", (36, 52)),
    ("compact", 1, ".pth", (36, 52)),
    # SwinIR attends within 8-pixel windows: tiles that start on the untiled image's window grid see the same
    # windows (spandrel discourages tiling it; srx's default tile, 512 LR pixels, leaves most images whole).
    ("swinir", 2, ".pth", (48, 64)),
])
def test_tiled_output_equals_spandrels_plain_forward(hf_home, tmp_path, arch, scale, suffix, size):
    path = make_model_file(tmp_path, arch, scale, suffix)
    model = load_model(str(path), device="cpu", dtype="fp32")
    assert model.spec.family == "spandrel" and model.native_scale == scale  # x1/x2 models keep their scale
    h, w = size
    lr = _lr(h, w)
    tiles = []
    # 32-pixel LR tiles overlapping by 24 (given in output pixels, as every --tile): many tiles, blended.
    out = model.upscale_tensor(lr, UpscaleOptions(tile=32 * scale, overlap=24 * scale),
                               on_tile=lambda done, total: tiles.append(total))
    ref = spandrel_forward(path, lr.float() / 255)
    assert tiles and tiles[-1] >= 8
    assert out.shape == ref.shape == (1, 3, h * scale, w * scale)
    assert (_levels(out) - _levels(ref)).abs().max() <= 1
    # Not a trivial network: far from the bicubic upsample, and not clamped to black or white.
    assert (out - pil_resize(lr.float() / 255, h * scale, w * scale)).abs().mean() > 0.01
    assert ((out == 0) | (out == 1)).float().mean() < 0.1


def test_a_model_file_upscales_through_the_cli_with_alpha(hf_home, tmp_path):
    path = make_model_file(tmp_path, "compact", 2, ".safetensors")
    lr = _lr(40, 56)
    rgba = np.concatenate([lr[0].permute(1, 2, 0).numpy(), np.full((40, 56, 1), 200, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "photo.png")
    r = runner.invoke(app, ["upscale", str(tmp_path / "photo.png"), "--model", str(path), "-o", str(tmp_path / "out"),
                            "--tile", "64", "--overlap", "48"])
    assert r.exit_code == 0, r.output
    (written,) = (tmp_path / "out").iterdir()
    with Image.open(written) as im:
        assert im.mode == "RGBA" and im.size == (112, 80)
        arr = np.asarray(im)
    ref = _levels(spandrel_forward(path, lr.float() / 255))[0].permute(1, 2, 0).numpy()
    assert np.abs(arr[..., :3].astype(int) - ref).max() <= 1
    assert np.abs(arr[..., 3].astype(int) - 200).max() <= 1


def test_srx_bench_times_a_model_files_network(hf_home, tmp_path):
    path = make_model_file(tmp_path, "compact", 2, ".safetensors")
    r = runner.invoke(app, ["bench", "--model", str(path), "--size", "32", "--device", "cpu", "--repeat", "1",
                            "--warmup", "0", "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["model"] == str(path) and doc["output"] == [64, 64] and doc["stages_s"]["network"] > 0
    assert doc["flops_per_tile"] > 0  # one forward of the network on one LR tile


def test_a_state_dict_no_architecture_matches_is_a_one_line_usage_error(hf_home, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    state = {"encoder.weight": torch.zeros(4, 4)}
    for model in (save_model(tmp_path / "mystery.pth", state, "params"), save_model(tmp_path / "mystery.safetensors", state)):
        r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "--model", str(model), "-o", str(tmp_path / "o")])
        assert r.exit_code == 2, r.output
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith(f"error: {model}: no architecture matches this state dict (keys encoder.weight, ...)")
        assert not (tmp_path / "o").exists()
    r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "--model", str(tmp_path / "missing.pth")])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: {tmp_path / 'missing.pth'}: model file not found"


def test_a_model_that_is_not_rgb_to_rgb_is_refused_naming_the_file(hf_home, tmp_path):
    from spandrel.architectures.Compact import Compact

    gray = save_model(tmp_path / "1x_gray.pth", Compact(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2,
                                                         upscale=2).state_dict(), "params")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "--model", str(gray), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == (f"error: {gray}: a RealESRGAN Compact model with 1 input and 1 output channels; "
                                f"srx runs RGB models (3 -> 3)")


class _Payload:
    """Unpickling this runs code: it creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_a_pickle_with_code_is_refused(hf_home, tmp_path):
    marker = tmp_path / "code-ran"
    state = BUILDERS["compact"](scale=2)
    torch.save({"params": state, "extra": _Payload(marker)}, tmp_path / "2x_trojan.pth")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "--model", str(tmp_path / "2x_trojan.pth"),
                            "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / '2x_trojan.pth'}: refused to load")
    assert not marker.exists()


def test_registry_models_are_the_authors_files_with_their_license(hf_home):
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    rows = {line.split("\t")[0]: line.split("\t") for line in r.stdout.splitlines()}
    for name in ("realesrgan-x4plus", "realesr-general-x4v3"):
        assert rows[name][1] == "spandrel" and rows[name][-1].startswith("BSD-3-Clause")
        spec = get_spec(name)
        assert spec.weights.url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/download/")
        assert len(spec.weights.sha256) == 64 and spec.defaults.scale == 4
    r = runner.invoke(app, ["models", "info", "realesrgan-x4plus"])
    assert r.exit_code == 0, r.output
    assert "sha256: 4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1" in r.stdout
    assert "license: BSD-3-Clause" in r.stdout and "RealESRGAN_x4plus.pth" in r.stdout


def test_a_registry_model_builds_from_its_published_layout_and_refuses_another_scale(tmp_path):
    family = FAMILIES["spandrel"]
    spec = get_spec("realesrgan-x4plus")
    x4 = make_model_file(tmp_path, "rrdbnet", 4)
    ckpt = family.convert(spec, [x4])
    assert ckpt.net == {"architecture": "ESRGAN", "scale": 4, "tiling": "supported"}
    net = family.build(spec, ckpt, download=False, merge_lora=True).place(CPU, torch.float32)
    x = torch.rand(1, 3, 12, 16)
    assert torch.equal(net(x), spandrel_forward(x4, x)) and set(family.stages(net)) == {"network"}
    x2 = make_model_file(tmp_path, "compact", 2)
    with pytest.raises(CheckpointFormatError, match=r"a x2 RealESRGAN Compact model, but realesrgan-x4plus is x4"):
        family.check_import(spec, x2)
    with pytest.raises(CheckpointFormatError, match="no architecture matches"):
        family.check_import(spec, save_model(tmp_path / "x.pth", {"a.weight": torch.zeros(2)}))


def test_a_half_precision_the_architecture_lacks_runs_in_fp32(tmp_path):
    """spandrel marks SwinIR as not running in fp16: srx places it in fp32 instead of failing."""
    family = FAMILIES["spandrel"]
    x4 = get_spec("realesrgan-x4plus")
    spec = replace(x4, defaults=replace(x4.defaults, scale=2))
    files = {arch: make_model_file(tmp_path, arch, 2) for arch in ("swinir", "compact")}
    with warnings.catch_warnings(record=True) as caught:  # and building it tells users nothing meant for developers
        warnings.simplefilter("always")
        nets = {arch: family.build(spec, family.convert(spec, [f]), download=False, merge_lora=True)
                for arch, f in files.items()}
    assert [str(w.message) for w in caught] == []
    assert nets["swinir"].place(CPU, torch.float16).dtype == torch.float32
    assert next(nets["swinir"].parameters()).dtype == torch.float32
    assert nets["compact"].place(CPU, torch.float16).dtype == torch.float16
    assert next(nets["compact"].parameters()).dtype == torch.float16
