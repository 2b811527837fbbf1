"""The benchmark module: its figures are consistent (stages add up, FLOPs and rates follow from them)."""

import json

import pytest
import torch

from sr_cli import bench
from sr_cli.engine.tiling import plan_tiles


def test_bench_report_adds_up_and_counts_tiles(capsys):
    bench.main(["--model", "tiny-sd", "--size", "40", "--tile", "64", "--overlap", "16", "--tile-batch", "2",
                "--repeat", "1", "--warmup", "0", "--json-only", "--peer"])
    r = json.loads(capsys.readouterr().out)
    assert r["output"] == [160, 160] and r["tiles"] == len(plan_tiles(160, 160, 64, 16)) == 9
    stages = r["stages_s"]
    assert set(stages) == {"read", "upsample", "encode", "unet", "decode", "model other", "blend+other", "color_fix",
                           "write"}
    assert sum(stages.values()) == pytest.approx(r["total_s"], rel=0.05, abs=0.02)
    inner = stages["encode"] + stages["unet"] + stages["decode"] + stages["model other"]
    assert r["model_s"] == pytest.approx(inner, rel=1e-9)
    assert r["engine_overhead_fraction"] == pytest.approx(1 - r["model_s"] / r["total_s"], rel=1e-6)
    assert r["megapixels_per_s"] == pytest.approx(160 * 160 / 1e6 / r["total_s"], rel=1e-6)
    assert r["flops_per_tile"] > 0
    assert r["achieved_tflops"] == pytest.approx(r["flops_per_tile"] * 9 / r["model_s"] / 1e12, rel=1e-6)
    assert r["peak_host_rss_mb"] > 0 and r["peer"]["speedup"] > 0


def test_reference_style_loop_matches_the_engine_on_one_tile():
    """The peer loop computes the same model output (one tile, no blending): a fair comparison."""
    from sr_cli.engine.pipeline import UpscaleOptions

    model = bench.load_bench_model("tiny-sd", "cpu", "fp32", merge=True)
    unmerged = bench.random_sd("tiny-sd", merge=False)
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = model.upscale_tensor(lr, UpscaleOptions(tile=0, color_fix="none"))
    with torch.inference_mode():
        ref = (bench.reference_style(unmerged, lr, 64, 16, torch.device("cpu"), torch.float32) + 1) / 2
    assert torch.allclose(ours, ref.clamp(0, 1), atol=2e-4)
