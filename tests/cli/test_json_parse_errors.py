"""`--json` promises one JSON document on stdout, even when the command line itself does not parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_srx(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "sr_cli.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, option", [
    (["upscale", "a.png", "--tile", "abc", "--json"], "--tile"),
    (["upscale", "a.png", "--no-such-flag", "--json"], "--no-such-flag"),
    (["evaluate", "--limit", "abc", "--json"], "--limit"),
])
def test_unparsable_command_line_under_json_prints_an_error_document(tmp_path, args, option):
    result = run_srx(*args, cwd=tmp_path)
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert set(doc) == {"error"} and option in doc["error"]
    assert "Traceback" not in result.stderr and option in result.stderr


def test_unparsable_command_line_without_json_keeps_stdout_empty(tmp_path):
    result = run_srx("upscale", "a.png", "--tile", "abc", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--tile" in result.stderr
