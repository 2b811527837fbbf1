"""`srx upscale --ray`: the batch as a Ray Data job on a local CPU cluster gives the files of a plain run."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray.data")
pytestmark = pytest.mark.ray

SRX = [sys.executable, "-c", "import sys; from sr_cli.entry import main; sys.exit(main())"]


def _srx(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*SRX, "upscale", *map(str, args)], capture_output=True, text=True, timeout=300,
                          check=False, env=env)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (starting one is most of a run's time); each srx run joins it through
    RAY_ADDRESS as a driver of its own, as on a real cluster. Its workers take the environment the cluster starts
    with, so the Hub cache (empty, offline) is set here. Yields (address, its temp dir, that environment)."""
    import ray

    ray_tmp = Path(tempfile.mkdtemp(prefix="srxray", dir="/tmp"))  # short: Ray's socket paths must fit
    hub = {"HF_HOME": str(ray_tmp / "hf"), "HF_HUB_OFFLINE": "1"}
    saved = {k: os.environ.get(k) for k in hub}
    os.environ.update(hub)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(ray_tmp))
        yield ray.get_runtime_context().gcs_address, ray_tmp, dict(os.environ)
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _drivers(ray_tmp: Path) -> int:
    """How many core-driver logs the cluster holds (each driver that joins writes at least one)."""
    return len(list(ray_tmp.glob("session_*/logs/python-core-driver-*.log")))


def test_a_ray_job_writes_the_files_of_a_plain_run_and_a_rerun_skips(tmp_path, cluster):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray((rng.random((20, 24 + 4 * i, 3)) * 255).astype(np.uint8)).save(src / f"img{i}.png")
    (src / "broken.png").write_bytes(b"not a png")
    Image.open(src / "img1.png").save(src / "img1.jpg")  # the same output as img1.png: the second one fails
    plain = _srx(src, "-o", tmp_path / "plain", "--json")
    address, ray_tmp, environment = cluster
    env = {**environment, "RAY_ADDRESS": address}
    drivers = _drivers(ray_tmp)
    first = _srx(src, "-o", tmp_path / "ray", "--json", "--ray", env=env)
    assert _drivers(ray_tmp) > drivers, "the batch did not run on the Ray cluster"
    assert plain.returncode == 1 and first.returncode == 1, first.stderr  # the broken file fails, only it
    doc = json.loads(first.stdout)
    status = {Path(f["input"]).name: f["status"] for f in doc["files"]}
    assert status == {Path(f["input"]).name: f["status"] for f in json.loads(plain.stdout)["files"]}
    assert sorted(status.values()) == ["failed", "failed", "written", "written", "written"]
    plain_errors = [f["error"].replace(str(tmp_path / "plain"), str(tmp_path / "ray"))
                    for f in json.loads(plain.stdout)["files"] if f["status"] == "failed"]
    assert [f["error"] for f in doc["files"] if f["status"] == "failed"] == plain_errors
    assert sum(line.startswith("written ") for line in first.stderr.splitlines()) == 3  # each file once
    names = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ray").iterdir()) == [f"img{i}_srx.png" for i in range(3)]
    for name in names:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "plain" / name)),
                              np.asarray(Image.open(tmp_path / "ray" / name))), name
    rerun = _srx(src, "-o", tmp_path / "ray", "--json", "--ray", env=env)
    totals = json.loads(rerun.stdout)["totals"]
    assert (totals["skipped"], totals["written"], totals["failed"]) == (3, 0, 2)


def test_a_model_the_actors_cannot_load_is_the_error_of_a_plain_run(tmp_path, cluster):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / "a.png")
    address, _, environment = cluster
    env = {**environment, "RAY_ADDRESS": address}
    plain = _srx(src, "-o", tmp_path / "out", "--model", "osediff", env=env)  # osediff's weights: absent
    on_ray = _srx(src, "-o", tmp_path / "out", "--model", "osediff", "--ray", env=env)
    assert plain.returncode == on_ray.returncode == 2, on_ray.stderr
    assert on_ray.stderr.strip().splitlines()[-1] == plain.stderr.strip().splitlines()[-1]
    assert "not in the srx cache" in plain.stderr
