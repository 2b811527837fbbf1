"""`srx evaluate`: metrics with the papers' settings, datasets, caching, reports, exit codes."""

import csv
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.engine.resize import pil_resize
from sr_cli.errors import UsageError
from sr_cli.evaluate.datasets import folder_set, resolve_dataset
from sr_cli.evaluate.metrics import METRICS, MetricSuite, parse_metric_list
from helpers.datasets import make_pairs, smooth_image

pyiqa = pytest.importorskip("pyiqa")
runner = CliRunner()


# ----------------------------------------------------------------------------- independent metric formulas


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB in [0, 1], as BasicSR's rgb2ycbcr(y_only=True): [16, 235] / 255."""
    return (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2] + 16.0) / 255.0


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((y_channel(a) * 255.0 - y_channel(b) * 255.0) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM on Y (rounded to 8-bit levels as MATLAB's uint8 rgb2ycbcr), 11x11 Gaussian window
    (sigma 1.5), valid region only."""
    x = torch.from_numpy(np.round(y_channel(a) * 255.0))[None, None].double()
    y = torch.from_numpy(np.round(y_channel(b) * 255.0))[None, None].double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx, syy, sxy = F.conv2d(x * x, w) - mx**2, F.conv2d(y * y, w) - my**2, F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def test_psnr_ssim_on_y_equal_pyiqa_and_an_independent_computation():
    rng = np.random.default_rng(0)
    suite = MetricSuite(parse_metric_list("psnr,ssim", True), torch.device("cpu"))
    assert suite.unavailable == {}
    ref_psnr = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", device="cpu")
    ref_ssim = pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", device="cpu")
    yiq_psnr = pyiqa.create_metric("psnr", test_y_channel=True, device="cpu")  # pyiqa's default Y (YIQ)
    for _ in range(3):
        hr = smooth_image(rng, 48, 64)
        sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
        ours = suite.score_image(_to_tensor(sr), _to_tensor(hr))
        a, b = sr.astype(np.float64) / 255, hr.astype(np.float64) / 255
        assert ours["psnr"] == pytest.approx(ref_psnr(_to_tensor(sr), _to_tensor(hr)).item(), abs=1e-5)
        assert ours["ssim"] == pytest.approx(ref_ssim(_to_tensor(sr), _to_tensor(hr)).item(), abs=1e-6)
        assert ours["psnr"] == pytest.approx(psnr_y(a, b), abs=1e-3)
        assert ours["ssim"] == pytest.approx(ssim_y(a, b), abs=5e-5)  # float32 rounding at .5 levels
        # The setting matters: YIQ's Y gives a different number (the papers use YCbCr).
        assert abs(yiq_psnr(_to_tensor(sr), _to_tensor(hr)).item() - ours["psnr"]) > 0.1


def test_metric_lists():
    assert [m.name for m in parse_metric_list(None, True)] == [
        "psnr", "ssim", "lpips", "dists", "fid", "niqe", "musiq", "maniqa", "clipiqa"]
    assert [m.name for m in parse_metric_list(None, False)] == ["niqe", "musiq", "maniqa", "clipiqa"]
    assert [m.name for m in parse_metric_list("psnr, MUSIQ,psnr", False)] == ["musiq"]  # no HR: FR metrics dropped
    assert METRICS["maniqa"].pyiqa_name == "maniqa-pipal" and METRICS["lpips"].lower_better
    with pytest.raises(UsageError, match="unknown metric"):
        parse_metric_list("psnr,sharpness", True)
    with pytest.raises(UsageError, match="no HR"):
        parse_metric_list("psnr,ssim", False)


# ----------------------------------------------------------------------------- datasets


def test_folder_layouts_and_pairing(tmp_path):
    s = folder_set(make_pairs(tmp_path / "a"))
    assert s.paired and [x.name for x in s.samples] == ["img0", "img1", "img2"]
    assert all(x.hr.parent.name == "HR" and x.lr.stem == x.hr.stem for x in s.samples)
    assert folder_set(make_pairs(tmp_path / "b", lr_name="test_LR", hr_name="test_HR")).paired
    assert folder_set(make_pairs(tmp_path / "c", lr_name="lq", hr_name="gt")).paired
    only = folder_set(tmp_path / "a" / "LR")  # a folder of images alone: no-reference
    assert not only.paired and len(only.samples) == 3
    renamed = folder_set(make_pairs(tmp_path / "d", hr_suffix="_HR"))  # names differ, counts agree
    assert renamed.paired and renamed.notes and renamed.samples[1].hr.name == "img1_HR.png"
    (tmp_path / "d" / "HR" / "img2_HR.png").unlink()
    with pytest.raises(UsageError, match="no HR image"):
        folder_set(tmp_path / "d")
    with pytest.raises(UsageError, match="unknown dataset"):
        resolve_dataset("no-such-benchmark")


def test_named_dataset_from_the_hf_cache_zip(hf_home, tmp_path):
    """div2k-val: the StableSR zip in the (offline) Hugging Face cache is found and its member extracted."""
    src = make_pairs(tmp_path / "src", lr_name="lq", hr_name="gt")
    snapshot = hf_home / "hub" / "datasets--Iceclear--StableSR-TestSets" / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    with zipfile.ZipFile(snapshot / "StableSR_testsets.zip", "w") as zf:
        for f in sorted(src.rglob("*.png")):
            zf.write(f, f"StableSR_testsets/DIV2K_V2_val/{f.relative_to(src)}")
        zf.writestr("StableSR_testsets/RealSRVal_crop128/test_LR/x.png", b"other set")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("c" * 40)
    s = resolve_dataset("div2k-val")
    assert s.paired and s.paper_name == "DIV2K-Val" and [x.name for x in s.samples] == ["img0", "img1", "img2"]
    assert not (s.root / "test_LR").exists()  # only the requested member is extracted
    assert (hf_home / "srx" / "datasets" / "div2k-val" / ".srx-complete.json").is_file()


def test_named_dataset_offline_and_missing_is_a_clear_usage_error(hf_home):
    r = runner.invoke(app, ["evaluate", "--dataset", "drealsr", "--metrics", "psnr"])
    assert r.exit_code == 2
    assert "dataset 'drealsr'" in r.output and "offline" in r.output and "--dataset-dir" in r.output
    r = runner.invoke(app, ["evaluate", "--dataset", "reallq250"])
    assert r.exit_code == 2 and "DreamClear" in r.output
    r = runner.invoke(app, ["evaluate", "--dataset", "imagenet-x"])
    assert r.exit_code == 2 and "unknown dataset 'imagenet-x'" in r.output


# ----------------------------------------------------------------------------- end to end


@pytest.fixture()
def tiny_lite_dir(tmp_path) -> Path:
    """A tiny `lite`-family model directory (random non-identity weights), as `srx train` exports it."""
    from sr_cli.train.config import resolve_config
    from sr_cli.train.loop import export_model
    from sr_cli.train.methods import build_method

    torch.manual_seed(0)
    cfg = resolve_config("lite", None, data=["unused"], output=str(tmp_path / "run"), resolution=64, batch_size=2,
                         lite_channels=[8, 16, 24], lite_blocks=1, max_steps=1)
    method = build_method(cfg, None)
    torch.nn.init.normal_(method.net.unet.conv_out.weight, std=0.05)
    return export_model(method, tmp_path / "tiny-lite")


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64) / 255.0


def test_end_to_end_reports_cache_and_baseline(hf_home, tiny_lite_dir, tmp_path):
    data = make_pairs(tmp_path / "set")
    out = tmp_path / "out"
    args = ["evaluate", "--dataset", str(data), "--model", str(tiny_lite_dir), "--metrics", "psnr",
            "--baseline", "bicubic", "--json-file", str(out / "r.json"), "--csv", str(out / "r.csv"),
            "--sheet", str(out / "sheet.png"), "--sheet-images", "2", "--save-images", str(out / "sr")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "r.json").read_text())
    model, bicubic = doc["systems"]
    assert model["model_runs"] == 3 and model["images_scored"] == 3 and model["images_failed"] == 0
    for img in model["per_image"]:  # each value = the formula on the saved SR image vs HR
        sr, hr = _read(out / "sr" / f"{img['image']}.png"), _read(data / "HR" / f"{img['image']}.png")
        assert img["psnr"] == pytest.approx(psnr_y(sr, hr), abs=1e-3)
    assert model["mean"]["psnr"] == pytest.approx(np.mean([i["psnr"] for i in model["per_image"]]), abs=1e-9)
    # The bicubic baseline goes through the engine's own resize (PIL bicubic in float, rounded to 8 bits).
    for img in bicubic["per_image"]:
        lr = torch.from_numpy(_read(data / "LR" / f"{img['image']}.png")).permute(2, 0, 1)[None].float()
        up = (pil_resize(lr, 48, 64)[0].permute(1, 2, 0).numpy() * 255).round() / 255
        assert img["psnr"] == pytest.approx(psnr_y(up, _read(data / "HR" / f"{img['image']}.png")), abs=1e-3)
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert [(x["system"], x["image"]) for x in rows][:4] == [(str(tiny_lite_dir), "img0"), (str(tiny_lite_dir), "img1"),
                                                              (str(tiny_lite_dir), "img2"), (str(tiny_lite_dir), "mean")]
    assert float(rows[3]["psnr"]) == pytest.approx(model["mean"]["psnr"]) and len(rows) == 8
    sheet = Image.open(out / "sheet.png")
    assert sheet.size == (48 * 4, 16 + 48 * 2)  # LR | bicubic | SR | HR, 2 rows of 48 px crops

    # Second run with more metrics: SR images come from the cache; the model is not even loaded.
    # Proof: its weights are now garbage (same size and mtime, so the cache key is unchanged).
    weights = tiny_lite_dir / "weights.safetensors"
    st = weights.stat()
    weights.write_bytes(b"\0" * st.st_size)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", str(tiny_lite_dir),
                            "--metrics", "psnr,ssim", "--json-file", str(out / "r2.json")])
    assert r.exit_code == 0, r.output
    again = json.loads((out / "r2.json").read_text())["systems"][0]
    assert again["model_runs"] == 0
    assert again["mean"]["psnr"] == pytest.approx(model["mean"]["psnr"], abs=1e-12) and "ssim" in again["mean"]
    # --recompute ignores the cache: now the broken weights are loaded and refused.
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", str(tiny_lite_dir),
                            "--metrics", "psnr", "--recompute"])
    assert r.exit_code != 0


def test_bad_images_and_existing_outputs(hf_home, tmp_path):
    data = make_pairs(tmp_path / "set", n=3)
    (data / "LR" / "img1.png").write_bytes(b"not a png")
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr",
                            "--json-file", str(tmp_path / "r.json")])
    assert r.exit_code == 1
    assert "img1.png" in r.output and "not an image" in r.output
    sys = json.loads((tmp_path / "r.json").read_text())["systems"][0]
    assert [("error" in i, "psnr" in i) for i in sys["per_image"]] == [(False, True), (True, False), (False, True)]
    # --outputs scores existing results (another tool's) named like the LR images; a missing one is an error.
    results = tmp_path / "results"
    results.mkdir()
    for name in ("img0", "img2"):
        shutil.copy(data / "HR" / f"{name}.png", results / f"{name}.png")
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--outputs", str(results), "--metrics", "psnr,ssim",
                            "--json-file", str(tmp_path / "o.json")])
    assert r.exit_code == 1 and "no SR image named img1" in r.output
    mean = json.loads((tmp_path / "o.json").read_text())["systems"][0]["mean"]
    assert mean["psnr"] == pytest.approx(80.0, abs=1e-3)  # identical images: pyiqa caps PSNR at 80 dB
    assert mean["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_metric_without_weights_is_named_and_the_rest_computed(hf_home, tmp_path, monkeypatch):
    from pyiqa.utils import download_util

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "empty_pyiqa"))
    data = make_pairs(tmp_path / "set", n=2)
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "psnr,musiq",
                            "--json-file", str(tmp_path / "r.json")])
    assert r.exit_code == 1
    assert "metric 'musiq' needs pretrained weights" in r.output and "musiq_koniq" in r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc["systems"][0]["mean"]) == {"psnr"} and "musiq" in doc["unavailable_metrics"]


def _random_fid_inception(pyiqa_dir: Path) -> None:
    """pyiqa's FID Inception (real architecture), randomly initialized, saved where pyiqa looks for it."""
    from pyiqa.archs import inception as inc

    path = pyiqa_dir / "pt_inception-2015-12-05-6726825d.pth"
    if path.exists():
        return
    torch.manual_seed(0)
    net = inc._inception_v3(num_classes=1008, aux_logits=False, pretrained=False)
    for name, block in [("Mixed_5b", inc.FIDInceptionA(192, pool_features=32)),
                        ("Mixed_5c", inc.FIDInceptionA(256, pool_features=64)),
                        ("Mixed_5d", inc.FIDInceptionA(288, pool_features=64)),
                        ("Mixed_6b", inc.FIDInceptionC(768, channels_7x7=128)),
                        ("Mixed_6c", inc.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6d", inc.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6e", inc.FIDInceptionC(768, channels_7x7=192)),
                        ("Mixed_7b", inc.FIDInceptionE_1(1280)), ("Mixed_7c", inc.FIDInceptionE_2(2048))]:
        setattr(net, name, block)
    pyiqa_dir.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


def test_fid_between_the_sr_and_hr_sets(hf_home, tmp_path, monkeypatch):
    from pyiqa.utils import download_util

    pyiqa_dir = tmp_path / "pyiqa"
    _random_fid_inception(pyiqa_dir)
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(pyiqa_dir))
    data = make_pairs(tmp_path / "set", n=4)
    r = runner.invoke(app, ["evaluate", "--dataset", str(data), "--model", "bicubic", "--metrics", "fid,psnr",
                            "--limit", "3", "--json-file", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    system = json.loads((tmp_path / "r.json").read_text())["systems"][0]
    assert len(system["per_image"]) == 3 and "fid" not in system["per_image"][0]
    # Independent: pyiqa's FID on folders holding exactly those 3 SR and 3 HR images.
    sr_dir, hr_dir = tmp_path / "sr3", tmp_path / "hr3"
    sr_dir.mkdir(), hr_dir.mkdir()
    for img in system["per_image"]:
        name = img["image"]
        shutil.copy(img["sr_file"], sr_dir / f"{name}.png")
        shutil.copy(data / "HR" / f"{name}.png", hr_dir)
    assert system["mean"]["fid"] == pytest.approx(_fid_of_few(sr_dir, hr_dir), rel=1e-4) and system["mean"]["fid"] > 0


def _fid_of_few(dir1: Path, dir2: Path) -> float:
    """FID from pyiqa's Inception features of two small folders, without a 2048x2048 matrix square root.

    With n images the covariances have rank < n: tr sqrt(S1 S2) is the sum of the singular values of
    B^T A / sqrt((n1 - 1)(n2 - 1)), A and B the centred features (scipy's sqrtm takes a minute here).
    """
    from pyiqa.archs.fid_arch import get_folder_features

    net = pyiqa.create_metric("fid", device="cpu").net.model
    f1, f2 = (get_folder_features(str(d), net, num_workers=0, device=torch.device("cpu"), mode="clean",
                                  verbose=False).astype(np.float64) for d in (dir1, dir2))
    a, b = f1 - f1.mean(0), f2 - f2.mean(0)
    n1, n2 = len(f1), len(f2)
    tr_sqrt = np.linalg.svd(b @ a.T / np.sqrt((n1 - 1) * (n2 - 1)), compute_uv=False).sum()
    tr1, tr2 = (a**2).sum() / (n1 - 1), (b**2).sum() / (n2 - 1)
    return float(((f1.mean(0) - f2.mean(0)) ** 2).sum() + tr1 + tr2 - 2 * tr_sqrt)


def test_dataset_registry_and_github_listing():
    from sr_cli.errors import ManifestError
    from sr_cli.evaluate.datasets import dataset_registry, github_tree_paths, parse_datasets

    reg = dataset_registry()
    assert set(reg) == {"drealsr", "realsr", "div2k-val", "realset65", "reallq250"}
    assert [reg[n].pairs for n in ("drealsr", "realsr", "div2k-val", "realset65")] == [True, True, True, False]
    assert all(len(reg[n].source.commit) == 40 for n in reg if reg[n].source.kind == "github")  # pinned
    assert reg["div2k-val"].source.member == "StableSR_testsets/DIV2K_V2_val"
    with pytest.raises(ManifestError, match="unknown key"):
        parse_datasets('[x]\ntitle="t"\npaper_name="x"\npairs=true\ncount=1\nscale=4\nlicense=""\nlr_dir="LR"\n'
                       'hr_dir="HR"\ncolour="red"\n[x.source]\nkind="manual"\n')
    tree = {"tree": [{"path": "testdata/RealSet65/a.png", "type": "blob"},
                     {"path": "testdata/RealSet65/.DS_Store", "type": "blob"},
                     {"path": "testdata/RealSet65/sub", "type": "tree"},
                     {"path": "testdata/RealSet80/b.png", "type": "blob"},
                     {"path": "testdata/RealSet65/c.JPG", "type": "blob"}]}
    assert github_tree_paths(tree, "testdata/RealSet65") == ["testdata/RealSet65/a.png", "testdata/RealSet65/c.JPG"]


def test_lr_only_folder_refuses_full_reference_metrics(hf_home, tmp_path):
    data = make_pairs(tmp_path / "set", n=2)
    r = runner.invoke(app, ["evaluate", "--dataset", str(data / "LR"), "--model", "bicubic", "--metrics", "psnr"])
    assert r.exit_code == 2 and "no HR images" in r.output
