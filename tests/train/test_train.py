"""`srx train` on tiny models: losses, gradients, learning, checkpoints, resume, export, multi-process."""

import json
import os
import shutil
import subprocess

import pytest
import torch
from sr_cli.errors import UsageError
from helpers.tiny import make_hq_folder, make_random_vgg16_cache, make_tiny_clip
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.train.config import resolve_config
from sr_cli.train.data import CropDataset, StepBatchSampler
from sr_cli.train.methods import build_method
from helpers.paths import REPO_ROOT
from helpers.training import aux_gradients, loss_goes_down

pytest.importorskip("pyiqa", reason="training losses need the pyiqa extra")
runner = CliRunner()


@pytest.fixture(scope="session")
def hq_dir(tmp_path_factory):
    return make_hq_folder(tmp_path_factory.mktemp("hq"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def vgg_cache(tmp_path_factory):
    home = tmp_path_factory.getbasetemp() / "torch_home"
    make_random_vgg16_cache(home)
    return home


@pytest.fixture(autouse=True)
def torch_home(vgg_cache, monkeypatch):
    """pyiqa's LPIPS/DISTS trunks load torchvision's VGG16 weights: a random copy in a local torch cache."""
    monkeypatch.setenv("TORCH_HOME", str(vgg_cache))
    return vgg_cache


def tiny_cfg(method, tiny_sd, hq_dir, tmp_path, **kw):
    values = dict(data=[str(hq_dir)], output=str(tmp_path / "run"), base=str(tiny_sd), resolution=64,
                  batch_size=2, max_steps=2, perceptual_pretrained=False, lpips_net="vgg", checkpoint_every=1,
                  log_every=1, validate_every=0, seed=1)
    values.update(kw)
    return resolve_config(method, None, **values)


def batch(hq_dir):
    ds = CropDataset([str(hq_dir)], 64, 4)
    hq = torch.stack([ds[(0, 1)]["hq"], ds[(1, 2)]["hq"]])
    lq = torch.nn.functional.interpolate(hq, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    return lq, hq


def _grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


def check_method(method, lq, hq, expected_terms):
    terms = method(lq, hq)
    assert set(expected_terms) <= set(terms)
    for k in expected_terms:
        assert torch.isfinite(terms[k]).all(), k
    terms["total"].backward()
    g = _grads(method.net)
    lora = [n for n in g if "lora_" in n]
    assert lora and all(g[n] is not None for n in lora)  # every LoRA weight learns
    assert all(g[n] is None for n in g if n.startswith("vae.decoder."))  # frozen decoder
    base_unet = [n for n in g if n.startswith("unet.") and "lora_" not in n and "conv_in" not in n]
    assert base_unet and all(g[n] is None for n in base_unet)  # frozen base UNet
    assert all(p.grad is None for p in method.net.vae.encoder.parameters() if not p.requires_grad)
    return terms


def test_osediff_losses_gradients_and_learning(hf_home, tiny_sd, hq_dir, tmp_path):
    cfg = tiny_cfg("osediff", tiny_sd, hq_dir, tmp_path)
    method = build_method(cfg, tiny_sd)
    lq, hq = batch(hq_dir)
    torch.manual_seed(0)
    terms = check_method(method, lq, hq, ["mse", "lpips", "vsd", "total"])
    g = _grads(method.net)
    assert g["unet.conv_in.base_layer.weight"] is not None  # OSEDiff trains the full conv_in
    assert all(p.grad is None for p in method.lpips.parameters())  # frozen LPIPS
    aux = method.aux
    assert all(p.grad is None for p in aux.parameters())  # VSD gives the fake score no gradient
    aux_terms = aux(*terms["aux_inputs"])
    aux_terms["total"].backward()
    ag = {n: p.grad for n, p in aux.named_parameters()}
    assert all(ag[n] is not None for n in ag if "lora_" in n)
    assert all(ag[n] is None for n in ag if "lora_" not in n)
    cfg2 = tiny_cfg("osediff", tiny_sd, hq_dir, tmp_path, lr=1e-3, loss_weights={"vsd": 0.0})
    loss_goes_down(build_method(cfg2, tiny_sd), cfg2, lq, hq, steps=6)


def test_hero_sr_losses_gradients_and_learning(hf_home, tiny_sd, hq_dir, tiny_clip, tmp_path):
    cfg = tiny_cfg("hero-sr", tiny_sd, hq_dir, tmp_path, clip_model=str(tiny_clip), perceptual_pretrained=False)
    method = build_method(cfg, tiny_sd)
    lq, hq = batch(hq_dir)
    torch.manual_seed(0)
    check_method(method, lq, hq, ["mse", "lpips", "td_pal", "id_sal", "total"])
    assert all(p.grad is not None for p in method.net.dtsm.parameters())  # DTSM learns through Gumbel-Softmax
    assert all(p.grad is None for p in method.clip.parameters())  # frozen CLIP
    t = method.net.dtsm(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert set(t.tolist()) <= set(float(v) for v in method.dtsm_config["timesteps"])
    cfg2 = tiny_cfg("hero-sr", tiny_sd, hq_dir, tmp_path, clip_model=str(tiny_clip), lr=1e-3)
    loss_goes_down(build_method(cfg2, tiny_sd), cfg2, lq, hq, steps=6)


def test_dfosd_losses_gradients_and_learning(hf_home, tiny_sd, hq_dir, tmp_path):
    cfg = tiny_cfg("dfosd", tiny_sd, hq_dir, tmp_path)
    method = build_method(cfg, tiny_sd)
    assert method.unet_adapters[0].alpha == 16 and method.unet_adapters[0].rank == 16
    lq, hq = batch(hq_dir)
    torch.manual_seed(0)
    terms = check_method(method, lq, hq, ["mse", "ea_dists", "adv", "total"])
    assert method.net.learned_text_embedding.grad is not None
    assert all(p.grad is None for p in method.dists.parameters())
    dg = aux_gradients(method, terms["aux_inputs"])
    assert all(dg[n] is not None for n in dg if "lora_" in n or n.startswith("head."))
    assert all(dg[n] is None for n in dg if "lora_" not in n and not n.startswith("head."))
    cfg2 = tiny_cfg("dfosd", tiny_sd, hq_dir, tmp_path, lr=1e-3)
    loss_goes_down(build_method(cfg2, tiny_sd), cfg2, lq, hq, steps=6)


def test_train_cli_checkpoints_export_and_upscale(hf_home, tiny_sd, hq_dir, tmp_path):
    from sr_cli import load_model
    from sr_cli.engine.pipeline import SRModel, UpscaleOptions
    from sr_cli.engine.sd_onestep import OneStepSD
    from sr_cli.models.registry import get_spec

    out = tmp_path / "run"
    val = hq_dir / "hq0.png"
    r = runner.invoke(app, ["train", "--method", "osediff", "--data", str(hq_dir), "--output", str(out), "--base",
                            str(tiny_sd), "--resolution", "64", "--batch-size", "2", "--max-steps", "2",
                            "--checkpoint-every", "1", "--validate-every", "2", "--validation-image", str(val),
                            "--perceptual-random", "--log-every", "1", "--lr", "1e-3"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    assert sorted(p.name for p in (out / "checkpoints" / "step-000002").iterdir()) == [
        "optimizer-aux.pt", "optimizer-gen.pt", "state.json", "train_config.json", "trainable.safetensors"]
    assert (out / "srx_model.json").is_file() and (out / "weights.safetensors").is_file()
    assert json.loads((out / "train_config.json").read_text())["method"] == "osediff"
    logs = [json.loads(line) for line in (out / "logs" / "train.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logs] == [1, 2]
    assert {"mse", "lpips", "vsd", "diffusion", "total"} <= set(logs[0])
    assert (out / "validation" / "step-000002" / "hq0.png").is_file()

    trained = load_model(str(out), device="cpu", dtype="fp32")
    lr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    opts = UpscaleOptions(tile=0, color_fix="none")
    untrained = SRModel(get_spec("osediff"), OneStepSD.from_pretrained(tiny_sd), torch.device("cpu"), torch.float32)
    untrained.spec = trained.spec
    assert (trained.upscale_tensor(lr, opts) - untrained.upscale_tensor(lr, opts)).abs().max() > 1e-4
    r = runner.invoke(app, ["upscale", str(val), "--model", str(out), "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 0, r.output


def test_resume_reproduces_the_next_step(hf_home, tiny_sd, hq_dir, tmp_path):
    from safetensors.torch import load_file

    from sr_cli.train.loop import train

    full = tiny_cfg("osediff", tiny_sd, hq_dir, tmp_path, output=str(tmp_path / "full"), max_steps=2)
    train(full, echo=lambda s: None)
    half = tiny_cfg("osediff", tiny_sd, hq_dir, tmp_path, output=str(tmp_path / "half"), max_steps=1)
    train(half, echo=lambda s: None)
    resumed = tiny_cfg("osediff", tiny_sd, hq_dir, tmp_path, output=str(tmp_path / "half"), max_steps=2, resume=True)
    train(resumed, echo=lambda s: None)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-000002" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "half" / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    one = load_file(str(tmp_path / "full" / "checkpoints" / "step-000001" / "trainable.safetensors"))
    assert any(not torch.equal(a[k], one[k]) for k in a)  # the step really changed weights


def test_paired_folder_and_sampler_shards(tmp_path):
    from PIL import Image

    hr, lrd = tmp_path / "p" / "HR", tmp_path / "p" / "LR"
    make_hq_folder(hr, n=2, size=64)
    lrd.mkdir()
    for p in hr.iterdir():
        Image.open(p).resize((16, 16), Image.Resampling.BICUBIC).save(lrd / p.name)
    ds = CropDataset([str(tmp_path / "p")], 32, 4)
    item = ds[(0, 5)]
    assert ds.paired and item["hq"].shape == (3, 32, 32) and item["lq"].shape == (3, 8, 8)
    s0 = StepBatchSampler(10, 3, seed=0, rank=0, world=2, start_step=0, steps=4)
    s1 = StepBatchSampler(10, 3, seed=0, rank=1, world=2, start_step=0, steps=4)
    one = StepBatchSampler(10, 6, seed=0, rank=0, world=1, start_step=0, steps=4)
    for step in range(4):
        assert s0.batch_for(step) + s1.batch_for(step) == one.batch_for(step)  # two shards = one global batch
    assert list(StepBatchSampler(10, 3, 0, 0, 2, start_step=2, steps=4)) == [s0.batch_for(2), s0.batch_for(3)]


def test_recipes_match_paper_defaults():
    from sr_cli.train.config import load_recipe

    root = REPO_ROOT / "configs"
    o = resolve_config(None, load_recipe(root / "osediff.yaml"), data=["x"])
    assert (o.method, o.lora_rank, o.lr, o.cfg) == ("osediff", 4, 5e-5, 7.5)
    assert o.loss_weights == {"mse": 1.0, "lpips": 2.0, "vsd": 1.0}
    h = resolve_config(None, load_recipe(root / "hero-sr.yaml"), data=["x"])
    assert (h.lora_rank, h.base) == (16, "stabilityai/sd-turbo")
    assert h.loss_weights == {"mse": 2.0, "lpips": 5.0, "td_pal": 1.0, "id_sal": 0.5}
    d = resolve_config(None, load_recipe(root / "dfosd.yaml"), data=["x"])
    assert (d.lora_rank, d.lora_alpha, d.lr, d.lr_aux) == (16, 16.0, 5e-5, 5e-7)
    assert d.loss_weights == {"mse": 1.0, "ea_dists": 1.0, "adv": 5e-3}
    assert resolve_config("osediff", {"lr": 1e-4}, lr=2e-4).lr == 2e-4  # flags > recipe > defaults


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate launcher not on PATH")
def test_accelerate_two_cpu_processes(hf_home, tiny_sd, hq_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = ["accelerate", "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "sr_cli.cli", "train", "--method", "osediff", "--data", str(hq_dir),
           "--output", str(out), "--base", str(tiny_sd), "--resolution", "64", "--batch-size", "1",
           "--max-steps", "2", "--checkpoint-every", "2", "--perceptual-random", "--log-every", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert [c.name for c in (out / "checkpoints").iterdir()] == ["step-000002"]
    assert (out / "srx_model.json").is_file()
    logs = [json.loads(line) for line in (out / "logs" / "train.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logs] == [1, 2]  # only the main process logs


def test_cosine_lr_schedule_is_a_pure_function_of_the_step():
    import math

    from sr_cli.train.config import resolve_config

    cfg = resolve_config("lite", None, data=["x"], lr=1e-4, lr_min=1e-6, lr_schedule="cosine", lr_decay_start=100,
                         max_steps=300)
    assert cfg.lr_factor(0) == cfg.lr_factor(100) == 1.0
    assert cfg.lr * cfg.lr_factor(200) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi / 2)))
    assert cfg.lr * cfg.lr_factor(300) == pytest.approx(1e-6) and cfg.lr * cfg.lr_factor(999) == pytest.approx(1e-6)
    assert resolve_config("lite", None, data=["x"]).lr_factor(12345) == 1.0
    with pytest.raises(UsageError, match="lr_schedule"):
        resolve_config("lite", None, data=["x"], lr_schedule="step")


def test_every_recipe_resolves_and_the_teacherless_lite_recipes_degrade_as_their_presets():
    from sr_cli.data.degradation import DegradationConfig
    from sr_cli.train.config import load_recipe
    from sr_cli.train.teacher_targets import CAMERA, MILD

    recipes = sorted((REPO_ROOT / "configs").glob("*.yaml"))
    assert len(recipes) >= 10
    for path in recipes:
        cfg = resolve_config(None, load_recipe(path), data=["x"])
        DegradationConfig(**cfg.degradation)  # every override names a real field
    truth = resolve_config(None, load_recipe(REPO_ROOT / "configs" / "lite-sharp-truth.yaml"), data=["x"])
    assert (truth.method, truth.bicubic_prob, truth.loss_weights["adv"]) == ("lite", 0.35, 0.05)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in truth.degradation.items()} == MILD
    camera = resolve_config(None, load_recipe(REPO_ROOT / "configs" / "lite-camera-l1.yaml"), data=["x"])
    assert (camera.method, camera.bicubic_prob, camera.loss_weights["adv"]) == ("lite", 0.35, 0.0)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in camera.degradation.items()} == CAMERA
