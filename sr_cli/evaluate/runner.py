"""Run a system (a model through the engine, or a plain bicubic baseline) over an EvalSet and score it.

SR outputs are 8-bit PNGs in a cache folder keyed by (system, dataset, settings), one file per LR
image named ``<name>.<LR digest>.png`` after the LR file's content (sha256): a second run with more
metrics reads them back instead of running the model again (the model is loaded only when an output is
missing), and an LR image changed under the same name is a new output. Metrics are computed on those
PNGs, as the papers' scripts compute them on saved results.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..engine.pipeline import UpscaleOptions, tensor_to_pil
from ..engine.resize import output_size, pil_resize, to_unit_float
from ..errors import SrxError, UsageError
from ..io.fsio import claimed
from ..io.imagefiles import image_extensions
from ..io.imageio import encode_image, read_image, write_atomic
from .datasets import EvalSet, Sample
from .metrics import MetricFailed, MetricSuite

BASELINES = ("bicubic",)  # baselines that are no model; any model name or model file is one too


@dataclass
class ImageResult:
    name: str
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False  # the SR image came from the cache


@dataclass
class SystemResult:
    """One system's results on one dataset."""

    system: str  # model name / directory, or "bicubic"
    dataset: str
    sr_dir: Path
    settings: dict
    images: list[ImageResult]
    set_values: dict[str, float] = field(default_factory=dict)
    model_runs: int = 0  # images the model actually processed (0 when everything came from the cache)
    sr_files: dict[str, Path | None] = field(default_factory=dict)  # by sample name
    set_errors: dict[str, str] = field(default_factory=dict)  # set metrics (FID) that failed: why

    def sr_file(self, name: str) -> Path | None:
        path = self.sr_files.get(name)
        return path if path is not None and path.is_file() else None

    def means(self) -> dict[str, float]:
        keys = dict.fromkeys(k for r in self.images for k in r.values)
        out = {k: float(np.mean([r.values[k] for r in self.images if k in r.values])) for k in keys}
        out.update(self.set_values)
        return out

    @property
    def failed(self) -> list[ImageResult]:
        return [r for r in self.images if r.error]

    def to_json(self) -> dict:
        return {
            "system": self.system,
            "dataset": self.dataset,
            "settings": self.settings,
            "sr_dir": str(self.sr_dir),
            "mean": self.means(),
            "images_scored": sum(1 for r in self.images if not r.error),
            "images_failed": len(self.failed),
            "model_runs": self.model_runs,
            "set_metric_errors": self.set_errors,
            "per_image": [{"image": r.name, **r.values, **({"error": r.error} if r.error else {}),
                           **({"sr_file": str(self.sr_file(r.name))} if self.sr_file(r.name) else {})}
                          for r in self.images],
        }


class System:
    """What produces SR images: ``upscale(lr) -> sr`` tensors (1, 3, H, W) in [0, 1]."""

    name: str

    def fingerprint(self) -> dict:
        raise NotImplementedError

    def upscale(self, lr: torch.Tensor, on_tile=None) -> torch.Tensor:
        raise NotImplementedError

    def ready(self) -> None:
        """Load what ``upscale`` needs; its errors concern the system, not an image (missing weights...)."""


class BicubicBaseline(System):
    """Plain upsampling with the engine's own PIL-bicubic resize (the SR models' input upsampler)."""

    def __init__(self, scale: float):
        self.name = "bicubic"
        self.scale = scale

    def fingerprint(self) -> dict:
        return {"system": "bicubic", "scale": self.scale, "resize": "pil-bicubic-float"}

    def upscale(self, lr: torch.Tensor, on_tile=None) -> torch.Tensor:
        h, w = output_size(lr.shape[-2], lr.shape[-1], self.scale)
        return pil_resize(to_unit_float(lr).clamp(0, 1), h, w)


