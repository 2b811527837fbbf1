"""Start-up: a command imports only what it uses, so a call of ``srx`` per file from a shell loop does not pay for the
diffusion libraries when the model needs none of them (the default, lite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

DIFFUSION_LIBRARIES = {"diffusers", "transformers", "peft", "accelerate"}

# The `srx` executable's entry point, then the top-level packages the process holds, as the last line of stdout.
RUN_AND_LIST_MODULES = """
import json, sys
sys.argv = ["srx", *sys.argv[1:]]
from sr_cli.entry import main
try:
    main()
    code = 0
except SystemExit as e:
    code = e.code or 0
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}))
"""


def run_srx(*args: str, cwd, tmp_path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", SRX_CACHE=str(tmp_path / "srx-cache"))
    p = subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["packages"] = {name.split(".")[0] for name in result["modules"]}
    return result


def test_upscale_with_the_default_model_imports_no_diffusion_library(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    result = run_srx("upscale", "tiny.png", "-o", "out.png", "-q", cwd=tmp_path, tmp_path=tmp_path)
    assert result["exit"] == 0
    assert Image.open(tmp_path / "out.png").size == (256, 256)  # the model ran (x4)
    assert "torch" in result["packages"]
    assert DIFFUSION_LIBRARIES.isdisjoint(result["packages"]), DIFFUSION_LIBRARIES & result["packages"]
    assert "sr_cli.engine.dape" not in result["modules"]  # OSEDiff's tagger: code lite never runs


def test_listing_and_describing_models_imports_no_torch(tmp_path):
    for command in (["models", "list"], *(["models", "info", model] for model in ("lite", "osediff", "sinsr"))):
        result = run_srx(*command, cwd=tmp_path, tmp_path=tmp_path)
        assert result["exit"] == 0
        assert {"torch", *DIFFUSION_LIBRARIES}.isdisjoint(result["packages"]), (command, result["packages"])


def test_the_diffusion_libraries_are_quieted_when_first_imported_not_before():
    code = ("import sys\n"
            "from sr_cli.models.loading import quiet_libraries\n"
            "quiet_libraries()\n"
            "print('diffusers' in sys.modules, 'transformers' in sys.modules)\n"
            "from diffusers.utils import logging as d\n"
            "from transformers.utils import logging as t\n"
            "print(d.get_verbosity(), d.is_progress_bar_enabled(), t.get_verbosity(), t.is_progress_bar_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "40", "False", "40", "False"]  # logging.ERROR, no progress bars
