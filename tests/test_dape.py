"""OSEDiff's DAPE prompts: our RAM/DAPE tagger against what the authors' code returned on the same tiny weights.

``fixtures/dape/`` holds the authors' outputs (recorded by ``fixtures/dape/make_fixtures.py`` from OSEDiff's
``ram/`` code) for the tiny checkpoints that ``dape_tiny.py`` rebuilds from a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dape_tiny import make_tiny_dape, make_tiny_ram, tiny_dape_state_dict, tiny_ram_state_dict
from PIL import Image

from sr_cli.engine.dape import DapeTagger, is_dape_file, read_ram
from sr_cli.errors import CheckpointFormatError

FIXTURES = Path(__file__).parent / "fixtures" / "dape"
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
