"""Model families: one object per family, each reads, converts and builds its own formats, and nothing else in
the package branches on a family's name."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sr_cli.models import registry
from sr_cli.models.checkpoints import ConvertedCheckpoint, read_model_dir, safe_torch_load, write_model_dir
from sr_cli.engine.pipeline import SRModel, UpscaleOptions
from sr_cli.errors import OptionError
from sr_cli.families import FAMILIES, ModelFamily, detect_format, family_of, format_owner
from sr_cli.models.registry import BaseModel, get_spec
from helpers.tiny import make_resshift_files, make_tiny_swin_unet, make_tiny_vq
from helpers.paths import PACKAGE_DIR

PACKAGE = PACKAGE_DIR
CPU = torch.device("cpu")


def test_every_registry_model_resolves_to_its_one_family_object():
    assert registry.family_names() == tuple(FAMILIES)
    assert {"sd-onestep", "lite", "resshift", "s3diff"} <= set(FAMILIES)  # and the families other modules add
    for name, spec in registry.registry().items():
        family = family_of(spec)
        assert isinstance(family, ModelFamily) and family is FAMILIES[spec.family] and family.name == spec.family
        owner = format_owner(spec.format)  # a single-file format is read by the model's own family
        assert owner is None or owner is family, name
    assert format_owner("osediff-pkl") is format_owner("hero-sr-pkl") is FAMILIES["sd-onestep"]
    assert format_owner("resshift-pth") is None  # two files: the family converts the pair itself


def test_sd_family_detects_converts_and_builds_the_published_pickles(tiny_sd, osediff_pkl, hero_pkl):
    family = FAMILIES["sd-onestep"]
    assert detect_format(safe_torch_load(osediff_pkl)) == "osediff-pkl"
    assert detect_format(safe_torch_load(hero_pkl)) == "hero-sr-pkl"
    assert detect_format({"something": 1}) is None
    spec = replace(get_spec("osediff"), base=BaseModel(path=str(tiny_sd)))
    ckpt = family.convert(spec, [osediff_pkl])
    assert ckpt.source_format == "osediff-pkl" and [a.name for a in ckpt.vae_adapters] == ["default_encoder"]
    net = family.build(spec, ckpt, download=False, merge_lora=False)
    state = net.unet.state_dict()
    lora_keys = [k for k in ckpt.component_state("unet") if ".lora_A." in k]
    assert lora_keys and all(torch.equal(state[k], ckpt.tensors[f"unet.{k}"]) for k in lora_keys)
    assert set(family.stages(net)) == {"encode", "unet", "decode"}


def test_resshift_family_converts_its_file_pair_and_builds_the_same_network(tmp_path):
    family = FAMILIES["resshift"]
    unet, vq = make_tiny_swin_unet(), make_tiny_vq()
    files = list(make_resshift_files(tmp_path, "flat", unet, vq))
    ckpt = family.convert(get_spec("sinsr"), files)
    net = family.build(get_spec("sinsr"), ckpt, download=False, merge_lora=True)
    theirs, ours = unet.state_dict(), net.unet.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k in theirs) and len(set(ours) & set(theirs)) > 10
    assert family.conversion_key(files) != family.conversion_key(files[:1])  # keyed by both files
    assert set(family.stages(net)) == {"encode", "unet", "decode"}
    assert family.samplers == ("one-step", "deterministic", "stochastic")


def test_lite_family_round_trips_its_saved_model(tmp_path):
    family = FAMILIES["lite"]
    spec = get_spec("lite")
    ckpt = read_model_dir(spec.weights.path)[1]
    copy = write_model_dir(tmp_path / "lite", {"family": "lite", "format": "srx"}, ckpt)
    again = read_model_dir(copy)[1]
    a = family.build(spec, ckpt, download=False, merge_lora=True).place(CPU, torch.float32)
    b = family.build(spec, again, download=False, merge_lora=True).place(CPU, torch.float32)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and not torch.equal(a(x), x)
    assert set(family.stages(a)) == {"unet"}


def _tiny_resshift_model(tmp_path) -> SRModel:
    family = FAMILIES["resshift"]
    ckpt: ConvertedCheckpoint = family.convert(get_spec("sinsr"), list(make_resshift_files(tmp_path)))
    net = family.build(get_spec("sinsr"), ckpt, download=False, merge_lora=True)
    return SRModel(get_spec("sinsr"), net, CPU, torch.float32)


def test_tile_plans_say_where_tiles_are_cut(tmp_path):
    lr = torch.randint(0, 256, (1, 3, 20, 28), dtype=torch.uint8)
    lite = SRModel(get_spec("lite"), family_of("lite").build(get_spec("lite"), read_model_dir(
        get_spec("lite").weights.path)[1], download=False, merge_lora=True), CPU, torch.float32)
    opts = UpscaleOptions(tile=32, overlap=8).resolved(lite.spec)
    plan = lite.family.plan(lite, lr, opts, (80, 112))
    assert plan.scale == 1 and tuple(plan.source.shape) == (1, 3, 80, 112) and (plan.tile, plan.overlap) == (32, 8)
    assert plan.color_reference() is plan.source and not plan.authors_8bit_levels
    resshift = _tiny_resshift_model(tmp_path)
    opts = UpscaleOptions(tile=32, overlap=8).resolved(resshift.spec)
    plan = resshift.family.plan(resshift, lr, opts, (80, 112))
    # LR space: the LR image and its prior noise, tiles in LR pixels, results x4
    assert plan.scale == 4 and plan.out_channels == 3 and tuple(plan.source.shape) == (1, 6, 20, 28)
    assert (plan.tile, plan.overlap) == (8, 2) and tuple(plan.color_reference().shape) == (1, 3, 80, 112)
    out = plan.tile_fn(plan.source[:, :, :8, :8])
    assert tuple(out.shape) == (1, 3, 32, 32)


def test_engine_errors_name_the_field_and_the_cli_names_the_flag():
    from sr_cli.cli.common import user_message

    spec = get_spec("lite")
    with pytest.raises(OptionError) as e:
        UpscaleOptions(tile_batch=0).resolved(spec)
    assert e.value.field == "tile_batch" and str(e.value) == "tile_batch must be >= 1, got 0"
    assert user_message(e.value) == "--tile-batch must be >= 1, got 0"
    with pytest.raises(OptionError) as e:
        family_of(spec).check_sampler(spec, "deterministic")
    assert user_message(e.value).startswith("--sampler deterministic: lite is a one-step model")
    family_of("resshift").check_sampler(get_spec("sinsr"), "deterministic")  # the ResShift family has it


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "families" not in path.relative_to(PACKAGE).parts:
            yield path, path.read_text(encoding="utf-8")


def test_no_module_outside_the_families_branches_on_a_family():
    branching = re.compile(r"\bfamily\s*(==|!=)|\.family\s+(not\s+)?in\b|[=!]=\s*[\"'](sd-onestep|resshift)[\"']"
                           r"|works_on_lr|hasattr\(net\b|isinstance\(\w*net\w*, *\(?(OneStep|ResShift)")
    found = [f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}" for path, text in _sources()
             for i, line in enumerate(text.splitlines(), 1) if branching.search(line)]
    assert found == []


def test_family_code_imports_nothing_from_the_cli():
    for path in sorted((PACKAGE / "families").glob("*.py")) + sorted((PACKAGE / "engine").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"from \.\.cli|import typer|from rich|import rich", text), path.name


def test_no_module_imports_another_modules_private_name():
    private = re.compile(r"^\s*from \.[\w.]* import .*\b_[a-z]\w*")
    found = [f"{path.relative_to(PACKAGE)}:{i}" for path in sorted(PACKAGE.rglob("*.py"))
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if private.search(line)]
    assert found == []
