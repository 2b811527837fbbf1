"""Teacher targets for distilling ``lite``: computed once, kept as paired training folders.

A sharp teacher (``teachers.py``) is far too slow to run at every training step on a CPU (Real-ESRGAN x4plus:
~2 s per 80x80 LR patch on 2 cores), so its outputs are made once and cached as paired sets (``HR/`` +
``LR/``, the layout ``CropDataset`` reads) in one folder (by default inside the run's output folder):

* ``teacher/``: LR = Real-ESRGAN's second-order degradation of a random photo crop (8-bit, as saved files are),
  HR = the teacher's output for that LR. The teacher runs on the LR patch plus ``context`` pixels on every
  side and only the centre is kept, so the targets carry far less of the teacher's border effects (Real-ESRGAN's
  output still depends on more than 20 LR pixels of context: the outermost band keeps a little of them).
* ``mild/``: as ``teacher/`` with a camera-like degradation (the same blurs and resizes, little noise, high JPEG
  qualities, rarely ringing): camera LR images (RealSR, DRealSR) are blurry but clean, which the full
  Real-ESRGAN recipe, made for heavily processed web images, seldom draws — without them the student learns
  to deblur only what is also noisy.
* ``clean/``: LR = plain antialiased bicubic x1/4 of a crop, HR = the crop itself, so that clean inputs are
  learnt from the truth (the teacher over-sharpens them) and keep lite's fidelity on them.

Every draw of patch ``i`` derives from ``(seed, i)``: an interrupted build resumes where it stopped and a
rebuild gives the same files. ``targets.json`` records what the cache was built from; another teacher or other
settings over an existing cache are a usage error, never a silent mix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UsageError
from ..io.fsio import atomic_write, write_text
from .data import list_images, step_generator

MANIFEST = "targets.json"
CLEAN = "clean"  # the set of clean pairs (bicubic LR -> the photo itself)


@dataclass(frozen=True)
class TargetPlan:
    teacher: str | None  # the teacher's ident (file digest included); None: read the cache as it is
    patches: int  # teacher patches (degraded LR -> teacher output)
    clean: int  # clean patches (bicubic LR -> the photo itself)
    mild: int = 0  # camera-like degraded LR patches -> teacher output
    lr_size: int = 64  # LR side of a kept patch (HR side: 4x)
    context: int = 8  # LR pixels around a patch that the teacher sees but that are not kept
    seed: int = 0
    scale: int = 4
    candidates: int = 1  # crops drawn per patch (every set); the one with the most edge energy is kept

    @staticmethod
    def for_share(teacher: str | None, patches: int, clean_share: float, mild: int = 0, **kw) -> "TargetPlan":
        """``clean_share`` of all pairs clean, the rest ``patches`` + ``mild`` teacher pairs."""
        if not 0 <= clean_share < 1:
            raise UsageError(f"--clean-share must be in [0, 1), got {clean_share}")
        clean = round((patches + mild) * clean_share / (1 - clean_share))
        return TargetPlan(teacher, patches, clean, mild=mild, **kw)


# Camera-like degradation: Real-ESRGAN's blurs and resizes with sensor-level noise (at most 2 levels of 255; a
# stronger one teaches the student to smooth camera LR, which has almost none), high JPEG qualities and few
# ringing filters. Recorded in targets.json: a cache made with another recipe is refused.
MILD = dict(sinc_prob=0.0, sinc_prob2=0.0, final_sinc_prob=0.2, noise_range=(0.5, 2.0), noise_range2=(0.5, 2.0),
            poisson_scale_range=(0.05, 0.2), poisson_scale_range2=(0.05, 0.2), jpeg_range=(85, 98),
            jpeg_range2=(85, 98))

# Camera degradation matched to measured camera LR: benchmarks/blur_fit.py finds the LR of RealSR/DRealSR pairs
# as blurry as a Gaussian of std 1.5-2.5 HR pixels before the bicubic x1/4 (a clean input: 0), while MILD's
# first resize (down to 0.15 and back) makes inputs of std ~4. So: one blur of std 1-3, no intermediate
# resizes, no second blur, MILD's noise and JPEG. For srx train's on-the-fly degradation (recipes in configs/).
CAMERA = {**MILD, "blur_sigma": (1.0, 3.0), "resize_prob": (0.0, 0.0, 1.0), "second_blur_prob": 0.0,
          "resize_prob2": (0.0, 0.0, 1.0), "final_sinc_prob": 0.1}


def _to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def _save_png(x: torch.Tensor, dest: Path) -> None:
    arr = (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    atomic_write(dest, writer=lambda path: Image.fromarray(arr).save(path, format="PNG", compress_level=1))


def _random_crop(images: list[Path], side: int, g: torch.Generator) -> torch.Tensor:
    """A ``side``-px crop of a random image (images smaller than ``side`` are skipped by the caller's list)."""
    path = images[int(torch.randint(len(images), (1,), generator=g))]
    with Image.open(path) as im:
        w, h = im.size
        top = int(torch.randint(h - side + 1, (1,), generator=g))
        left = int(torch.randint(w - side + 1, (1,), generator=g))
        crop = _to_tensor(im.crop((left, top, left + side, top + side)))
    if bool(torch.rand((), generator=g) < 0.5):
        crop = crop.flip(-1)
    return crop


def _edge_rich_crop(images: list[Path], side: int, g: torch.Generator, candidates: int) -> torch.Tensor:
    """Of ``candidates`` random crops, the one with the most edge energy (mean Sobel magnitude of its luma).
    Photographs are mostly smooth sky, bokeh and shade, where a sharp teacher has little to teach. Clean pairs are
    drawn the same way: they teach how much sharpening the truth allows, which only edges can. One candidate is
    a plain random crop (the same draws as before the option existed)."""
    from .edges import gradient_magnitude

    crops = [_random_crop(images, side, g) for _ in range(candidates)]
    return max(crops, key=lambda c: float(gradient_magnitude(c).mean()))


def _usable_images(folders: list[str], side: int) -> list[Path]:
    images = []
    for f in folders:
        if not Path(f).is_dir():
            raise UsageError(f"{f}: training data folder not found")
        for p in list_images(Path(f)):
            with Image.open(p) as im:
                if min(im.size) >= side:
                    images.append(p)
    if not images:
        raise UsageError(f"no training image of at least {side}x{side} px in {', '.join(folders)}")
    return images


def _check_manifest(out: Path, plan: TargetPlan) -> None:
    path = out / MANIFEST
    # JSON-shaped (tuples as lists), so that it compares equal to what was read back.
    want = json.loads(json.dumps({**asdict(plan), "mild_degradation": MILD if plan.mild else None}))
    if plan.candidates == 1:
        del want["candidates"]  # caches made before the option existed drew one crop per patch
    if plan.teacher is None:  # a process that only reads the cache the main process made
        if not path.is_file():
            raise UsageError(f"{out}: no teacher targets")
        want["teacher"] = json.loads(path.read_text()).get("teacher")
    if path.is_file():
        old = json.loads(path.read_text())
        if old != want:
            changed = sorted(k for k in want.keys() | old.keys() if old.get(k) != want.get(k))
            raise UsageError(f"{out}: teacher targets were built with other settings ({', '.join(changed)}); "
                             "remove that folder or write to another --output")
    else:
        write_text(path, json.dumps(want, indent=2))


def build_targets(folders: list[str], out: Path, plan: TargetPlan, teacher=None, echo=print) -> list[str]:
    """Make (or finish) the cache in ``out``; returns its paired folders. ``teacher`` is called only for
    patches still missing (None: the cache must be complete)."""
    from ..data.degradation import DegradationConfig, RealESRGANDegradation, quantize_8bit
    from ..data.resize import bicubic_downsample

    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(out, plan)
    s, n, c = plan.scale, plan.lr_size, plan.context
    sets = {"teacher": (plan.patches, (n + 2 * c) * s), "mild": (plan.mild, (n + 2 * c) * s),
            CLEAN: (plan.clean, n * s)}
    degraders = {"teacher": RealESRGANDegradation(DegradationConfig(scale=s)),
                 "mild": RealESRGANDegradation(DegradationConfig(scale=s, **MILD))}
    streams = {"teacher": 5, CLEAN: 6, "mild": 7}
    images: dict[int, list[Path]] = {}
    for kind, (count, side) in sets.items():
        for sub in ("HR", "LR"):
            (out / kind / sub).mkdir(parents=True, exist_ok=True)
        missing = [i for i in range(count) if not (out / kind / "HR" / f"{i:05d}.png").is_file()]
        if missing and kind != CLEAN and teacher is None:
            raise UsageError(f"{out}: {len(missing)} teacher targets missing and no teacher given")
        if missing:
            echo(f"teacher targets: making {len(missing)} {kind} patches in {out / kind}")
        for done, i in enumerate(missing):
            if side not in images:
                images[side] = _usable_images(folders, side)
            g = step_generator(plan.seed, i, stream=streams[kind])
            hr = _edge_rich_crop(images[side], side, g, plan.candidates)
            if kind != CLEAN:
                lr = quantize_8bit(degraders[kind](hr, g))
                target = teacher(lr)[:, :, c * s : (c + n) * s, c * s : (c + n) * s]
                lr = lr[:, :, c : c + n, c : c + n]
            else:
                lr, target = quantize_8bit(bicubic_downsample(hr, s)), hr
            _save_png(lr, out / kind / "LR" / f"{i:05d}.png")
            _save_png(target, out / kind / "HR" / f"{i:05d}.png")  # last: marks the pair complete
            if (done + 1) % 50 == 0:
                echo(f"teacher targets: {kind} {done + 1}/{len(missing)}")
    return [str(out / kind) for kind, (count, _) in sets.items() if count]
