from pathlib import Path

import pytest
from helpers.tiny import TINY_REPO, make_hero_sr_pkl, make_osediff_pkl, make_tiny_sd, place_in_hf_cache


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny SD base model directory (diffusers layout)."""
    return make_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def osediff_pkl(tiny_sd, tmp_path_factory) -> Path:
    return make_osediff_pkl(tiny_sd, tmp_path_factory.mktemp("ckpt") / "osediff.pkl")


@pytest.fixture(scope="session")
def hero_pkl(tiny_sd, tmp_path_factory) -> Path:
    return make_hero_sr_pkl(tiny_sd, tmp_path_factory.mktemp("ckpt") / "hero_sr_model.pkl")


@pytest.fixture()
def hf_home(tmp_path, monkeypatch, tiny_sd) -> Path:
    """An offline Hugging Face home whose hub cache holds the tiny base model as ``srx-test/tiny-sd``."""
    import huggingface_hub.constants as c

    home = tmp_path / "hf_home"
    cache = home / "hub"
    place_in_hf_cache(tiny_sd, cache)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SRX_CACHE", raising=False)
    # huggingface_hub reads these at import time: mirror them for the running process.
    monkeypatch.setattr(c, "HF_HOME", str(home))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return home


TINY_BASE_REPO = TINY_REPO


@pytest.fixture(autouse=True, scope="session")
def private_worker_socket(tmp_path_factory):
    """No test hands its `srx upscale` to a warm worker (`srx serve`) the developer may have running: the
    worker socket is looked up under $XDG_RUNTIME_DIR, which points at an empty private folder for the session."""
    import os

    runtime = tmp_path_factory.mktemp("xdg_runtime")
    runtime.chmod(0o700)
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    yield runtime
    if previous is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = previous
