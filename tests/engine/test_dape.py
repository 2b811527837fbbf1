"""OSEDiff's DAPE prompts: our RAM/DAPE tagger against what the authors' code returned on the same tiny weights.

``fixtures/dape/`` holds the authors' outputs (recorded by ``fixtures/dape/make_fixtures.py`` from OSEDiff's
``ram/`` code) for the tiny checkpoints that ``helpers/dape_tiny.py`` rebuilds from a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.dape_tiny import make_tiny_dape, make_tiny_ram, tiny_dape_state_dict, tiny_ram_state_dict
from PIL import Image

from sr_cli.engine.dape import DapeTagger, is_dape_file, read_ram
from sr_cli.errors import CheckpointFormatError
from helpers.paths import FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "dape"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


def authors_upsampled(name: str) -> torch.Tensor:
    """test_osediff.py's image for RAM: x4 with PIL's bicubic, LANCZOS to a multiple of 8, ToTensor."""
    image = Image.open(FIXTURES / f"lr_{name}.png").convert("RGB")
    image = image.resize((image.width * 4, image.height * 4), Image.BICUBIC)
    image = image.resize((image.width - image.width % 8, image.height - image.height % 8), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("dape")
    return make_tiny_ram(d / "ram_swin_large_14m.pth"), make_tiny_dape(d / "DAPE.pth")


@pytest.fixture(scope="module")
def tagger(tiny_files) -> DapeTagger:
    return DapeTagger.from_files(*tiny_files)


@pytest.mark.parametrize("name", sorted(EXPECTED["images"]))
def test_tagger_logits_and_tags_equal_the_authors_ram_dape(tagger, name):
    exp = EXPECTED["images"][name]
    image = authors_upsampled(name)
    assert list(image.shape[-2:]) == exp["upsampled_size"][::-1]
    logits = tagger.logits(image)[0]
    theirs = torch.from_numpy(np.load(FIXTURES / f"logits_{name}.npy"))
    torch.testing.assert_close(logits, theirs, rtol=0, atol=2e-5)
    tags = tagger.tags(image)[0]
    assert tags == exp["tags"]
    assert len(tags.split(", ")) == len(exp["kept"]) > 0
    assert f"{tags}, {EXPECTED['prompt']}," == exp["validation_prompt"]


def test_dape_lora_changes_the_tags(tiny_files):
    # Without DAPE.pth (plain RAM) the logits move away from the authors' DAPE output: the merge matters.
    plain = DapeTagger.from_files(tiny_files[0], None)
    theirs = torch.from_numpy(np.load(FIXTURES / "logits_a.npy"))
    assert (plain.logits(authors_upsampled("a"))[0] - theirs).abs().max() > 0.05


def test_ram_checkpoint_wrappers_and_old_names_load_the_same(tmp_path, tagger):
    sd = tiny_ram_state_dict()
    renamed = {"module." + k.replace("tagging_head", "vision_multi"): v for k, v in sd.items()}
    torch.save({"state_dict": renamed}, tmp_path / "ram.pth")
    torch.save({"params": tiny_dape_state_dict()}, tmp_path / "dape.pth")
    other = DapeTagger.from_files(tmp_path / "ram.pth", tmp_path / "dape.pth")
    image = authors_upsampled("b")
    assert torch.equal(other.logits(image), tagger.logits(image))


def test_files_that_are_not_ram_or_dape_are_refused(tmp_path, tiny_files):
    torch.save({"model": {"conv.weight": torch.zeros(2, 2)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointFormatError, match="not a RAM checkpoint"):
        read_ram(tmp_path / "x.pth")
    assert not is_dape_file(tmp_path / "x.pth") and not is_dape_file(tiny_files[0])
    assert is_dape_file(tiny_files[1])


# ----------------------------------------------------------------------------- srx upscale / load_model

RAM_REPO = "xinyu1205/recognize_anything_model"


@pytest.fixture()
def dape_in_cache(hf_home, tiny_files, tmp_path):
    """The tiny RAM file in the Hugging Face cache (as the Hub repo the manifest names) and the tiny DAPE.pth
    imported with ``srx models import osediff DAPE.pth``, as a user does."""
    from helpers.tiny import place_in_hf_cache
    from typer.testing import CliRunner

    from sr_cli.cli import app

    src = tmp_path / "ram_repo"
    src.mkdir()
    (src / "ram_swin_large_14m.pth").write_bytes(tiny_files[0].read_bytes())
    place_in_hf_cache(src, hf_home / "hub", repo=RAM_REPO)
    r = CliRunner().invoke(app, ["models", "import", "osediff", str(tiny_files[1])])
    assert r.exit_code == 0, r.output
    return hf_home


def _upscale(args: list[str], out: Path):
    from typer.testing import CliRunner

    from sr_cli.cli import app

    r = CliRunner().invoke(app, ["upscale", *args, "--device", "cpu", "--dtype", "fp32", "--color-fix", "none",
                                 "--tile", "0", "-o", str(out)])
    return r, (np.asarray(Image.open(out)) if r.exit_code == 0 else None)


def test_osediff_upscale_conditions_on_the_authors_dape_prompt(dape_in_cache, tiny_sd, osediff_pkl, tmp_path):
    from helpers.reference import clip_embedding

    from sr_cli.engine.pipeline import UpscaleOptions, pil_to_uint8
    from sr_cli.engine.resize import upsample_input
    from sr_cli.models.loading import load_model

    model = load_model("osediff", base=str(tiny_sd), weights=str(osediff_pkl), device="cpu", dtype="fp32")
    # The prompt srx builds for the fixture image is the authors' f"{tags}, {prompt},", tags included.
    x = pil_to_uint8(Image.open(FIXTURES / "lr_a.png").convert("RGB"))
    prompt = model.prompt_for(upsample_input(x, x.shape[-2] * 4, x.shape[-1] * 4))
    assert prompt == EXPECTED["images"]["a"]["validation_prompt"]
    # The embedding the UNet gets is the authors' encode_prompt of that text (CLIP, padded to 77, no mask).
    embedding = model.net.text_condition(prompt)
    torch.testing.assert_close(embedding, clip_embedding(tiny_sd, prompt), rtol=0, atol=1e-6)
    assert (embedding - model.net.text_condition(", ,")).abs().max() > 0.1  # not the no-tags condition

    # `srx upscale` conditions on the same text as the library (a small crop keeps the UNet runs cheap).
    lr = tmp_path / "crop.png"
    Image.open(FIXTURES / "lr_a.png").crop((40, 40, 64, 60)).save(lr)
    x = pil_to_uint8(Image.open(lr))
    assert model.prompt_for(upsample_input(x, 80, 96)).count(", ") >= 3  # a few tags for this crop too
    model_args = [str(lr), "--model", "osediff", "--base", str(tiny_sd), "--weights", str(osediff_pkl)]
    r, with_tags = _upscale(model_args, tmp_path / "dape.png")
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.asarray(model.upscale(Image.open(lr), color_fix="none", tile=0)), with_tags)
    r, no_tags = _upscale(model_args + ["--prompt-extractor", "none"], tmp_path / "none.png")
    assert r.exit_code == 0, r.output
    assert np.array_equal(no_tags, np.asarray(model.upscale(Image.open(lr), UpscaleOptions(
        color_fix="none", tile=0, prompt_extractor="none"))))
    assert not np.array_equal(with_tags, no_tags)


def test_osediff_without_dape_files_says_what_to_get_unless_asked_for_none(hf_home, tiny_sd, osediff_pkl, tmp_path):
    lr = tmp_path / "small.png"
    Image.open(FIXTURES / "lr_b.png").crop((0, 0, 20, 16)).save(lr)
    model_args = [str(lr), "--model", "osediff", "--base", str(tiny_sd), "--weights", str(osediff_pkl)]
    r, _ = _upscale(model_args, tmp_path / "x.png")
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert "srx models download osediff" in lines[0] and "srx models import osediff DAPE.pth" in lines[0]
    assert "--prompt-extractor none" in lines[0]
    assert not (tmp_path / "x.png").exists()
    r, out = _upscale(model_args + ["--prompt-extractor", "none"], tmp_path / "y.png")
    assert r.exit_code == 0, r.output
    assert out.shape == (64, 80, 3)
    r, _ = _upscale(model_args + ["--prompt-extractor", "ram"], tmp_path / "z.png")
    assert r.exit_code == 2 and "--prompt-extractor must be one of dape, none" in r.output


def test_models_info_and_import_name_the_prompt_extractor_files(dape_in_cache):
    from typer.testing import CliRunner

    from sr_cli.cli import app

    r = CliRunner().invoke(app, ["models", "info", "osediff"])
    assert r.exit_code == 0, r.output
    assert "ram_swin_large_14m.pth" in r.output and "DAPE.pth" in r.output and "Apache-2.0" in r.output
    assert (dape_in_cache / "srx" / "downloads" / "osediff" / "DAPE.pth").is_file()


def test_evaluate_osediff_runs_with_dape_or_none_and_keys_its_cache_by_the_choice(dape_in_cache, tiny_sd, osediff_pkl,
                                                                                  tmp_path):
    from helpers.datasets import make_pairs
    from typer.testing import CliRunner

    from sr_cli.cli import app

    data = make_pairs(tmp_path / "set", n=2)
    base = ["evaluate", "--dataset", str(data), "--model", "osediff", "--base", str(tiny_sd), "--weights",
            str(osediff_pkl), "--metrics", "psnr", "--device", "cpu", "--dtype", "fp32"]
    runs = {}
    for choice in ("dape", "none"):
        r = CliRunner().invoke(app, base + ["--prompt-extractor", choice, "--json-file", str(tmp_path / f"{choice}.json")])
        assert r.exit_code == 0, r.output
        doc = json.loads((tmp_path / f"{choice}.json").read_text())
        runs[choice] = doc["systems"][0]
    # Not served from each other's cache: both ran the model, and the tags changed the results.
    assert runs["dape"]["model_runs"] == runs["none"]["model_runs"] == 2
    assert runs["dape"]["mean"]["psnr"] != runs["none"]["mean"]["psnr"]


def test_evaluate_osediff_without_dape_files_is_one_line_exit_2(hf_home, tiny_sd, osediff_pkl, tmp_path):
    from helpers.datasets import make_pairs
    from typer.testing import CliRunner

    from sr_cli.cli import app

    data = make_pairs(tmp_path / "set", n=1)
    r = CliRunner().invoke(app, ["evaluate", "--dataset", str(data), "--model", "osediff", "--base", str(tiny_sd),
                                 "--weights", str(osediff_pkl), "--metrics", "psnr", "--device", "cpu"])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "srx models import osediff DAPE.pth" in errors[0], r.output


def test_models_verify_checks_the_prompt_extractor_files(dape_in_cache, osediff_pkl):
    from typer.testing import CliRunner

    from sr_cli.models import hub
    from sr_cli.cli import app
    from sr_cli.models.registry import get_spec

    hub.import_weights(get_spec("osediff"), osediff_pkl)
    runner = CliRunner()
    r = runner.invoke(app, ["models", "verify", "osediff"])
    assert r.exit_code == 0, r.output
    assert "ram_swin_large_14m.pth OK" in r.output and "DAPE.pth OK" in r.output
    dape = dape_in_cache / "srx" / "downloads" / "osediff" / "DAPE.pth"
    dape.write_bytes(dape.read_bytes() + b"altered")
    r = runner.invoke(app, ["models", "verify", "osediff"])
    assert r.exit_code == 2 and "DAPE.pth: sha256 mismatch" in r.output, r.output
