"""`srx upscale --device A,B`: one worker process per device, one report, the same files as one device."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_cli.errors import UsageError
from sr_cli.usecases.sharding import device_list

SRX = [sys.executable, "-c", "import sys; from sr_cli.entry import main; sys.exit(main())"]


def _folder(d: Path, n: int, size: int = 24) -> Path:
    d.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray((rng.random((size, size + 4 * i, 3)) * 255).astype(np.uint8)).save(d / f"img{i}.png")
    return d


def _srx(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*SRX, "upscale", *map(str, args)], capture_output=True, text=True, timeout=300, check=False)


def test_device_lists_parse_into_one_worker_per_entry():
    assert device_list("cpu") is None  # one device: the single-process run
    assert device_list("auto") is None
    assert device_list("cpu,cpu") == ["cpu", "cpu"]
    assert device_list(" cpu , cpu ,cpu") == ["cpu", "cpu", "cpu"]


@pytest.mark.parametrize("spec", ["cpu,", "cpu,gpu", "tpu:all", "cpu,cuda:x"])
def test_bad_device_lists_are_usage_errors(spec):
    with pytest.raises(UsageError, match="--device"):
        device_list(spec)


def test_a_bad_device_list_is_one_line_and_exit_2(tmp_path):
    src = _folder(tmp_path / "in", 1)
    r = _srx(src, "-o", tmp_path / "out", "--device", "cpu,warp9")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["error: --device cpu,warp9: 'warp9' is not a device (cpu, cuda:N or mps)"]
    assert not (tmp_path / "out").exists()


def test_two_cpu_workers_write_the_files_of_a_single_run(tmp_path):
    src = _folder(tmp_path / "in", 5)
    (src / "broken.png").write_bytes(b"not a png")
    single = _srx(src, "-o", tmp_path / "one", "--json", "--seed", "1")
    sharded = _srx(src, "-o", tmp_path / "two", "--json", "--seed", "1", "--device", "cpu,cpu")
    assert single.returncode == 1 and sharded.returncode == 1, sharded.stderr  # the broken file fails, only it
    doc = json.loads(sharded.stdout)
    status = {Path(f["input"]).name: f["status"] for f in doc["files"]}
    assert status == {**{f"img{i}.png": "written" for i in range(5)}, "broken.png": "failed"}
    assert doc["totals"]["written"] == 5 and doc["totals"]["failed"] == 1
    assert sharded.stderr.count("error: ") == 1  # one report, each file once
    assert sharded.stderr.count("written ") == 5
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) == [f"img{i}_srx.png" for i in range(5)]
    for name in names:
        a = np.asarray(Image.open(tmp_path / "one" / name))
        b = np.asarray(Image.open(tmp_path / "two" / name))
        assert np.array_equal(a, b), name
    rerun = _srx(src, "-o", tmp_path / "two", "--json", "--device", "cpu,cpu")
    assert json.loads(rerun.stdout)["totals"]["skipped"] == 5


def test_an_interrupted_sharded_run_stops_its_workers_and_leaves_no_partial_file(tmp_path):
    src = _folder(tmp_path / "in", 40, size=96)
    out = tmp_path / "out"
    cmd = [*SRX, "upscale", str(src), "-o", str(out), "--device", "cpu,cpu", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # the first file reported: the workers are converting
    assert first.startswith("written "), first
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    totals = json.loads(stdout)["totals"]
    assert totals["written"] >= 1 and totals["pending"] >= 1 and totals["failed"] == 0
    leftovers = [p for p in out.rglob(".*") if p.name.endswith((".srx-tmp", ".srx-claim"))]
    assert leftovers == []
    written = sorted(out.glob("*_srx.png"))
    for path in written:  # every file there is complete
        assert Image.open(path).size == (4 * Image.open(src / path.name.replace("_srx", "")).size[0], 4 * 96)
    time.sleep(0.5)
    assert [p for p in out.rglob(".*") if p.name.endswith(".srx-tmp")] == []  # no worker writes on afterwards


def test_a_model_the_workers_cannot_load_is_the_error_of_a_single_run(tmp_path):
    src = _folder(tmp_path / "in", 2)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}  # osediff's weights: absent

    def run(*extra):
        return subprocess.run([*SRX, "upscale", str(src), "-o", str(tmp_path / "out"), "--model", "osediff", *extra],
                              capture_output=True, text=True, timeout=120, check=False, env=env)

    single, sharded = run(), run("--device", "cpu,cpu")
    assert single.returncode == 2 and "not in the srx cache" in single.stderr
    assert (sharded.returncode, sharded.stderr) == (single.returncode, single.stderr)
    assert not any((tmp_path / "out").glob("*.png"))