class ModelSystem(System):
    """A model of the engine, loaded on first use (never when every output is already cached)."""

    def __init__(self, model: str, options: UpscaleOptions, *, base: str | None = None, weights: str | None = None,
                 device: str = "auto", dtype: str = "auto", compile_unet: bool = False):
        from ..models.loading import resolve_spec

        self.name = model
        self.spec = resolve_spec(model, base, weights)
        self.options = options.resolved(self.spec)
        if self.options.prompt_extractor == "dape":  # OSEDiff's tagger files: a usage error before any work
            from ..engine.dape import require_tagger_files

            require_tagger_files(self.spec, options.prompt_extractor)
        self.base, self.weights, self.device, self.dtype = base, weights, device, dtype
        self.compile_unet = compile_unet  # speed only: not part of the fingerprint
        self._model = None

    def fingerprint(self) -> dict:
        from ..engine.devices import resolve_device, resolve_dtype

        dev = resolve_device(self.device)
        spec = self.spec.to_dict()
        opts = replace(self.options, tile_batch=None)  # batching does not change results
        options = dict(opts.__dict__)
        if options["detail"] is None:  # models without a detail set keep the key they had before it existed
            del options["detail"]
            spec["defaults"].pop("detail", None)
        fp = {"system": "model", "spec": spec, "weights_file": _file_identity(self.spec),
              "options": options, "device": dev.type, "dtype": str(resolve_dtype(self.dtype, dev)),
              "input": "8-bit images through PIL's 8-bit bicubic"}
        if self.spec.autoencoder is not None:  # ResShift family: the VQ autoencoder is a second file
            from ..models.hub import autoencoder_spec

            fp["autoencoder_file"] = _file_identity(autoencoder_spec(self.spec))
        if self.options.prompt_extractor == "dape":  # OSEDiff: the tags, hence the outputs, follow RAM/DAPE's files
            from ..engine.dape import tagger_file_spec

            fp["tagger_files"] = [_file_identity(tagger_file_spec(self.spec, w)) for w in ("ram", "dape")]
        return fp

    @property
    def model(self):
        if self._model is None:
            from ..models.loading import load_model

            self._model = load_model(self.name, base=self.base, weights=self.weights, device=self.device,
                                     dtype=self.dtype, compile_unet=self.compile_unet,
                                     prompt_extractor=self.options.prompt_extractor)
        return self._model

    def upscale(self, lr: torch.Tensor, on_tile=None) -> torch.Tensor:
        return self.model.upscale_tensor(lr, self.options, on_tile=on_tile)

    def ready(self) -> None:
        self.model  # noqa: B018 - loads it


class FolderSystem(System):
    """SR images that already exist (another tool's results): ``<folder>/<LR stem>.<ext>``, scored as they are."""

    def __init__(self, folder: Path, label: str | None = None):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise UsageError(f"{self.folder}: folder of SR results not found")
        self.name = label or self.folder.name

    def fingerprint(self) -> dict:
        return {"system": "folder", "path": str(self.folder.resolve())}

    def find(self, sample: Sample) -> Path | None:
        exts = image_extensions()
        for path in sorted(self.folder.glob(f"{glob.escape(sample.name)}.*")):
            if path.suffix.lower() in exts:
                return path
        return None


def parse_baselines(value: str | None, model: str | None = None) -> list[str]:
    """``--baseline bicubic,realesrgan-x4plus,4x_model.pth``: the names in order (each once, none the model)."""
    names = [v.strip() for v in (value or "").split(",") if v.strip()]
    if value is not None and not names:
        raise UsageError("--baseline names no baseline (bicubic, a model name or a model file, comma-separated)")
    for i, name in enumerate(names):
        if name in names[:i] or name == model:
            raise UsageError(f"--baseline {name!r} is named twice (as a baseline or as --model)")
    return names


def baseline_system(name: str, scale: float, options: UpscaleOptions, *, device: str = "auto", dtype: str = "auto",
                    compile_unet: bool = False) -> System:
    """A baseline: plain bicubic, or a model (name, directory or file) with its own defaults; only the output
    scale and the memory settings (tiles, batch) and seed of ``options`` apply to it."""
    if name in BASELINES:
        return BicubicBaseline(scale)
    shared = UpscaleOptions(scale=scale, tile=options.tile, overlap=options.overlap, tile_batch=options.tile_batch,
                            seed=options.seed)
    return ModelSystem(name, shared, device=device, dtype=dtype, compile_unet=compile_unet)


def _file_identity(spec) -> dict | None:
    """Size and modification time of a model's local weights (a retrained model directory is a new system)."""
    src = spec.weights
    if src is None or not src.path:
        if src is not None and src.sha256:
            return {"sha256": src.sha256}
        from ..models.hub import read_lock

        return {"sha256": read_lock().get(f"{spec.name}/{src.filename}")} if src is not None else None
    path = Path(src.path)
    files = [path / "weights.safetensors", path / "srx_model.json"] if path.is_dir() else [path]
    out = {}
    for f in files:
        if f.is_file():
            st = f.stat()
            out[f.name] = [st.st_size, st.st_mtime_ns]
    return out


