"""Registry parsing, weight sources, sha256 pinning/recording and safe checkpoint loading."""

import os
import pickle

import pytest
import torch

from sr_cli.models import hub
from sr_cli.models.checkpoints import read_published, safe_torch_load
from sr_cli.errors import (CheckpointFormatError, ManifestError, UnknownModelError, WeightsIntegrityError,
                           WeightsMissingError)
from sr_cli.models.registry import get_spec, parse_manifest, registry


def test_packaged_manifest_entries():
    models = registry()
    assert {"osediff", "hero-sr"} <= set(models)
    o, h = models["osediff"], models["hero-sr"]
    assert o.base.repo == "stabilityai/stable-diffusion-2-1-base" and o.defaults.timestep == 999
    assert o.weights.kind == "url" and o.weights.filename == "osediff.pkl"
    assert o.defaults.prompt_template.format(tags="", prompt="") == ", ,"
    assert h.base.repo == "stabilityai/sd-turbo" and h.defaults.timestep == "dtsm"
    assert h.weights.kind == "manual" and "drive.google.com" in h.weights.instructions
    assert "non-commercial" in h.base_license.lower()
    for spec in models.values():
        assert spec.license and spec.paper


def test_unknown_model():
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        get_spec("nope")


@pytest.mark.parametrize("text,message", [
    ("[m]\nfamily='sd-onestep'\n", "missing 'format'"),
    ("[m\n", "not valid TOML"),
    ("[m]\nfamily='sd-onestep'\nformat='x'\ncolour='red'\n", "unknown key"),
    ("[m]\nfamily='gan'\nformat='x'\n", "unknown family"),
    ("[m]\nfamily='sd-onestep'\nformat='x'\n[m.defaults]\ncolor_fix='magic'\n", "color_fix"),
    ("[m]\nfamily='sd-onestep'\nformat='x'\n[m.weights]\nfilename='a.pkl'\n", "needs one of"),
    ("[m]\nfamily='sd-onestep'\nformat='x'\n[m.defaults]\ntimestep='sometimes'\n", "timestep"),
])
def test_bad_manifests(text, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(text)


def _url_spec(sha=None):
    text = "[m]\nfamily='sd-onestep'\nformat='osediff-pkl'\n[m.weights]\nurl='https://example.invalid/w.pkl'\nfilename='w.pkl'\n"
    if sha:
        text += f"sha256='{sha}'\n"
    return parse_manifest(text)["m"]


def test_offline_missing_weights_is_clear(hf_home):
    with pytest.raises(WeightsMissingError, match="not in the srx cache") as e:
        hub.resolve_weights(_url_spec())
    assert "srx models" not in str(e.value)  # "m" is no registry model: no command would fetch it
    with pytest.raises(WeightsMissingError, match=r"run `srx models download sinsr` \(with network access\) or "
                                                  r"`srx models import sinsr SinSR_v1.pth`"):
        hub.resolve_weights(get_spec("sinsr"))


def test_sha256_recorded_then_verified(hf_home, osediff_pkl):
    spec = _url_spec()
    dest = hub.manual_path(spec)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(osediff_pkl.read_bytes())
    assert hub.resolve_weights(spec) == dest
    digest = hub.read_lock()["m/w.pkl"]
    assert digest == hub.sha256_file(osediff_pkl)
    dest.write_bytes(osediff_pkl.read_bytes() + b"tampered")
    with pytest.raises(WeightsIntegrityError, match="sha256 mismatch"):
        hub.resolve_weights(spec)


def test_pinned_sha256_mismatch(hf_home, osediff_pkl):
    spec = _url_spec(sha="0" * 64)
    dest = hub.manual_path(spec)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(osediff_pkl.read_bytes())
    with pytest.raises(WeightsIntegrityError, match="was not used"):
        hub.resolve_weights(spec)


def test_import_weights_records_hash(hf_home, hero_pkl):
    spec = get_spec("hero-sr")
    with pytest.raises(WeightsMissingError, match="srx models import hero-sr"):
        hub.resolve_weights(spec)
    dest = hub.import_weights(spec, hero_pkl)
    assert dest.read_bytes() == hero_pkl.read_bytes()
    assert hub.resolve_weights(spec) == dest
    assert not list(dest.parent.glob("*.part"))


def test_base_model_offline_missing(hf_home):
    from sr_cli.models.registry import BaseModel

    with pytest.raises(WeightsMissingError, match="run srx once with network access, or point --base at") as e:
        hub.resolve_base(BaseModel(repo="nobody/nothing"), "x")
    assert "srx models download" not in str(e.value)  # "x" is no registry model
    with pytest.raises(WeightsMissingError, match="run `srx models download osediff` with network access"):
        hub.resolve_base(get_spec("osediff").base, "osediff")


def test_base_model_found_in_hf_cache(hf_home):
    from helpers.tiny import TINY_COMMIT, TINY_REPO

    from sr_cli.models.registry import BaseModel

    path = hub.resolve_base(BaseModel(repo=TINY_REPO), "x")
    assert path.name == TINY_COMMIT and (path / "unet" / "config.json").is_file()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_weights_only_refuses_code(tmp_path):
    bad = tmp_path / "evil.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"rank_unet": 4, "payload": _Exploit()}, f)
    with pytest.raises(CheckpointFormatError, match="refused to load"):
        safe_torch_load(bad)


def test_not_a_checkpoint(tmp_path):
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="empty.pkl"):
        safe_torch_load(empty)
    plain = tmp_path / "plain.pkl"
    torch.save({"something": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointFormatError, match="not a OSEDiff checkpoint"):
        read_published(plain, "osediff-pkl")


def test_wrong_format_detected(hero_pkl):
    with pytest.raises(CheckpointFormatError, match="hero-sr-pkl checkpoint, expected osediff-pkl"):
        read_published(hero_pkl, "osediff-pkl")


def test_osediff_conversion_layout(osediff_pkl):
    ckpt = read_published(osediff_pkl, "osediff-pkl")
    assert [a.name for a in ckpt.unet_adapters] == ["default_encoder", "default_decoder", "default_others"]
    assert [a.name for a in ckpt.vae_adapters] == ["default_encoder"]
    assert all(a.rank == 4 and a.alpha == 8 for a in ckpt.unet_adapters + ckpt.vae_adapters)
    vae_targets = ckpt.vae_adapters[0].target_modules
    assert len(vae_targets) == len(set(vae_targets)) and "quant_conv" in vae_targets
    assert not any("decoder" in t or "post_quant" in t for t in vae_targets)
    assert "conv_in" in ckpt.unet_adapters[0].target_modules
    assert "unet.conv_in.base_layer.weight" in ckpt.tensors


def test_hero_conversion_reads_dtsm_shape(hero_pkl):
    ckpt = read_published(hero_pkl, "hero-sr-pkl")
    assert ckpt.dtsm == {"timesteps": [1] + list(range(9, 1000, 10)), "channels": 8, "num_blocks": 2,
                         "pool_size": 7, "hidden": 16}
    assert [a.name for a in ckpt.unet_adapters] == ["default"] and ckpt.unet_adapters[0].rank == 16
    assert [a.name for a in ckpt.vae_adapters] == ["vae"]
