"""S3Diff: `srx upscale` against the authors' own inference script, end to end, on tiny files in the published
layouts (recordings made by tests/fixtures/authors_parity/make_s3diff_fixtures.py, which says exactly what was
run and what was changed), plus the registry entry, the offline messages and the real weights when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.paths import FIXTURES_DIR
from helpers.s3diff_tiny import S3DIFF_COMMIT, S3DIFF_REPO, make_s3diff_files
from helpers.digests import base_digest, checkpoint_digest
from helpers.tiny import TINY_REPO, place_in_hf_cache
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app

FIXTURES = FIXTURES_DIR / "authors_parity"
META = json.loads((FIXTURES / "s3diff_meta.json").read_text())
runner = CliRunner()


@pytest.fixture(scope="session")
def s3diff_files(tiny_sd, tmp_path_factory) -> tuple[Path, Path]:
    files = make_s3diff_files(tiny_sd, tmp_path_factory.mktemp("s3diff"))
    assert checkpoint_digest(*files) == META["files"], \
        "tests/helpers/s3diff_tiny.py's files changed: re-run make_s3diff_fixtures.py"
    assert base_digest(tiny_sd) == META["base"], \
        "tests/helpers/tiny.py's base model changed: re-run make_s3diff_fixtures.py"
    return files


@pytest.fixture()
def s3diff_hub(hf_home, s3diff_files) -> Path:
    """The offline Hub cache also holds the tiny ``s3diff.pkl`` and ``de_net.pth`` as ``zhangap/S3Diff``."""
    return place_in_hf_cache(s3diff_files[0].parent, hf_home / "hub", repo=S3DIFF_REPO, commit=S3DIFF_COMMIT)


def _upscale(out: Path, *extra: str) -> np.ndarray:
    r = runner.invoke(app, ["upscale", str(FIXTURES / "lr.png"), "--model", "s3diff", "--base", TINY_REPO,
                            "--tile", "0", "--device", "cpu", "--dtype", "fp32", "-o", str(out), *extra])
    assert r.exit_code == 0, r.output
    return np.asarray(Image.open(out / "lr_srx.png").convert("RGB")).astype(np.int16)


def _recorded(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / f"{name}.png").convert("RGB")).astype(np.int16)


def _close(ours: np.ndarray, theirs: np.ndarray, label: str) -> tuple[int, float]:
    assert ours.shape == theirs.shape == (80, 112, 3)
    diff = np.abs(ours - theirs)
    print(f"{label}: max {diff.max()}, mean {diff.mean():.4f}, differing {np.mean(diff > 0):.4%}")
    return int(diff.max()), float(diff.mean())


@pytest.mark.parametrize(("variant", "args"), [
    ("s3diff_seed", ["--color-fix", "none", "--seed", str(META["seed"])]),
    ("s3diff_mean", ["--color-fix", "none"]),
    ("s3diff_seed_wavelet", ["--seed", str(META["seed"])]),  # the default color fix: wavelet, as theirs
])
def test_upscale_equals_the_authors_script_on_8bit_output(s3diff_hub, variant, args, tmp_path):
    worst, mean = _close(_upscale(tmp_path, *args), _recorded(variant), variant)
    assert worst <= 2 and mean <= 0.5, (worst, mean)


def test_network_output_equals_the_authors_before_quantization(s3diff_hub):
    """The float image of the network (their forward's output), not only its 8-bit levels."""
    from sr_cli import load_model
    from sr_cli.engine.s3diff import bilinear_upsample
    from sr_cli.families.s3diff import NEGATIVE_PROMPT

    sr = load_model("s3diff", base=TINY_REPO, device="cpu", dtype="fp32")
    lr = torch.from_numpy(np.asarray(Image.open(FIXTURES / "lr.png").convert("RGB"), dtype=np.float32) / 255)
    lr = lr.permute(2, 0, 1)[None]
    x = bilinear_upsample(lr, 80, 112) * 2 - 1
    net = sr.net
    with torch.no_grad():
        y = net(x, net.estimate_degradation(lr), net.encode_text(sr.spec.defaults.prompt),
                net.encode_text(NEGATIVE_PROMPT), torch.tensor([999.0]), torch.Generator().manual_seed(META["seed"]))
    ours = (y[0] * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 0)
    theirs = torch.from_numpy(np.load(FIXTURES / "s3diff_seed.npy").astype(np.float32) / 65535)
    assert (ours - theirs).abs().max() * 255 < 0.05, (ours - theirs).abs().max() * 255


@pytest.mark.parametrize("change", ["constant degradation scores", "bicubic input", "LoRA scale x1.1",
                                    "no guidance"])
def test_parity_check_catches_a_changed_step(s3diff_hub, monkeypatch, change, tmp_path):
    """Each step the parity rests on moves the output past the tolerance when it is changed."""
    from sr_cli.engine import s3diff as engine
    from sr_cli.engine.resize import pil_resize

    if change == "constant degradation scores":
        monkeypatch.setattr(engine.S3DiffSD, "estimate_degradation", lambda self, lr: torch.full((1, 2), 0.5))
    elif change == "bicubic input":
        monkeypatch.setattr(engine, "bilinear_upsample", lambda lr, h, w: pil_resize(lr, h, w))
    elif change == "LoRA scale x1.1":
        init = engine.ModulatedLoRA.__init__

        def scaled(self, *a, **k):
            init(self, *a, **k)
            self.scaling *= 1.1

        monkeypatch.setattr(engine.ModulatedLoRA, "__init__", scaled)
    else:
        monkeypatch.setattr(engine, "GUIDANCE_SCALE", 1.0)
        monkeypatch.setattr(engine.S3DiffSD.__init__, "__defaults__", (1.0,))
    worst, mean = _close(_upscale(tmp_path, "--color-fix", "none", "--seed", str(META["seed"])),
                         _recorded("s3diff_seed"), change)
    assert worst > 2 or mean > 0.5, (worst, mean)


def test_registry_entry_names_both_hub_files_and_licenses(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(app, ["models", "info", "s3diff"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "hf://zhangap/S3Diff/s3diff.pkl@main" in text
    assert "de_net.pth (hub): hf://zhangap/S3Diff/de_net.pth@main" in text
    assert "license: Apache-2.0 (code and weights)" in text
    assert "stabilityai/sd-turbo" in text and "non-commercial" in text
    assert "color fix: wavelet" in text and "1.07" in text
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "s3diff" in r.output and "Apache-2.0 (code and weights)" in r.output


@pytest.mark.parametrize("cached", [(), ("s3diff.pkl",)], ids=["nothing", "weights only"])
def test_offline_download_names_the_missing_file_in_one_line(hf_home, tiny_sd, s3diff_files, cached, tmp_path):
    """Offline with SD-Turbo cached: one line naming the first missing Hub file and the command that gets it
    (the weights, then the degradation estimator)."""
    place_in_hf_cache(tiny_sd, hf_home / "hub", repo="stabilityai/sd-turbo")
    if cached:
        (tmp_path / "weights_only").mkdir()
        (tmp_path / "weights_only" / "s3diff.pkl").write_bytes(s3diff_files[0].read_bytes())
        place_in_hf_cache(tmp_path / "weights_only", hf_home / "hub", repo=S3DIFF_REPO, commit=S3DIFF_COMMIT)
    r = runner.invoke(app, ["models", "download", "s3diff"], env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code != 0
    missing = "de_net.pth" if cached else "s3diff.pkl"
    errors = [line for line in r.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and r.output.splitlines()[-1] == errors[0], r.output  # found files listed before it
    assert f"zhangap/S3Diff/{missing}" in errors[0] and "srx models download s3diff" in errors[0], r.output


def test_missing_estimator_is_named_offline(hf_home, s3diff_files):
    """The weights cached but not the estimator: the error names de_net.pth and how to get it."""
    only_pkl = s3diff_files[0].parent.parent / "only_pkl"
    only_pkl.mkdir(exist_ok=True)
    (only_pkl / "s3diff.pkl").write_bytes(s3diff_files[0].read_bytes())
    place_in_hf_cache(only_pkl, hf_home / "hub", repo=S3DIFF_REPO, commit=S3DIFF_COMMIT)
    r = runner.invoke(app, ["upscale", str(FIXTURES / "lr.png"), "--model", "s3diff", "--base", TINY_REPO,
                            "--device", "cpu", "-o", str(hf_home / "out")])
    assert r.exit_code != 0
    assert "zhangap/S3Diff/de_net.pth" in r.output and "srx models download s3diff" in r.output, r.output


@pytest.mark.real_weights
def test_real_weights_upscale_a_photo(tmp_path):
    """With the published files and SD-Turbo in the Hugging Face cache: a sharp x4 result close to the input."""
    from huggingface_hub import try_to_load_from_cache

    if not all(isinstance(try_to_load_from_cache(S3DIFF_REPO, f), str) for f in ("s3diff.pkl", "de_net.pth")) \
            or not isinstance(try_to_load_from_cache("stabilityai/sd-turbo", "unet/config.json"), str):
        pytest.skip("S3Diff's weights (zhangap/S3Diff) or stabilityai/sd-turbo are not in the Hugging Face cache")
    from sr_cli import load_model

    sr = load_model("s3diff", download=False, device=os.environ.get("SRX_TEST_DEVICE", "auto"))
    lr = Image.open(FIXTURES / "lr.png").convert("RGB")
    out = sr.upscale(lr)
    assert out.size == (4 * lr.width, 4 * lr.height)
    small = np.asarray(out.resize(lr.size, Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(small - np.asarray(lr, dtype=np.float32)).mean() < 20
