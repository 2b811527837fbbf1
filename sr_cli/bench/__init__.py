"""Speed and memory benchmark of the engine, run by ``srx bench`` (``sr_cli/cli/bench.py``; also
``python -m sr_cli.bench``).

For a model config (``lite``, ``tiny-sd``, ``sd21`` = an SD 2.1-base-size one-step model with random weights
and OSEDiff's LoRA layout, or any registry name / model directory) and an input size, prints per-stage times
(read, upsample, encode, UNet, decode, blend + other engine work, color fix, write), images/s and
megapixels/s, achieved TFLOP/s of the model's forward passes (FLOPs counted with torch's FlopCounterMode on
one tile), and peak memory (host RSS; GPU allocated on CUDA). ``--memory-scaling`` runs two output sizes in
fresh processes and compares their peaks; ``--peer`` times the same model and image through a plain
reference-style loop (tile by tile, batch 1, LoRA unmerged) beside srx.

Timing of stages uses forward hooks on the model's modules (synchronized on CUDA): the engine is measured
as it runs for users, with no benchmark-only code path.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from ..engine.pipeline import UpscaleOptions
from ..errors import SrxError
from ..io.fsio import write_text
from .models import RANDOM_CONFIGS, random_sd, synthetic_image
from .peer import peer_comparison
from .report import print_report

# Dense fp16/bf16 tensor-core peaks (TFLOP/s, vendor datasheets) for the achieved fraction of peak;
# matched against torch.cuda.get_device_name in this order. --peak-tflops gives any other device's.
PEAK_HALF_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("H800", 989.4), ("A100", 312.0),
                    ("L40S", 362.1), ("A10G", 70.0))


RANDOM_WEIGHTS = ("tiny-sd", "sd21", "resshift-v1")  # the --model names built here with random weights


@dataclass(frozen=True)
class BenchSettings:
    """What one benchmark run measures (``srx bench``'s options)."""

    model: str = "lite"  # a random-weights config (RANDOM_WEIGHTS), a registry name or a model directory
    size: int = 512  # input side in pixels
    image: Path | None = None  # a photograph to crop the input from (None: a synthetic image)
    options: UpscaleOptions = UpscaleOptions()  # the engine's settings, as `srx upscale` takes them
    device: str = "auto"
    dtype: str = "auto"
    repeat: int = 2  # timed runs (the fastest is reported)
    warmup: int = 1  # untimed runs before them
    compile_unet: bool = False
    channels_last: str = "auto"  # auto | on | off
    count_flops: bool = True
    peer: bool = False  # also time a reference-style loop
    sweep_tile_batch: tuple[int, ...] = ()  # run at each of these tile batches (one loaded model)
    peak_tflops: float | None = None  # the device's peak (None: known data-centre GPUs only)
    memory_scaling: bool = False  # also compare peak memory at scaling_sizes, in fresh processes
    scaling_sizes: tuple[int, int] = (256, 1024)
    json_file: Path | None = None  # also write the report there
    json_only: bool = False  # print only the JSON report


# ----------------------------------------------------------------------------- models


def load_bench_model(name: str, device: str, dtype: str, merge: bool = True, prompt_extractor: str | None = None):
    """An SRModel for ``name``: a random config (sd21, tiny-sd) or anything ``load_model`` accepts."""
    from ..engine.devices import resolve_device, resolve_dtype
    from ..engine.pipeline import SRModel
    from ..models.loading import load_model
    from ..models.registry import get_spec

    dev = resolve_device(device)
    if name == "resshift-v1":  # SinSR/ResShift architecture (118.6M Swin-UNet + 55.3M VQ-f4), random weights
        from ..engine.resshift import ResShiftSchedule, ResShiftSR
        from ..nets.swin_unet import SwinUNet
        from ..nets.vqgan import build_vq_model

        torch.manual_seed(0)
        net = ResShiftSR(SwinUNet(), build_vq_model(), ResShiftSchedule()).eval().requires_grad_(False)
        return SRModel(replace(get_spec("sinsr"), name=name), net, dev, resolve_dtype(dtype, dev))
    if name not in RANDOM_CONFIGS:
        return load_model(name, device=device, dtype=dtype, merge_lora=merge, prompt_extractor=prompt_extractor)
    spec = get_spec("osediff")  # OSEDiff's defaults: t = 999, adain, 512/64 tiles
    spec = replace(spec, name=name, defaults=replace(spec.defaults, text_condition="learned"))
    return SRModel(spec, random_sd(name, merge), dev, resolve_dtype(dtype, dev))


# ----------------------------------------------------------------------------- measuring


class StageClock:
    """Wall time spent inside given modules (forward hooks), synchronized on CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._handles = []
        self._start: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def watch(self, stage: str, module: torch.nn.Module) -> None:
        def pre(_m, _a):
            self._sync()
            self._start[stage] = time.perf_counter()

        def post(_m, _a, _o):
            self._sync()
            self.seconds[stage] += time.perf_counter() - self._start.pop(stage)
            self.calls[stage] += 1

        self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def model_stages(model) -> dict[str, torch.nn.Module]:
    """The model's stages worth timing apart, as its family names them (encode / UNet / decode, or the UNet)."""
    return model.family.stages(model.net)


MODEL = "model forward"  # the whole one-step forward of a tile batch (its stages above are inside it)


def tile_flops(model, tile: int) -> float | None:
    """FLOPs of one forward pass of the model on one ``tile``-sized input (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    run = model.family.flops_call(model, tile)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            run()
    except Exception:  # noqa: BLE001 - an op the counter cannot trace: report no FLOPs
        return None
    return float(counter.get_total_flops())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def photo_crop(image: Path, dest: Path, size: int) -> Path:
    """A centre crop of a real photograph (resized up first if smaller), saved as PNG."""
    im = Image.open(image).convert("RGB")
    if min(im.size) < size:
        f = size / min(im.size)
        im = im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.LANCZOS)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    im.crop((left, top, left + size, top + size)).save(dest)
    return dest


def run_once(model, src: Path, dest: Path, options) -> dict:
    """One user-visible upscale (read -> engine -> write) with stage times."""
    from ..engine.color import apply_color_fix
    from ..engine.resize import output_size, upsample_input
    from ..io.imageio import encode_image, read_image, write_atomic

    opts = options.resolved(model.spec)
    clock = StageClock(model.device)
    clock.watch(MODEL, model.net)
    for stage, module in model_stages(model).items():
        clock.watch(stage, module)
    tiles = [0]
    try:
        t0 = time.perf_counter()
        image = read_image(src)
        t1 = time.perf_counter()
        sr = model.upscale_tensor(image.model_input, opts, on_tile=lambda done, total: tiles.__setitem__(0, total))
        t2 = time.perf_counter()
        write_atomic(dest, encode_image(sr, None, "PNG"), overwrite=True)
        t3 = time.perf_counter()
    finally:
        clock.close()
    # Stages inside upscale_tensor that are not model forwards, timed on their own with the same functions.
    h, w = output_size(image.color.shape[-2], image.color.shape[-1], model.native_scale)
    t = time.perf_counter()
    reference = upsample_input(image.model_input, h, w)  # the 8-bit path for 8-bit images, as upscale_tensor
    upsample = time.perf_counter() - t
    t = time.perf_counter()
    apply_color_fix(opts.color_fix, sr, reference)
    color = time.perf_counter() - t if opts.color_fix != "none" else 0.0
    seconds = dict(clock.seconds)
    model_s = seconds.pop(MODEL)
    inner = {k: v for k, v in seconds.items()}
    inner["model other"] = max(0.0, model_s - sum(inner.values()))  # latent formula, (un)shuffle, casts
    engine = (t2 - t1) - model_s
    stages = {"read": t1 - t0, "upsample": upsample, **inner,
              "blend+other": max(0.0, engine - upsample - color), "color_fix": color, "write": t3 - t2}
    return {"stages": stages, "total": t3 - t0, "model": model_s, "tiles": tiles[0], "out_size": [w, h],
            "overhead_fraction": (t3 - t0 - model_s) / (t3 - t0)}


def peak_tflops(model, override: float | None) -> float | None:
    """The device's dense half-precision peak, when it is known and the model runs in fp16/bf16."""
    if override:
        return override
    if model.device.type != "cuda" or model.dtype not in (torch.float16, torch.bfloat16):
        return None
    name = torch.cuda.get_device_name(model.device)
    return next((peak for key, peak in PEAK_HALF_TFLOPS if key in name), None)


def model_for(args: BenchSettings):
    model = load_bench_model(args.model, args.device, args.dtype, prompt_extractor=args.options.prompt_extractor)
    if args.compile_unet:
        model.compile_unet()
    return model


def bench(args: BenchSettings, model=None) -> dict:
    model = model or model_for(args)
    options = args.options
    opts = options.resolved(model.spec)
    with tempfile.TemporaryDirectory() as tmp:
        src = photo_crop(args.image, Path(tmp) / "in.png", args.size) if args.image else \
            synthetic_image(Path(tmp) / "in.png", args.size)
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(model.device)
        runs = [run_once(model, src, Path(tmp) / "out.png", options) for _ in range(args.warmup + args.repeat)]
    timed = runs[args.warmup:]
    best = min(timed, key=lambda r: r["total"])
    tile_px = min(opts.tile or 10**9, best["out_size"][0], best["out_size"][1])
    flops = tile_flops(model, tile_px) if args.count_flops else None
    w, h = best["out_size"]
    report = {
        "model": args.model, "device": str(model.device), "dtype": str(model.dtype).replace("torch.", ""),
        "input": [args.size, args.size], "output": [w, h], "tile": opts.tile, "overlap": opts.overlap,
        "tile_batch": opts.tile_batch, "tiles": best["tiles"], "repeat": args.repeat,
        "stages_s": best["stages"], "total_s": best["total"], "model_s": best["model"],
        "engine_overhead_fraction": best["overhead_fraction"],
        # The same without reading and writing the files: the engine's own work between the model's passes.
        "engine_overhead_fraction_without_io": (best["total"] - best["model"] - best["stages"]["read"]
                                                - best["stages"]["write"]) / best["total"],
        "images_per_s": 1 / best["total"], "megapixels_per_s": w * h / 1e6 / best["total"],
        "flops_per_tile": flops,
        "achieved_tflops": (flops * best["tiles"] / best["model"] / 1e12) if flops and best["model"] else None,
        "model_ms_per_tile": 1000 * best["model"] / max(1, best["tiles"]),
        "peak_tflops": peak_tflops(model, args.peak_tflops),
        "peak_host_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(model.device) / 2**20 if model.device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
    }
    if report["achieved_tflops"] and report["peak_tflops"]:
        report["fraction_of_peak"] = report["achieved_tflops"] / report["peak_tflops"]
    if args.peer:
        report["peer"] = peer_comparison(args, model, report)
    return report


def sweep_tile_batch(args: BenchSettings) -> dict:
    """The same benchmark at several tile batches (one loaded model); the best by model time per tile."""
    model = model_for(args)
    runs = {}
    for tb in args.sweep_tile_batch:
        runs[tb] = bench(replace(args, options=replace(args.options, tile_batch=tb), peer=False), model)
    best = min(runs, key=lambda tb: runs[tb]["model_ms_per_tile"])
    report = dict(runs[best])
    report["sweep"] = {str(tb): {"model_ms_per_tile": r["model_ms_per_tile"], "total_s": r["total_s"],
                                 "achieved_tflops": r["achieved_tflops"], "peak_gpu_mb": r["peak_gpu_mb"]}
                       for tb, r in runs.items()}
    if args.peer:
        report["peer"] = peer_comparison(args, model, report)
    return report


# ----------------------------------------------------------------------------- memory scaling


def memory_scaling(args: BenchSettings) -> dict:
    """Peak memory at two output sizes, each in a fresh process (peaks are per process)."""
    small, large = args.scaling_sizes
    out = {}
    for size in (small, large):
        cmd = [sys.executable, "-m", "sr_cli.bench", "--model", args.model, "--size", str(size), "--repeat", "1",
               *(["--image", str(args.image)] if args.image else []),
               "--warmup", "0", "--device", args.device, "--dtype", args.dtype, "--no-flops", "--json-only"]
        if args.options.tile is not None:
            cmd += ["--tile", str(args.options.tile)]
        if args.options.tile_batch is not None:
            cmd += ["--tile-batch", str(args.options.tile_batch)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[size] = json.loads(res.stdout)
    a, b = out[small], out[large]
    doc = {"sizes": [small, large], "outputs": [a["output"], b["output"]],
           "peak_host_rss_mb": [a["peak_host_rss_mb"], b["peak_host_rss_mb"]],
           "host_growth_mb": b["peak_host_rss_mb"] - a["peak_host_rss_mb"],
           "total_s": [a["total_s"], b["total_s"]]}
    if a.get("peak_gpu_mb") is not None:
        doc["peak_gpu_mb"] = [a["peak_gpu_mb"], b["peak_gpu_mb"]]
        doc["gpu_growth_mb"] = b["peak_gpu_mb"] - a["peak_gpu_mb"]
    return doc


# ----------------------------------------------------------------------------- the run


def run(args: BenchSettings) -> None:
    """Measure as ``args`` says and print the report (a table, or JSON with ``json_only``)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from ..hostmem import tune_host_allocator

    tune_host_allocator()  # as the srx command does
    previous = os.environ.get("SRX_CHANNELS_LAST")
    if args.channels_last != "auto":  # read by engine.devices.use_channels_last (and inherited by subprocesses)
        os.environ["SRX_CHANNELS_LAST"] = "1" if args.channels_last == "on" else "0"
    try:
        _measure_and_report(args)
    finally:  # a bench run inside a longer-lived process (tests, notebooks) leaves the memory format as it found it
        if previous is None:
            os.environ.pop("SRX_CHANNELS_LAST", None)
        else:
            os.environ["SRX_CHANNELS_LAST"] = previous


def _measure_and_report(args: BenchSettings) -> None:
    from ..models.loading import quiet_libraries

    quiet_libraries()
    report = sweep_tile_batch(args) if args.sweep_tile_batch else bench(args)
    if args.memory_scaling:
        report["memory_scaling"] = memory_scaling(args)
    if args.json_file:
        try:
            write_text(args.json_file, json.dumps(report, indent=2))  # atomic: never a half-written report
        except OSError as e:
            raise SrxError(f"--json {args.json_file}: cannot write ({e.strerror or e})") from None
    if args.json_only:
        print(json.dumps(report))
    else:
        print_report(report)
