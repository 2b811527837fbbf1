"""``srx evaluate``: a model on a benchmark with the papers' metrics, our numbers beside the papers'."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (BaseOpt, ColorFixOpt, CompileOpt, DetailOpt, DeviceOpt, DtypeOpt, ModelOpt, OverlapOpt,
                     PixelGuidanceOpt, PromptExtractorOpt, PromptOpt, SamplerOpt, SeedOpt, SemanticGuidanceOpt, TileBatchOpt, TileOpt,
                     WeightsOpt, err_console, guidance_options, out_console, print_error, print_line, print_note,
                     report_errors)


def _emit_json(doc: dict) -> None:
    import json
    import sys

    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def _infer_scale(eval_set) -> float | None:
    """The LR -> HR factor of a paired folder, from its first pair (None when unpaired)."""
    from PIL import Image

    sample = eval_set.samples[0]
    if sample.hr is None:
        return None
    try:
        with Image.open(sample.lr) as lr, Image.open(sample.hr) as hr:
            return round(hr.size[0] / lr.size[0], 3)
    except OSError:
        return None


@report_errors
def evaluate(
    dataset: Annotated[str, typer.Option(
        "--dataset", "-d", help="A benchmark name (drealsr, realsr, div2k-val, realset65, reallq250) or a folder "
                                "with HR/ and LR/ (paired) or of images alone (no-reference metrics only).",
        show_default=False)],
    dataset_dir: Annotated[Optional[Path], typer.Option(
        "--dataset-dir", help="Where a named benchmark already is on disk (instead of downloading it).")] = None,
    model: ModelOpt = None,
    base: BaseOpt = None,
    weights: WeightsOpt = None,
    outputs: Annotated[Optional[Path], typer.Option(
        "--outputs", help="Score SR images that already exist in this folder (named like the LR images) "
                          "instead of running a model; --model then only names whose results they are.")] = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="Also evaluate baselines through the same code, comma-separated: bicubic, any model name "
                           "or model file (e.g. bicubic,realesrgan-x4plus), each with its own defaults.")] = None,
    metrics: Annotated[Optional[str], typer.Option(
        "--metrics", help="Comma-separated metrics (default: psnr,ssim,lpips,dists,fid,niqe,musiq,maniqa,clipiqa; "
                          "also ms_ssim, topiq_nr, hyperiqa, arniqa, tres, qalign).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N images (quick runs).")] = None,
    tile: TileOpt = None,
    overlap: OverlapOpt = None,
    tile_batch: TileBatchOpt = None,
    color_fix: ColorFixOpt = None,
    prompt: PromptOpt = None,
    seed: SeedOpt = None,
    sampler: SamplerOpt = None,
    prompt_extractor: PromptExtractorOpt = None,
    pixel_guidance: PixelGuidanceOpt = None,
    semantic_guidance: SemanticGuidanceOpt = None,
    detail: DetailOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    compile_unet: CompileOpt = False,
    save_dir: Annotated[Optional[Path], typer.Option(
        "--save-images", help="Copy the SR outputs into this folder.")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON report on stdout (per-image and mean values, the papers' numbers); "
                       "the table then goes to stderr.")] = False,
    json_path: Annotated[Optional[Path], typer.Option(
        "--json-file", help="Write the JSON report to this file.")] = None,
    csv_path: Annotated[Optional[Path], typer.Option(
        "--csv", help="Write per-image and mean values as CSV to this file.")] = None,
    sheet: Annotated[Optional[Path], typer.Option(
        "--sheet", help="Write a comparison sheet PNG (LR | bicubic | SR | HR centre crops).")] = None,
    sheet_images: Annotated[int, typer.Option("--sheet-images", help="Rows on the comparison sheet.")] = 4,
    recompute: Annotated[bool, typer.Option(
        "--recompute", help="Ignore cached SR outputs and run the model again.")] = False,
) -> None:
    """Evaluate a model on a benchmark with the papers' protocol (pyiqa metrics, PSNR/SSIM on Y of YCbCr).

    SR outputs are cached per (model, dataset, settings, LR image content): running again with other
    metrics does not run the model again. Exit codes: 0 every image and metric computed and every
    report written, 1 some image, metric or report failed (the rest is reported), 2 usage error.
    With --json, stdout holds only the JSON document (also {"error": ...} for a usage error).
    """
    from ..errors import SrxError

    try:
        _evaluate(dataset, dataset_dir, model, base, weights, outputs, baseline, metrics, limit, tile, overlap,
                  tile_batch, color_fix, prompt, seed, sampler, device, dtype, compile_unet, save_dir, json_out,
                  json_path, csv_path, sheet, sheet_images, recompute, prompt_extractor,
                  guidance_options(pixel_guidance, semantic_guidance, detail))
    except SrxError as e:
        if json_out:
            _emit_json({"error": str(e)})
        raise
    except KeyboardInterrupt:  # exit 130 (report_errors); a --json reader still gets a document
        if json_out:
            _emit_json({"error": "interrupted"})
        raise


def _evaluate(dataset, dataset_dir, model, base, weights, outputs, baseline, metrics, limit, tile, overlap,
              tile_batch, color_fix, prompt, seed, sampler, device, dtype, compile_unet, save_dir, json_out,
              json_path, csv_path, sheet, sheet_images, recompute, prompt_extractor=None, guidance=None) -> None:
    import json
    import shutil

    from ..engine.devices import resolve_device
    from ..engine.pipeline import UpscaleOptions
    from ..errors import SrxError, UsageError
    from ..evaluate.datasets import resolve_dataset
    from ..evaluate.metrics import MetricSuite, parse_metric_list
    from ..evaluate.report import report_csv, report_json, summary_table, write_text
    from ..evaluate.runner import (BicubicBaseline, FolderSystem, ModelSystem, baseline_system, comparison_sheet,
                                   parse_baselines, save_images)

    if limit is not None and limit < 1:
        raise UsageError("--limit must be positive")
    baselines = parse_baselines(baseline, model or ("lite" if outputs is None else None))
    if sheet_images < 1:
        raise UsageError("--sheet-images must be positive")
    label = model  # with --outputs: whose results these are (for the papers' column)
    model = model or "lite"
    if dataset_dir is not None and Path(dataset).expanduser().is_dir():
        raise UsageError("--dataset-dir locates a named benchmark; --dataset is already a folder")
    eval_set = resolve_dataset(dataset, dataset_dir).limited(limit)
    for note in eval_set.notes:
        print_note(note)
    metric_defs = parse_metric_list(metrics, eval_set.paired)

    from ..evaluate.datasets import dataset_registry

    named = dataset_registry().get(eval_set.name) if dataset in dataset_registry() else None
    scale = float(named.scale) if named else _infer_scale(eval_set)
    options = UpscaleOptions(scale=scale, tile=tile, overlap=overlap, tile_batch=tile_batch, color_fix=color_fix,
                             prompt=prompt, seed=seed, sampler=sampler, prompt_extractor=prompt_extractor,
                             **(guidance or {}))
    systems = []
    if outputs is not None:
        if weights or base:
            raise UsageError("--outputs scores existing images: it excludes --weights/--base")
        systems.append(FolderSystem(outputs, label))
    elif model == "bicubic":
        systems.append(BicubicBaseline(scale or 4.0))
    else:
        system = ModelSystem(model, options, base=base, weights=str(weights) if weights else None,
                             device=device, dtype=dtype, compile_unet=compile_unet)
        systems.append(system)
        scale = scale or system.options.scale
    systems += [baseline_system(name, scale or 4.0, options, device=device, dtype=dtype, compile_unet=compile_unet)
                for name in baselines]

    suite = MetricSuite(metric_defs, resolve_device(device))
    for message in suite.unavailable.values():
        print_error(message)

    results = []
    for system in systems:
        if recompute:
            from ..evaluate.runner import cache_dir_for

            shutil.rmtree(cache_dir_for(system, eval_set, scale), ignore_errors=True)
        result = _run_with_progress(system, eval_set, suite, scale)
        for img in result.failed:
            print_error(img.error)
        for message in result.set_errors.values():
            print_error(message)
        results.append(result)

    names = [m.name for m in metric_defs]
    # With --json, stdout holds the document alone: the table goes to stderr.
    (err_console if json_out else out_console).print(
        summary_table(results, names, eval_set.paper_name, suite.unavailable))
    write_errors: list[str] = []

    def report_write(what) -> None:
        try:
            what()
        except SrxError as e:  # one line; the other reports are still written
            write_errors.append(str(e))
            print_error(str(e))

    if csv_path:
        report_write(lambda: write_text(csv_path, report_csv(results, names)))
    if save_dir:
        count, errors = save_images(results[0], eval_set, save_dir)
        for message in errors:
            write_errors.append(message)
            print_error(message)
        print_line(f"saved {count} SR images to {save_dir}")
    if sheet:
        report_write(lambda: comparison_sheet(eval_set, {r.system: r for r in results}, sheet, count=sheet_images))
    doc = {**report_json(results, eval_set.paper_name, suite.unavailable), "notes": eval_set.notes}
    if json_path:
        report_write(lambda: write_text(json_path, json.dumps({**doc, "write_errors": write_errors}, indent=2) + "\n"))
    if json_out:
        _emit_json({**doc, "write_errors": write_errors})
    if suite.unavailable or write_errors or any(r.failed or r.set_errors for r in results):
        raise typer.Exit(1)


def _run_with_progress(system, eval_set, suite, scale):
    from ..evaluate.runner import evaluate_system

    total = len(eval_set.samples)
    if not err_console.is_terminal:
        return evaluate_system(system, eval_set, suite, scale)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        sr_task = progress.add_task(f"{system.name}: super-resolve", total=total)
        score_task = progress.add_task(f"{system.name}: metrics", total=total)
        return evaluate_system(system, eval_set, suite, scale,
                               on_image=lambda s, e: progress.advance(sr_task),
                               on_score=lambda s: progress.advance(score_task))
