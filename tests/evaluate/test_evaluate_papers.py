"""The papers' numbers: every registry model with published results has its rows, and (with the real
weights and the benchmark in the local cache) `srx evaluate` reproduces the papers' PSNR/SSIM."""

import json

import pytest
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.errors import SrxError
from sr_cli.evaluate.report import PAPER_METHODS, paper_values

runner = CliRunner()

# Models whose weights are public and whose papers' tables are in paper_numbers.csv. Hero-SR is not here:
# its paper's result tables are images, so no numbers of it are recorded.
REPRODUCIBLE = ("osediff", "sinsr", "resshift")


@pytest.mark.parametrize("name", REPRODUCIBLE)
@pytest.mark.parametrize("dataset", ["RealSR", "DRealSR"])
def test_each_reproducible_model_has_the_papers_full_reference_numbers(name, dataset):
    method, values, source = paper_values(name, dataset)
    assert method == PAPER_METHODS[name] and source
    assert {"psnr", "ssim", "lpips"} <= set(values)
    assert 20 < values["psnr"] < 35 and 0.5 < values["ssim"] < 1


def test_paper_rows_match_the_osediff_table():
    """OSEDiff's Table 1 (as in the paper's text): its own row on DRealSR and RealSR."""
    assert paper_values("osediff", "DRealSR")[1] == pytest.approx(
        {"psnr": 27.92, "ssim": 0.7835, "lpips": 0.2968, "dists": 0.2165, "fid": 135.30, "niqe": 6.4902,
         "musiq": 64.65, "maniqa": 0.5899, "clipiqa": 0.6963})
    _, realsr, _ = paper_values("osediff", "RealSR")
    assert (realsr["psnr"], realsr["ssim"]) == (25.15, 0.7341)
    from sr_cli.evaluate.report import paper_numbers

    assert all(".txt" not in row["source"] for row in paper_numbers())  # sources are papers, not local files


def _missing_real_files(name: str) -> str | None:
    """Why the real weights of ``name`` (and its base or autoencoder) are not usable offline; None when they are."""
    from sr_cli.models import hub
    from sr_cli.models.registry import get_spec

    spec = get_spec(name)
    try:
        hub.resolve_weights(spec, download=False)
        if spec.base is not None:
            hub.resolve_base(spec.base, name, download=False)
        if spec.autoencoder is not None:
            hub.resolve_weights(hub.autoencoder_spec(spec), download=False)
    except SrxError as e:
        return str(e)
    return None


@pytest.mark.real_weights
@pytest.mark.parametrize("name", REPRODUCIBLE)
def test_the_papers_psnr_ssim_on_drealsr_are_reproduced(name):
    """`srx evaluate --dataset drealsr --model NAME`: PSNR within 0.1 dB and SSIM within 0.002 of the paper.

    The authors ran in fp16 on a GPU (OSEDiff's test script default); on a CPU, fp32.
    """
    pytest.importorskip("pyiqa")
    import torch

    from sr_cli.evaluate.datasets import resolve_dataset

    missing = _missing_real_files(name)
    if missing:
        pytest.skip(f"{name}: {missing}")
    try:
        resolve_dataset("drealsr", download=False)
    except SrxError as e:
        pytest.skip(str(e))
    dtype = "fp16" if torch.cuda.is_available() else "fp32"
    r = runner.invoke(app, ["evaluate", "--dataset", "drealsr", "--model", name, "--metrics", "psnr,ssim",
                            "--dtype", dtype, "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    ours, paper = doc["systems"][0]["mean"], doc["paper"]["values"]
    assert doc["systems"][0]["images_scored"] == 93
    assert ours["psnr"] == pytest.approx(paper["psnr"], abs=0.1)
    assert ours["ssim"] == pytest.approx(paper["ssim"], abs=0.002)


def test_the_table_says_when_no_paper_numbers_are_recorded(tmp_path):
    from rich.console import Console

    from sr_cli.evaluate.report import summary_table
    from sr_cli.evaluate.runner import ImageResult, SystemResult

    def table_text(system: str) -> str:
        import io

        result = SystemResult(system, "drealsr", tmp_path, {}, [ImageResult("im0", {"psnr": 27.0})])
        console = Console(width=200, file=io.StringIO())
        console.print(summary_table([result], ["psnr"], "DRealSR", {}))
        return " ".join(console.file.getvalue().split())  # the caption wraps at the table's width

    assert "no paper numbers recorded for hero-sr on DRealSR" in table_text("hero-sr")
    osediff = table_text("osediff")
    assert "paper: OSEDiff-s1 (OSEDiff paper (arXiv:2406.08177) Tables 1 and 7)" in osediff
    assert "27.92" in osediff and "-0.92" in osediff
