"""`srx distill` on tiny ResShift-family models: losses, gradients, learning, resume, export -> upscale."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.errors import UsageError
from sr_cli.train.config import resolve_config
from sr_cli.train.methods.hf_diff import HighFrequencyINN, js_divergence
from sr_cli.train.methods.vpd_sr import haar_high_bands
from sr_cli.train.methods import build_method
from helpers.tiny import make_hq_folder, make_resshift_files, make_tiny_clip, make_tiny_swin_unet
from helpers.paths import REPO_ROOT
from helpers.training import aux_gradients, loss_goes_down

runner = CliRunner()


@pytest.fixture(scope="module")
def hq_dir(tmp_path_factory):
    return make_hq_folder(tmp_path_factory.mktemp("hq"), n=4, size=48)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture()
def teachers(hf_home, tmp_path):
    """ResShift (teacher) and SinSR (hf-diff's initial student) in the srx cache, as after `srx models download`."""
    from sr_cli.models import hub
    from sr_cli.models.registry import get_spec

    for name, filename, seed in (("resshift", "resshift_realsrx4_s15_v1.pth", 3), ("sinsr", "SinSR_v1.pth", 5)):
        denoiser, ae = make_resshift_files(tmp_path / name, "module", unet=make_tiny_swin_unet(seed))
        dl = hub.cache_root() / "downloads" / name
        dl.mkdir(parents=True)
        shutil.copy(denoiser, dl / filename)
        ae_dest = hub.manual_path(hub.autoencoder_spec(get_spec(name)))
        ae_dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ae, ae_dest)  # one shared copy (the same file for every ResShift-family model)
    return hf_home


def cfg_for(method, hq_dir, tmp_path, **kw):
    values = dict(data=[str(hq_dir)], output=str(tmp_path / "run"), resolution=32, batch_size=2, max_steps=2,
                  perceptual_pretrained=False, checkpoint_every=1, log_every=1, validate_every=0, seed=1)
    values.update(kw)
    return resolve_config(method, None, **values)


