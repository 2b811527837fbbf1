"""``srx models``: list, info, download, verify and import model weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .. import hub
from ..registry import ModelSpec, get_spec, registry
from .common import err_console, out_console, report_errors

app = typer.Typer(help="List, inspect, download, verify and import models.", no_args_is_help=True)


def weights_status(spec: ModelSpec) -> str:
    """'cached', 'missing' or 'manual download' for the one-step weights (no network, no hashing)."""
    src = spec.weights
    if src is None:
        return "none needed"
    if src.kind == "embedded":
        return "embedded" if Path(src.path, "srx_model.json").is_file() else "missing from this install"
    if src.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        return "cached" if isinstance(try_to_load_from_cache(src.repo, src.filename, revision=src.revision), str) else "missing"
    if hub.manual_path(spec).is_file():
        return "cached"
    return "manual download" if src.kind == "manual" else "missing"


def base_status(spec: ModelSpec) -> str:
    if spec.base is None:
        return "-"
    try:
        hub.resolve_base(spec.base, spec.name, download=False)
        return "cached"
    except Exception:
        return "missing"


@app.command("list")
@report_errors
def list_models() -> None:
    """Show every model in the registry, its license and what is cached locally."""
    table = Table(title="srx models")
    for col in ("name", "family", "base model", "weights", "base", "license"):
        table.add_column(col)
    for name, spec in sorted(registry().items()):
        table.add_row(name, spec.family, spec.base.describe() if spec.base else "-", weights_status(spec),
                      base_status(spec), spec.license)
    out_console.print(table)


@app.command()
@report_errors
def info(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Everything the registry knows about a model: paper, licenses, sources, defaults, cache paths."""
    spec = get_spec(name)
    d = spec.defaults
    rows = [
        ("name", spec.name),
        ("description", spec.description),
        ("family", spec.family),
        ("paper", spec.paper),
        ("license", spec.license),
        ("base model license", spec.base_license or "-"),
        ("base model", spec.base.describe() if spec.base else "-"),
        ("base model status", base_status(spec)),
    ]
    if spec.weights is not None:
        w = spec.weights
        source = {"hub": f"hf://{w.repo}/{w.filename}@{w.revision}", "url": w.url or "",
                  "manual": "manual download", "local": w.path or "", "embedded": "inside the package"}[w.kind]
        rows += [("weights", f"{w.filename} ({w.kind}): {source}"), ("weights status", weights_status(spec)),
                 ("sha256", w.sha256 or hub.read_lock().get(f"{spec.name}/{w.filename}", "recorded on first download"))]
        if w.kind in ("url", "manual"):
            rows.append(("weights path", str(hub.manual_path(spec))))
        if w.instructions:
            rows.append(("how to get it", w.instructions))
    if spec.autoencoder is not None:
        ae = hub.autoencoder_spec(spec)
        rows += [("autoencoder", f"{spec.autoencoder.filename}: {spec.autoencoder.url or spec.autoencoder.repo or 'manual'}"),
                 ("autoencoder status", weights_status(ae)), ("autoencoder path", str(hub.manual_path(ae)))]
    rows += [
        ("format", spec.format),
        ("scale", f"x{d.scale:g}"),
        ("timestep", str(d.timestep) if spec.family != "resshift" else f"T-1 of the 15-step schedule, sampler {d.sampler}"),
        ("text condition", d.text_condition if d.text_condition == "learned"
         else f"prompt {d.prompt_template!r} with prompt={d.prompt!r}"),
        ("color fix", d.color_fix),
        ("tiles", f"{d.tile} px, overlap {d.overlap} px"),
    ]
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, v)
    out_console.print(table)


@app.command()
@report_errors
def download(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Download a model's base model and weights into the cache (needs network)."""
    spec = get_spec(name)
    if spec.base is not None:
        path = hub.resolve_base(spec.base, spec.name, download=True)
        err_console.print(f"base model: {path}")
    if spec.weights is not None and spec.weights.kind == "embedded":
        err_console.print(f"{name}: embedded in the package, nothing to download")
        return
    if spec.weights is not None:
        path = hub.resolve_weights(spec, download=True)
        err_console.print(f"weights: {path}")
    if spec.autoencoder is not None:
        path = hub.resolve_weights(hub.autoencoder_spec(spec), download=True)
        err_console.print(f"autoencoder: {path}")
    err_console.print(f"{name}: ready")


@app.command()
@report_errors
def verify(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Check the cached weights against their sha256 and that they load in the model's format."""
    from ..checkpoints import read_published

    spec = get_spec(name)
    if spec.weights is None:
        err_console.print(f"{name}: no weights file to verify")
        return
    if spec.weights.kind == "embedded" or spec.family == "resshift":
        from ..loading import load_checkpoint

        load_checkpoint(spec, download=False)  # resshift: both files, hashes checked, converted once
        if spec.family == "resshift":
            err_console.print(f"{name}: weights and autoencoder OK")
            return
        err_console.print(f"{name}: embedded model OK ({spec.weights.path})")
        return
    path = hub.resolve_weights(spec, download=False)  # raises on a missing file or a hash mismatch
    read_published(path, spec.format)
    err_console.print(f"{name}: {path} OK (sha256 {hub.sha256_file(path)})")


@app.command("import")
@report_errors
def import_(
    name: Annotated[str, typer.Argument(help="Model name.")],
    file: Annotated[Path, typer.Argument(help="A weights file you downloaded by hand.", exists=True, dir_okay=False)],
) -> None:
    """Import a hand-downloaded weights file (e.g. Hero-SR's Google Drive file) into the cache."""
    from ..checkpoints import read_published

    spec = get_spec(name)
    if spec.weights is None:
        err_console.print(f"{name} has no weights file to import")
        raise typer.Exit(2)
    if spec.family == "resshift":  # refuse files that are not this model's format before copying
        from ..checkpoints import safe_torch_load
        from ..checkpoints_resshift import infer_unet_config, unwrap_state_dict

        infer_unet_config(unwrap_state_dict(safe_torch_load(file), file), file)
    else:
        read_published(file, spec.format)
    dest = hub.import_weights(spec, file)
    err_console.print(f"{name}: imported {file} -> {dest}")
