"""``srx upscale``: super-resolve image files and folders."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (BaseOpt, ColorFixOpt, DeviceOpt, DtypeOpt, ModelOpt, OverlapOpt, PromptOpt, SeedOpt,
                     TileBatchOpt, TileOpt, WeightsOpt, err_console, fail, report_errors)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def collect_inputs(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            fail(f"{item}: no such file or directory")
    return files


def output_path(src: Path, output: Optional[Path], single: bool) -> Path:
    if output is not None and single and output.suffix:
        return output
    folder = output if output is not None else src.parent
    return folder / f"{src.stem}_srx.png"


@report_errors
def upscale(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file (one input) or folder.")] = None,
    model: ModelOpt = None,
    base: BaseOpt = None,
    weights: WeightsOpt = None,
    scale: Annotated[Optional[float], typer.Option("--scale", help="Upscale factor >= 1 (native: the model's, x4).")] = None,
    tile: TileOpt = None,
    overlap: OverlapOpt = None,
    tile_batch: TileBatchOpt = None,
    color_fix: ColorFixOpt = None,
    prompt: PromptOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Super-resolve images with a one-step diffusion model."""
    from PIL import Image

    from ..engine.pipeline import UpscaleOptions, pil_to_tensor, tensor_to_pil
    from ..loading import load_model, resolve_spec

    if model is None:
        fail("no --model given and the embedded default model is not available yet; pass --model NAME (see `srx models list`)")
    files = collect_inputs(inputs)
    if not files:
        fail("no input images found")
    options = UpscaleOptions(scale=scale, tile=tile, overlap=overlap, tile_batch=tile_batch, color_fix=color_fix,
                             prompt=prompt, seed=seed)
    weights_arg = str(weights) if weights else None
    options.resolved(resolve_spec(model, base, weights_arg))  # usage errors before any loading
    sr = load_model(model, base=base, weights=weights_arg, device=device, dtype=dtype)
    failed = 0
    for src in files:
        dest = output_path(src, output, single=len(files) == 1)
        start = time.perf_counter()
        try:
            with Image.open(src) as im:
                im.load()
                rgb = im.convert("RGB")
        except (OSError, ValueError) as e:
            err_console.print(f"[red]error:[/red] {src}: cannot read image ({e})")
            failed += 1
            continue
        result = tensor_to_pil(sr.upscale_tensor(pil_to_tensor(rgb), options))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.srx-tmp")
        try:
            result.save(tmp, format="PNG")
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        err_console.print(f"{src} -> {dest} ({result.width}x{result.height}, {time.perf_counter() - start:.1f}s)")
    raise typer.Exit(1 if failed else 0)