def cache_dir_for(system: System, eval_set: EvalSet, scale: float) -> Path:
    from ..models.hub import cache_root

    key = {"system": system.fingerprint(), "dataset": eval_set.name, "root": str(eval_set.root.resolve()),
           "scale": scale}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(system.name).name)
    return cache_root() / "eval" / f"{label}-{eval_set.name}-{digest}"


def read_rgb(path: Path) -> torch.Tensor:
    """An image as (1, 3, H, W) float in [0, 1], as the papers' scripts read it (8-bit RGB)."""
    return read_image(path).color


LR_DIGEST_CHARS = 16  # of the LR file's sha256, in the cached output's name


def lr_digest(path: Path) -> str:
    """The content key of an LR image (its bytes: LR images are small, hashing them costs nothing)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:LR_DIGEST_CHARS]
    except OSError as e:
        raise SrxError(f"{path}: cannot read ({e.strerror or e})") from None


def cached_output(sr_dir: Path, sample: Sample, digest: str) -> Path:
    return sr_dir / f"{sample.name}.{digest}.png"


def _older_outputs(sr_dir: Path, name: str, keep: Path) -> list[Path]:
    """Outputs cached for earlier contents of the LR image ``name`` (replaced by ``keep``)."""
    pattern = re.compile(re.escape(name) + rf"\.[0-9a-f]{{{LR_DIGEST_CHARS}}}\.png")
    try:
        return [p for p in sr_dir.iterdir() if p != keep and pattern.fullmatch(p.name)]
    except OSError:
        return []


def produce_outputs(system: System, eval_set: EvalSet, sr_dir: Path,
                    on_image: Callable[[Sample, str | None], None] | None = None
                    ) -> tuple[dict[str, str], int, dict[str, Path]]:
    """Make sure every sample's output exists in ``sr_dir``; returns (errors by name, model runs, outputs by name).

    An output is found by the LR file's content, so an LR image that changed under the same name
    is computed again. A failure to read or write is that image's error; the others go on. A model
    that cannot be loaded (weights missing, a broken file) stops the run with its own error, once.
    """
    errors: dict[str, str] = {}
    outputs: dict[str, Path] = {}
    runs = 0
    for sample in eval_set.samples:
        try:
            dest = cached_output(sr_dir, sample, lr_digest(sample.lr))
        except SrxError as e:
            errors[sample.name] = str(e)
        else:
            outputs[sample.name] = dest
            if not dest.is_file():
                system.ready()  # outside the per-image errors: a model that cannot load is no image's fault
                try:
                    with claimed(dest):  # a parallel evaluate computing the same output: wait for it, then reuse it
                        if not dest.is_file():
                            lr = read_image(sample.lr).model_input  # 8-bit images as uint8: the models' 8-bit input
                            sr = system.upscale(lr)
                            write_atomic(dest, encode_image(sr, None, "PNG"), overwrite=True)
                            runs += 1
                            for old in _older_outputs(sr_dir, sample.name, dest):
                                old.unlink(missing_ok=True)
                except SrxError as e:
                    errors[sample.name] = str(e)
        if on_image:
            on_image(sample, errors.get(sample.name))
    return errors, runs, outputs


def _linked_folder(files: list[Path], parent: Path) -> Path:
    """A temporary folder holding exactly ``files`` (symlinks, copies where links are not possible)."""
    folder = Path(tempfile.mkdtemp(prefix=".fid-", dir=parent))
    for f in files:
        try:
            os.symlink(f.resolve(), folder / f.name)
        except OSError:
            shutil.copyfile(f, folder / f.name)
    return folder


def evaluate_system(system: System, eval_set: EvalSet, suite: MetricSuite, scale: float,
                    on_image: Callable[[Sample, str | None], None] | None = None,
                    on_score: Callable[[Sample], None] | None = None) -> SystemResult:
    settings = system.fingerprint()
    if isinstance(system, FolderSystem):
        sr_dir, runs = system.folder, 0
        sr_files = {s.name: system.find(s) for s in eval_set.samples}
        errors = {name: f"{system.folder}: no SR image named {name}.*" for name, p in sr_files.items() if p is None}
    else:
        sr_dir = cache_dir_for(system, eval_set, scale)
        errors, runs, sr_files = produce_outputs(system, eval_set, sr_dir, on_image)
        try:  # what the folder holds, for people who look into the cache; not needed by srx
            write_atomic(sr_dir / "settings.json", json.dumps(settings, indent=1, default=str).encode(),
                         overwrite=True)
        except SrxError:
            pass  # an unwritable cache already failed every image that needed writing
    results = []
    scored: list[Sample] = []
    for sample in eval_set.samples:
        result = ImageResult(sample.name, error=errors.get(sample.name))
        results.append(result)
        if result.error is None:
            try:
                sr = read_rgb(sr_files[sample.name])
                hr = read_rgb(sample.hr) if sample.hr is not None else None
                if hr is not None and hr.shape != sr.shape:
                    raise SrxError(f"{sample.hr}: HR is {hr.shape[-1]}x{hr.shape[-2]} but the "
                                   f"x{scale:g} output is {sr.shape[-1]}x{sr.shape[-2]}")
                result.values = suite.score_image(sr, hr)
                scored.append(sample)
            except MetricFailed as e:  # the message names the metric; the image is the LR file's output
                result.error = f"{sample.lr}: {e}"
            except SrxError as e:
                result.error = str(e)
        if on_score:
            on_score(sample)
    set_values: dict[str, float] = {}
    set_errors: dict[str, str] = {}
    if suite.set_metrics and eval_set.paired and len(scored) >= 2:
        from ..models.hub import cache_root

        tmp_parent = cache_root() / "eval"
        try:
            tmp_parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only cache: the links can live anywhere
            tmp_parent = Path(tempfile.gettempdir())
        sr_link = _linked_folder([sr_files[s.name] for s in scored], tmp_parent)
        hr_link = _linked_folder([s.hr for s in scored], tmp_parent)
        try:
            set_values, set_errors = suite.score_sets(sr_link, hr_link)
        finally:
            shutil.rmtree(sr_link, ignore_errors=True)
            shutil.rmtree(hr_link, ignore_errors=True)
    return SystemResult(system.name, eval_set.name, sr_dir, settings, results,
                        {k: v for k, v in set_values.items() if math.isfinite(v)}, runs, sr_files, set_errors)


def save_images(result: SystemResult, eval_set: EvalSet, folder: Path) -> tuple[int, list[str]]:
    """Copy the SR outputs from the cache to ``folder/<name>.png`` (each file complete or absent).

    Returns (files written, one error line per file that could not be written); a failure does not
    stop the others.
    """
    count, errors = 0, []
    for sample in eval_set.samples:
        src = result.sr_file(sample.name)
        if src is not None:
            try:
                write_atomic(folder / f"{sample.name}{src.suffix}", src.read_bytes(), overwrite=True)
                count += 1
            except SrxError as e:
                errors.append(str(e))
    return count, errors


def comparison_sheet(eval_set: EvalSet, results: dict[str, SystemResult], dest: Path, count: int = 4,
                     crop: int = 192) -> Path:
    """A PNG grid: one row per image, columns LR (nearest) | bicubic | each system | HR, centre crops."""
    from PIL import ImageDraw

    rows = []
    names = [s.name for s in eval_set.samples
             if all(r.sr_file(s.name) is not None for r in results.values())][:count]
    by_name = {s.name: s for s in eval_set.samples}
    systems = [k for k in results if k != "bicubic"]
    columns = ["LR", "bicubic"] + [Path(k).name for k in systems] + (["HR"] if eval_set.paired else [])
    for name in names:
        sample = by_name[name]
        outs = [Image.open(results[k].sr_file(name)).convert("RGB") for k in systems]
        size = outs[0].size if outs else Image.open(results["bicubic"].sr_file(name)).size
        lr = read_image(sample.lr).color
        if "bicubic" in results:
            bicubic = Image.open(results["bicubic"].sr_file(name)).convert("RGB")
        else:
            bicubic = tensor_to_pil(pil_resize(lr, size[1], size[0]))
        tiles = [tensor_to_pil(lr).resize(size, Image.Resampling.NEAREST), bicubic] + outs
        if eval_set.paired:
            tiles.append(Image.open(sample.hr).convert("RGB"))
        c = min(crop, *size)
        left, top = (size[0] - c) // 2, (size[1] - c) // 2
        rows.append([t.crop((left, top, left + c, top + c)) for t in tiles])
    if not rows:
        raise SrxError("no images to put on the comparison sheet")
    c = rows[0][0].size[0]
    label_h = 16
    sheet = Image.new("RGB", (c * len(columns), label_h + c * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(columns):
        draw.text((j * c + 4, 2), title, fill="black")
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            sheet.paste(tile, (j * c, label_h + i * c))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_atomic(dest, buf.getvalue(), overwrite=True)
    return dest
