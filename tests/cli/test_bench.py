"""The benchmark module: its figures are consistent (stages add up, FLOPs and rates follow from them)."""

import json

import pytest
import torch

from sr_cli import bench
from sr_cli.bench.models import random_sd
from sr_cli.bench.peer import reference_style
from sr_cli.cli.bench import main as bench_main
from sr_cli.engine.tiling import plan_tiles


def test_bench_report_adds_up_and_counts_tiles(capsys):
    bench_main(["--model", "tiny-sd", "--size", "40", "--tile", "64", "--overlap", "16", "--tile-batch", "2",
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
    io = stages["read"] + stages["write"]
    assert r["engine_overhead_fraction_without_io"] == pytest.approx(
        r["engine_overhead_fraction"] - io / r["total_s"], rel=1e-6, abs=1e-9)
    assert r["megapixels_per_s"] == pytest.approx(160 * 160 / 1e6 / r["total_s"], rel=1e-6)
    assert r["flops_per_tile"] > 0
    assert r["achieved_tflops"] == pytest.approx(r["flops_per_tile"] * 9 / r["model_s"] / 1e12, rel=1e-6)
    assert r["peak_host_rss_mb"] > 0 and r["peer"]["speedup"] > 0


def test_reference_style_loop_matches_the_engine_on_one_tile():
    """The peer loop computes the same model output (one tile, no blending): a fair comparison."""
    from sr_cli.engine.pipeline import UpscaleOptions

    model = bench.load_bench_model("tiny-sd", "cpu", "fp32", merge=True)
    unmerged = random_sd("tiny-sd", merge=False)
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = model.upscale_tensor(lr, UpscaleOptions(tile=0, color_fix="none"))
    with torch.inference_mode():
        ref = (reference_style(unmerged, lr, 64, 16, torch.device("cpu"), torch.float32) + 1) / 2
    assert torch.allclose(ours, ref.clamp(0, 1), atol=2e-4)


@pytest.mark.parametrize("model_name", ["lite", "tiny-sd"])
def test_channels_last_gives_the_same_output(model_name, monkeypatch):
    """The memory format is a speed choice only: forced on and off, the engine's output agrees."""
    from sr_cli.engine.devices import use_channels_last
    from sr_cli.engine.pipeline import UpscaleOptions

    lr = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    outs = {}
    for forced in ("0", "1"):
        monkeypatch.setenv("SRX_CHANNELS_LAST", forced)
        model = bench.load_bench_model(model_name, "cpu", "fp32")
        conv = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (forced == "1")
        outs[forced] = model.upscale_tensor(lr, UpscaleOptions(tile=64, overlap=16, color_fix="none"))
    assert outs["0"].shape == (1, 3, 160, 144)
    assert torch.allclose(outs["0"], outs["1"], atol=1e-5)
    monkeypatch.delenv("SRX_CHANNELS_LAST")
    cpu = torch.device("cpu")
    assert use_channels_last(cpu, "lite") and use_channels_last(cpu, "vae") and not use_channels_last(cpu, "unet")


def test_host_allocator_tuning_can_be_turned_off(monkeypatch):
    import platform
    import sys

    from sr_cli.hostmem import tune_host_allocator

    monkeypatch.setenv("SRX_TUNE_MALLOC", "0")
    assert tune_host_allocator() is False
    monkeypatch.setenv("SRX_TUNE_MALLOC", "1")
    assert tune_host_allocator() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def test_srx_bench_declares_its_options_as_the_other_commands_do():
    """`srx bench` is a Typer command: its options are listed by --help, and those it shares with `srx upscale`
    are the same declarations (same flags, same help)."""
    import typer
    from typer.testing import CliRunner

    from sr_cli.cli import app

    group = typer.main.get_command(app)

    def options(command):
        return {p.opts[0]: p for p in group.get_command(typer.Context(group), command).params}

    ours, upscale = options("bench"), options("upscale")
    for flag in ("--model", "--device", "--dtype", "--tile", "--overlap", "--tile-batch", "--color-fix", "--compile",
                 "--prompt-extractor", "--pixel-guidance", "--semantic-guidance"):
        assert ours[flag].opts == upscale[flag].opts and ours[flag].help == upscale[flag].help, flag
    own = ("--size", "--image", "--repeat", "--warmup", "--channels-last", "--no-flops", "--peer", "--sweep-tile-batch",
           "--peak-tflops", "--memory-scaling", "--scaling-sizes", "--json", "--json-only")
    assert set(own) <= set(ours)
    shown = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert shown.exit_code == 0 and all(flag in shown.output for flag in own)


def test_srx_bench_command_forwards_its_arguments():
    from typer.testing import CliRunner

    from sr_cli.cli import app

    res = CliRunner().invoke(app, ["bench", "--model", "tiny-sd", "--size", "24", "--repeat", "1", "--warmup", "0",
                                   "--json-only", "--no-flops", "--channels-last", "off"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["model"] == "tiny-sd" and r["output"] == [96, 96] and r["flops_per_tile"] is None


def test_tile_batch_sweep_reports_the_best_and_the_fraction_of_a_given_peak(capsys):
    bench_main(["--model", "tiny-sd", "--size", "40", "--tile", "64", "--overlap", "16", "--sweep-tile-batch", "1",
                "--sweep-tile-batch", "3", "--repeat", "1", "--warmup", "0", "--json-only", "--peak-tflops", "2.0"])
    r = json.loads(capsys.readouterr().out)
    assert set(r["sweep"]) == {"1", "3"}
    best = min(r["sweep"].values(), key=lambda row: row["model_ms_per_tile"])
    assert r["model_ms_per_tile"] == best["model_ms_per_tile"]
    assert r["model_ms_per_tile"] == pytest.approx(1000 * r["model_s"] / r["tiles"], rel=1e-9)
    assert r["tile_batch"] in (1, 3) and r["peak_tflops"] == 2.0
    assert r["fraction_of_peak"] == pytest.approx(r["achieved_tflops"] / 2.0, rel=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--model", "nope"], "--model 'nope': not tiny-sd, sd21, resshift-v1, a registry model"),
    (["--size", "0"], "argument --size: must be at least 1, got 0"),
    (["--repeat", "0"], "argument --repeat: must be at least 1, got 0"),
    (["--image", "{tmp}/missing.png"], "{tmp}/missing.png: no such file"),
    (["--image", "{tmp}/empty.png"], "{tmp}/empty.png: the file is empty (0 bytes)"),
    (["--image", "{tmp}/notes.txt"], "{tmp}/notes.txt: not an image Pillow can read"),
    (["--json", "{tmp}/no/such/folder/r.json"], "--json {tmp}/no/such/folder/r.json: the folder"),
    (["--json", "{tmp}"], "--json {tmp}: is a folder"),
    (["--json", "/proc/srx-bench.json"], "--json /proc/srx-bench.json: cannot write"),
])
def test_bench_user_errors_are_one_line_and_exit_2(args, message, tmp_path, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image\n")
    with pytest.raises(SystemExit) as exit_info:
        bench_main([a.format(tmp=tmp_path) for a in args] + ["--size", "8"] * ("--size" not in args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: " + message.format(tmp=tmp_path)), err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("before", [None, "1"])
def test_bench_channels_last_choice_does_not_outlive_the_run(before, monkeypatch, capsys):
    # A forced memory format left in os.environ changes later conversions in the same process and in every
    # subprocess it starts (float rounding differs between memory formats and thread counts).
    import os

    if before is None:
        monkeypatch.delenv("SRX_CHANNELS_LAST", raising=False)
    else:
        monkeypatch.setenv("SRX_CHANNELS_LAST", before)
    bench_main(["--model", "lite", "--size", "16", "--repeat", "1", "--warmup", "0", "--json-only", "--no-flops",
                "--channels-last", "off"])
    assert json.loads(capsys.readouterr().out)["output"] == [64, 64]
    assert os.environ.get("SRX_CHANNELS_LAST") == before
