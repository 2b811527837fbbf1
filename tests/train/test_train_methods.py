"""Training methods: one class each, their loss weighting, and that training runs the inference engine's network."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sr_cli.errors import UsageError
from sr_cli.train.config import TrainConfig, parse_loss_weights, resolve_config
from sr_cli.train.methods import METHODS, TrainMethod, build_method, method_names


def lite_cfg(tmp_path, **kw):
    values = dict(data=["unused"], output=str(tmp_path / "lite"), resolution=64, batch_size=2, lite_channels=[8, 16, 24],
                  lite_blocks=1, max_steps=1, validate_every=0)
    values.update(kw)
    return resolve_config("lite", None, **values)


def a_batch():
    hq = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return F.interpolate(hq, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1), hq


def test_every_method_is_one_registered_class_with_its_defaults():
    assert list(METHODS) == ["osediff", "hero-sr", "dfosd", "lite", "sinsr", "vpd-sr", "hf-diff"]
    assert len(set(METHODS.values())) == len(METHODS)
    assert all(issubclass(cls, TrainMethod) and cls.name == name for name, cls in METHODS.items())
    assert method_names("train") == ("osediff", "hero-sr", "dfosd", "lite")
    assert method_names("distill") == ("lite", "sinsr", "vpd-sr", "hf-diff")  # lite: from a teacher
    config_fields = {f.name for f in fields(TrainConfig)}
    for cls in METHODS.values():
        assert cls.loss_weights and all(w >= 0 for w in cls.loss_weights.values())
        assert set(cls.defaults) <= config_fields, cls.name  # defaults are TrainConfig fields
        assert not any(k.startswith("w_") for k in config_fields)  # weights live in loss_weights only
    assert resolve_config("dfosd", None).loss_weights == {"mse": 1.0, "ea_dists": 1.0, "adv": 5e-3}


def test_loss_terms_are_unweighted_and_the_base_applies_the_weights(tmp_path):
    cfg = lite_cfg(tmp_path, loss_weights={"l1": 3.0})
    torch.manual_seed(0)
    method = build_method(cfg, None)
    lq, hq = a_batch()
    terms, aux_inputs = method.loss_terms(lq, hq)
    assert list(terms) == ["l1"] and aux_inputs is None
    sr = (method.net(torch.cat([pil_upsample(lq[i : i + 1], 32) for i in range(2)]) * 2 - 1) + 1) / 2
    assert torch.equal(terms["l1"], ((sr - hq) ** 2 + 1e-6).sqrt().mean())  # the plain Charbonnier, no weight
    out = method(lq, hq)
    assert torch.equal(out["l1"], terms["l1"]) and torch.equal(out["total"], 3.0 * terms["l1"])


def pil_upsample(x, size):
    from sr_cli.engine.resize import pil_resize

    return pil_resize(x, size, size)


def test_loss_weights_from_recipes_and_flags(tmp_path):
    assert lite_cfg(tmp_path).loss_weights == {"l1": 1.0, "fft": 0.0, "grad": 0.0, "grid": 0.0, "adv": 0.0}  # the distillation terms off
    old_style = resolve_config(None, {"method": "osediff", "w_lpips": 0.5})  # recipes written before loss_weights
    assert old_style.loss_weights == {"mse": 1.0, "lpips": 0.5, "vsd": 1.0}
    both = resolve_config("osediff", {"loss_weights": {"lpips": 0.5, "vsd": 0.0}}, loss_weights={"lpips": 4.0})
    assert both.loss_weights == {"mse": 1.0, "lpips": 4.0, "vsd": 0.0}  # flags > recipe > method, term by term
    assert parse_loss_weights(["lpips=2", " vsd = 0 "]) == {"lpips": 2.0, "vsd": 0.0}
    with pytest.raises(UsageError, match="--loss-weight td_pal: osediff has no such loss term .*mse, lpips, vsd"):
        resolve_config("osediff", None, loss_weights={"td_pal": 1.0})
    with pytest.raises(UsageError, match="expected NAME=NUMBER"):
        parse_loss_weights(["lpips"])
    with pytest.raises(UsageError, match="w_vsd|vsd"):
        resolve_config(None, {"method": "lite", "w_vsd": 1.0})


def test_train_cli_loss_weight_option(tmp_path):
    from typer.testing import CliRunner

    from sr_cli.cli import app

    r = CliRunner().invoke(app, ["train", "--method", "lite", "--data", str(tmp_path), "-o", str(tmp_path / "o"),
                                 "--loss-weight", "lpips=1"])
    assert r.exit_code == 2 and "--loss-weight lpips: lite has no such loss term (its terms: l1, fft, grad, grid, adv)" in r.output
    r = CliRunner().invoke(app, ["distill", "--data", str(tmp_path), "-o", str(tmp_path / "o"), "--loss-weight", "x"])
    assert r.exit_code == 2 and "expected NAME=NUMBER" in r.output


def test_method_options_are_declared_by_each_method_and_routed_from_flat_names(tmp_path):
    config_fields = {f.name for f in fields(TrainConfig)}
    for cls in METHODS.values():
        own = {f.name for f in fields(cls.Options)}
        assert not own & config_fields, cls.name  # an option lives in one place: the config or the method
    dfosd = resolve_config("dfosd", None)
    assert isinstance(dfosd.options, METHODS["dfosd"].Options)
    assert (dfosd.options.lora_rank, dfosd.options.lora_alpha, dfosd.options.base) == (
        16, 16.0, "stabilityai/stable-diffusion-2-1-base")
    assert resolve_config("hero-sr", None).options.base == "stabilityai/sd-turbo"
    assert resolve_config("hf-diff", None).options.student == "sinsr"
    routed = resolve_config("osediff", {"lora_rank": 8, "lr": 1e-4}, cfg=3.0)
    assert (routed.options.lora_rank, routed.options.cfg, routed.lr) == (8, 3.0, 1e-4)
    assert not hasattr(resolve_config("lite", None), "lora_rank")  # lite has no LoRA
    saved = routed.to_dict()  # flat, as recipes are
    assert saved["lora_rank"] == 8 and "options" not in saved
    assert resolve_config(None, saved) == routed
    with pytest.raises(UsageError, match=r"^--prompt: lite has no such option \(an option of osediff, hero-sr, dfosd\)$"):
        resolve_config("lite", None, prompt="a photo")
    with pytest.raises(UsageError, match=r"^recipe: teacher: osediff has no such option \(an option of lite, sinsr"):
        resolve_config("osediff", {"teacher": "resshift"})
    with pytest.raises(UsageError, match="lora_rank must be >= 1"):
        resolve_config("hero-sr", None, lora_rank=0)
    with pytest.raises(UsageError, match="lite_channels must be positive"):
        resolve_config("lite", {"lite_channels": []})


def test_train_cli_refuses_an_option_of_another_method(tmp_path):
    from typer.testing import CliRunner

    from sr_cli.cli import app

    r = CliRunner().invoke(app, ["train", "--method", "lite", "--data", str(tmp_path), "-o", str(tmp_path / "o"),
                                 "--lora-rank", "8"])
    assert r.exit_code == 2 and "--lora-rank: lite has no such option (an option of osediff, hero-sr, dfosd)" in r.output
    assert not (tmp_path / "o").exists()


def test_sd_generator_is_the_engines_forward_bit_for_bit(tiny_sd, tmp_path):
    """Training's generator runs ``OneStepSD.forward`` itself: VAE shift factor, padding, float64 x0 included."""
    from sr_cli.models.registry import get_spec
    from sr_cli.train.methods.one_step_sd import OneStepSDMethod, upsample_input

    cfg = resolve_config("osediff", None, base=str(tiny_sd), output=str(tmp_path / "o"), timestep=500)
    torch.manual_seed(0)
    method = OneStepSDMethod(cfg, tiny_sd)
    method.net.vae.register_to_config(shift_factor=0.0625)  # as SD3/FLUX-style VAEs: the engine honours it
    lq = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(1))  # x4 = 20 x 28: padded by the engine
    torch.manual_seed(3)
    sr, z0 = method.generate(lq)
    x = upsample_input(lq, 4)
    y = method.net(x, torch.tensor([500.0]), method.prompt_embedding, generator=torch.Generator().manual_seed(3))
    assert sr.shape == (2, 3, 20, 28)
    assert torch.equal(sr, (y + 1) / 2)
    spec = method.model_spec()  # the exported model: the registry's osediff defaults, the training conditions
    assert spec.family == "sd-onestep" and spec.defaults == replace(
        get_spec("osediff").defaults, scale=4, timestep=500, prompt_template="{prompt}", prompt="")
    d = method.net.downscale
    assert z0.dtype == torch.float32 and tuple(z0.shape[-2:]) == (-(-20 // d), -(-28 // d))


def test_exported_lite_model_loads_with_the_familys_defaults_and_validation_is_8bit(tmp_path):
    from sr_cli import load_model
    from sr_cli.engine.pipeline import SRModel, pil_to_uint8, tensor_to_pil
    from sr_cli.models.registry import get_spec
    from sr_cli.train.loop import export_model, validate

    torch.manual_seed(0)
    cfg = lite_cfg(tmp_path)
    method = build_method(cfg, None)
    export_model(method, tmp_path / "lite")
    loaded = load_model(str(tmp_path / "lite"), device="cpu", dtype="fp32")
    assert loaded.spec.family == "lite"
    assert loaded.spec.defaults == replace(get_spec("lite").defaults, scale=4, detail=None)  # one weight set
    assert json.loads((tmp_path / "lite" / "srx_model.json").read_text())["format"] == "srx"

    png = tmp_path / "val.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (13, 11, 3), dtype=np.uint8)).save(png)
    cfg.validation_images = [str(png)]
    written = validate(method, cfg, tmp_path / "run", 1, torch.device("cpu"))
    model = SRModel(method.model_spec(), method.net, torch.device("cpu"), torch.float32)
    with Image.open(png) as im:
        expected = tensor_to_pil(model.upscale_tensor(pil_to_uint8(im.convert("RGB"))))
    assert np.array_equal(np.asarray(Image.open(written[0])), np.asarray(expected))