def a_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    hq = torch.rand(2, 3, 32, 32, generator=g)
    lq = torch.nn.functional.interpolate(hq, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    return lq, hq


def check_gradients(method):
    student = dict(method.net.unet.named_parameters())
    assert student and all(p.grad is not None for p in student.values())  # every student weight learns
    assert all(p.grad is None for p in method.teacher_unet.parameters())  # frozen teacher
    assert all(p.grad is None for p in method.net.vq.parameters())  # frozen autoencoder


def test_sinsr_losses_gradients_and_learning(teachers, hq_dir, tmp_path):
    cfg = cfg_for("sinsr", hq_dir, tmp_path)
    assert cfg.loss_weights == {"distill": 1.0, "inverse": 1.0, "consistency": 1.0} and cfg.lr == 5e-5
    method = build_method(cfg, None)
    lq, hq = a_batch()
    torch.manual_seed(0)
    terms = method(lq, hq)
    assert {"distill", "inverse", "consistency", "total"} <= set(terms)
    assert all(torch.isfinite(terms[k]) for k in ("distill", "inverse", "consistency"))
    assert terms["total"].item() == pytest.approx(sum(terms[k].item() for k in ("distill", "inverse", "consistency")),
                                                  rel=1e-5)
    # the student starts as a copy of the teacher: their one-step outputs agree before training
    s = dict(method.net.unet.state_dict())
    assert all(torch.equal(v, method.teacher_unet.state_dict()[k]) for k, v in s.items())
    terms["total"].backward()
    check_gradients(method)
    cfg2 = cfg_for("sinsr", hq_dir, tmp_path, lr=1e-3)
    loss_goes_down(build_method(cfg2, None), cfg2, lq, hq, steps=5)


def test_distill_target_is_the_deterministic_teacher_chain(teachers, hq_dir, tmp_path):
    method = build_method(cfg_for("sinsr", hq_dir, tmp_path), None)
    lq, hq = a_batch(1)
    torch.manual_seed(7)
    s = method.prepare(lq, hq)
    net = method.net
    # independent: run the 15 teacher steps by the formula x_{t-1} = k x0 + m x_t + j y
    k, m, j = net.schedule.deterministic_coefficients()
    x = s["x_T"]
    with torch.no_grad():
        for t in range(14, -1, -1):
            ts = torch.full((2,), t, dtype=torch.long)
            x0 = method.teacher_unet(x * float(net.schedule.input_scale()[t]), ts, s["lr"])
            x = x0 if t == 0 else float(k[t]) * x0 + float(m[t]) * x + float(j[t]) * s["y"]
    assert torch.allclose(s["z_teacher"], x, atol=1e-5)
    noise = (s["x_T"] - s["y"]) / (2.0 * 0.99)  # x_T = y + kappa sqrt(eta_T) eps with eps ~ N(0, 1)
    assert 0.8 < noise.std().item() < 1.2 and abs(noise.mean().item()) < 0.2


def test_vpd_sr_losses_discriminator_and_learning(teachers, hq_dir, tmp_path, tiny_clip):
    cfg = cfg_for("vpd-sr", hq_dir, tmp_path, clip_model=str(tiny_clip))
    assert cfg.loss_weights == {"distill": 1.0, "hfp": 0.1, "clip_sem": 1.0, "adv": 0.1}
    method = build_method(cfg, None)
    lq, hq = a_batch()
    torch.manual_seed(0)
    terms = method(lq, hq)
    assert {"distill", "hfp", "clip_sem", "adv", "total"} <= set(terms)
    assert "inverse" not in terms and "consistency" not in terms  # VPD-SR has no SinSR inverse/consistency losses
    terms["total"].backward()
    check_gradients(method)
    assert all(p.grad is None for p in method.clip.parameters())
    assert all(g is not None for g in aux_gradients(method, terms["aux_inputs"]).values())  # the discriminator learns
    cfg2 = cfg_for("vpd-sr", hq_dir, tmp_path, clip_model=str(tiny_clip), lr=1e-3, loss_weights={"adv": 0.0})
    loss_goes_down(build_method(cfg2, None), cfg2, lq, hq, steps=5)


def test_haar_bands_and_js_divergence():
    z = torch.randn(2, 3, 8, 8)
    bands = haar_high_bands(z)
    assert bands.shape == (2, 9, 4, 4)
    ll = (z[:, :, 0::2, 0::2] + z[:, :, 0::2, 1::2] + z[:, :, 1::2, 0::2] + z[:, :, 1::2, 1::2]) / 2
    assert torch.allclose(ll.pow(2).sum() + bands.pow(2).sum(), z.pow(2).sum(), rtol=1e-5)  # orthonormal
    assert haar_high_bands(torch.ones(1, 1, 4, 4)).abs().max() == 0  # a flat latent has no high frequencies
    p, q = torch.randn(4, 16), torch.randn(4, 16)
    assert js_divergence(p, p).item() == pytest.approx(0.0, abs=1e-7)
    assert js_divergence(p, q).item() == pytest.approx(js_divergence(q, p).item(), rel=1e-6)
    assert 0 < js_divergence(p * 50, q * 50).item() <= math.log(2) + 1e-6


def test_hf_diff_needs_the_inn_and_learns(teachers, hq_dir, tmp_path):
    with pytest.raises(UsageError, match="inn_pretrained.pt"):
        build_method(cfg_for("hf-diff", hq_dir, tmp_path), None)
    torch.manual_seed(0)
    inn_file = tmp_path / "inn_pretrained.pt"
    torch.save(HighFrequencyINN(channels=32, modules=2).state_dict(), inn_file)
    cfg = cfg_for("hf-diff", hq_dir, tmp_path, inn_weights=str(inn_file))
    assert (cfg.student, cfg.loss_weights["inn"], cfg.loss_weights["dino"]) == ("sinsr", 0.2, 0.15)
    method = build_method(cfg, None)
    assert len(method.inn.blocks) == 2 and method.inn.stem_in.out_channels == 32
    # HF-Diff fine-tunes SinSR: the student starts from SinSR's weights, the teacher is ResShift
    assert any(not torch.equal(a, b) for a, b in zip(method.net.unet.parameters(), method.teacher_unet.parameters()))
    lq, hq = a_batch()
    torch.manual_seed(0)
    terms = method(lq, hq)
    assert {"distill", "inverse", "consistency", "inn", "dino", "total"} <= set(terms)
    assert all(torch.isfinite(v) for k, v in terms.items())
    terms["total"].backward()
    check_gradients(method)
    assert all(p.grad is None for p in method.inn.parameters()) and all(p.grad is None for p in method.dino.parameters())
    cfg2 = cfg_for("hf-diff", hq_dir, tmp_path, inn_weights=str(inn_file), lr=1e-3)
    loss_goes_down(build_method(cfg2, None), cfg2, lq, hq, steps=4)
    bad = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(UsageError, match="not an INN weights file"):
        HighFrequencyINN.load(bad)


def test_distill_cli_resume_export_and_upscale(teachers, hq_dir, tmp_path):
    from safetensors.torch import load_file

    from sr_cli import load_model
    from sr_cli.engine.pipeline import UpscaleOptions

    common = ["--data", str(hq_dir), "--resolution", "32", "--batch-size", "2", "--checkpoint-every", "1",
              "--log-every", "1", "--lr", "1e-3", "--seed", "3"]
    full, half = tmp_path / "full", tmp_path / "half"
    r = runner.invoke(app, ["distill", "--method", "sinsr", "--output", str(full), "--max-steps", "2", *common])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    logs = [json.loads(line) for line in (full / "logs" / "train.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logs] == [1, 2] and {"distill", "inverse", "consistency"} <= set(logs[0])
    doc = json.loads((full / "srx_model.json").read_text())
    assert doc["family"] == "resshift" and doc["defaults"]["sampler"] == "one-step"
    # the teacher's (the family's) tiles: the authors' 512-LR-pixel chop, 2048/256 in output pixels
    assert (doc["defaults"]["tile"], doc["defaults"]["overlap"]) == (2048, 256)

    # resume: 1 step, then --resume to 2, equals 2 steps straight
    assert runner.invoke(app, ["distill", "--method", "sinsr", "--output", str(half), "--max-steps", "1", *common]).exit_code == 0
    r = runner.invoke(app, ["distill", "--method", "sinsr", "--output", str(half), "--max-steps", "2", "--resume", *common])
    assert r.exit_code == 0, r.output
    a = load_file(str(full / "checkpoints" / "step-000002" / "trainable.safetensors"))
    b = load_file(str(half / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(k.startswith("gen.net.unet.") for k in a)  # only the student is trained and saved

    # the exported student loads in the engine and differs from the teacher
    student = load_model(str(full), device="cpu")
    teacher = load_model("resshift", device="cpu")
    lr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    opts = UpscaleOptions(tile=0, sampler="one-step")
    assert (student.upscale_tensor(lr, opts) - teacher.upscale_tensor(lr, opts)).abs().max() > 1e-4
    img = hq_dir / "hq0.png"
    r = runner.invoke(app, ["upscale", str(img), "--model", str(full), "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o.png").is_file()


def test_distill_rejects_a_non_resshift_teacher_and_unknown_method(teachers, hq_dir, tmp_path):
    r = runner.invoke(app, ["distill", "--method", "osediff", "--data", str(hq_dir), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--method must be one of lite, sinsr, vpd-sr, hf-diff" in r.output
    r = runner.invoke(app, ["distill", "--teacher", "lite", "--data", str(hq_dir), "-o", str(tmp_path / "x"),
                            "--resolution", "32", "--max-steps", "1"])
    assert r.exit_code == 2 and "ResShift-family" in r.output
    assert not (tmp_path / "x" / "srx_model.json").exists()


def test_distill_recipes_match_the_papers():

    from sr_cli.train.config import load_recipe

    root = REPO_ROOT / "configs"
    s = resolve_config(None, load_recipe(root / "sinsr.yaml"), data=["x"])
    assert (s.method, s.teacher, s.lr, s.resolution) == ("sinsr", "resshift", 5e-5, 256)
    assert s.loss_weights == {"distill": 1.0, "inverse": 1.0, "consistency": 1.0}
    assert s.batch_size * s.grad_accum == 64
    v = resolve_config(None, load_recipe(root / "vpd-sr.yaml"), data=["x"])
    assert v.loss_weights == {"distill": 1.0, "hfp": 0.1, "clip_sem": 1.0, "adv": 0.1} and v.batch_size == 16
    h = resolve_config(None, load_recipe(root / "hf-diff.yaml"), data=["x"])
    assert (h.student, h.max_steps) == ("sinsr", 20000)
    assert h.loss_weights == {"distill": 1.0, "inverse": 1.0, "consistency": 1.0, "inn": 0.2, "dino": 0.15}
    assert h.batch_size * h.grad_accum == 32
