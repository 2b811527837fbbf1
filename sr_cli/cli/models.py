"""``srx models``: list, info, download, verify and import model weights; combine two lite models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..families.lite import DEFAULT_CURVE
from .common import out_console, print_line, report_errors

# The registry, the cache code and rich's tables are imported inside the commands: `srx --help` imports
# every command module, and needs none of them.
if TYPE_CHECKING:
    from ..models.registry import ModelSpec

app = typer.Typer(help="List, inspect, download, verify and import models.", no_args_is_help=True)


def weights_status(spec: ModelSpec) -> str:
    """'cached', 'missing' or 'manual download' for the one-step weights (no network, no hashing)."""
    from ..models import hub

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
    from ..models import hub

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
    from rich.table import Table
    from rich.text import Text

    from ..models.registry import registry

    columns = ("name", "family", "base model", "weights", "base", "license")
    rows = [(name, spec.family, spec.base.describe() if spec.base else "-", weights_status(spec), base_status(spec),
             spec.license) for name, spec in sorted(registry().items())]
    if not out_console.is_terminal:  # a pipe or a file: one tab-separated line per model, nothing cut
        for row in (columns, *rows):
            print_line("\t".join(row), out_console)
        return
    table = Table(title="srx models")
    for col in columns:  # values users copy (repo ids, licenses) wrap instead of being cut with an ellipsis
        table.add_column(col, overflow="fold", no_wrap=False)
    for row in rows:
        table.add_row(*(Text(v) for v in row))
    out_console.print(table)


def print_fields(rows: list[tuple[str, str]]) -> None:
    """``key: value`` lines on a pipe; a two-column table on a terminal, long values (URLs, sha256) folded."""
    from rich.table import Table
    from rich.text import Text

    if not out_console.is_terminal:
        for key, value in rows:
            print_line(f"{key}: {value}", out_console)
        return
    table = Table(show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold", no_wrap=False)
    for key, value in rows:
        table.add_row(Text(key), Text(value))
    out_console.print(table)


@app.command()
@report_errors
def info(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Everything the registry knows about a model: paper, licenses, sources, defaults, cache paths."""
    from ..families import family_of
    from ..models import hub
    from ..models.registry import get_spec

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
    if spec.estimator is not None:  # S3Diff's degradation estimator
        part = hub.estimator_spec(spec)
        e = part.weights
        where = f"hf://{e.repo}/{e.filename}@{e.revision}" if e.kind == "hub" else (e.url or "manual download")
        licensed = f", license {e.license}" if e.license else ""
        rows += [("degradation estimator", f"{e.filename} ({e.kind}): {where}{licensed}"),
                 ("degradation estimator status", weights_status(part))]
    if spec.ram is not None and spec.dape is not None:
        from ..models.hub import tagger_file_spec

        for which, label in (("ram", "prompt extractor: RAM"), ("dape", "prompt extractor: DAPE")):
            part = tagger_file_spec(spec, which)
            w = part.weights
            where = f"hf://{w.repo}/{w.filename}@{w.revision}" if w.kind == "hub" else "manual download"
            rows += [(label, f"{w.filename} ({where}), license {w.license or '-'}"),
                     (f"{label} status", "cached" if hub.manual_path(part).is_file() else weights_status(part))]
            if w.instructions:
                rows.append((f"{label}: how to get it", w.instructions))
    rows += [
        ("format", spec.format),
        ("scale", f"x{d.scale:g}"),
        *family_of(spec).describe_defaults(spec),
        *([("text condition", d.text_condition if d.text_condition == "learned"
            else f"prompt {d.prompt_template!r} with prompt={d.prompt!r}")] if family_of(spec).text_conditioned else []),
        ("color fix", d.color_fix),
        ("tiles", f"{d.tile} px, overlap {d.overlap} px"),
    ]
    print_fields(rows)


@app.command()
@report_errors
def download(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Download a model's base model and weights into the cache (needs network)."""
    from ..models import hub
    from ..models.registry import get_spec

    spec = get_spec(name)
    if spec.base is not None:
        path = hub.resolve_base(spec.base, spec.name, download=True)
        print_line(f"base model: {path}")
    if spec.weights is not None and spec.weights.kind == "embedded":
        print_line(f"{name}: embedded in the package, nothing to download")
        return
    if spec.weights is not None:
        path = hub.resolve_weights(spec, download=True)
        print_line(f"weights: {path}")
    if spec.autoencoder is not None:
        path = hub.resolve_weights(hub.autoencoder_spec(spec), download=True)
        print_line(f"autoencoder: {path}")
    if spec.estimator is not None:  # S3Diff's degradation estimator
        print_line(f"degradation estimator: {hub.resolve_weights(hub.estimator_spec(spec), download=True)}")
    if spec.ram is not None and spec.dape is not None:  # OSEDiff's DAPE prompt extractor: RAM from the Hub,
        from ..models.hub import tagger_file_spec     # DAPE.pth by hand (a missing one is reported as an error)

        print_line(f"prompt extractor RAM: {hub.resolve_weights(tagger_file_spec(spec, 'ram'), download=True)}")
        print_line(f"prompt extractor DAPE: {hub.resolve_weights(tagger_file_spec(spec, 'dape'), download=True)}")
    print_line(f"{name}: ready")


@app.command()
@report_errors
def verify(name: Annotated[str, typer.Argument(help="Model name, or a saved model directory.")]) -> None:
    """Check the cached weights against their sha256, that they load in the model's format, and the converted copy."""
    from ..models import hub

    with hub.reading_every_file():  # verify never trusts a remembered digest
        _verify(name)


def _verify(name: str) -> None:
    from ..errors import SrxError, WeightsIntegrityError
    from ..families import family_of
    from ..models import hub
    from ..models.checkpoints import check_model_files, read_model_dir
    from ..models.loading import converted_copy, load_converted_checkpoint
    from ..models.registry import get_spec, is_model_dir, registry

    if is_model_dir(name) and name not in registry():
        check_model_files(name, full=True)  # missing, truncated or altered weights.safetensors
        read_model_dir(name)
        print_line(f"{name}: model directory OK")
        return
    spec = get_spec(name)
    if spec.weights is None:
        print_line(f"{name}: no weights file to verify")
        return
    if spec.weights.kind == "embedded":
        check_model_files(spec.weights.path, full=True)
        load_converted_checkpoint(spec, download=False)
        print_line(f"{name}: embedded model OK ({spec.weights.path})")
        return
    converted = converted_copy(spec)  # resolves (and hashes) the published files: raises if missing or altered
    if converted is not None:  # made on first use: a damaged copy is named, with what to do about it
        try:
            check_model_files(converted, full=True)
        except SrxError as e:
            raise WeightsIntegrityError(f"{e}. It is srx's converted copy of the verified download: delete "
                                        f"{converted} and srx converts it again on next use") from None
    print_line(family_of(spec).verify(spec, converted))  # reads the published file(s): raises on a bad one
    if spec.ram is not None and spec.dape is not None:  # OSEDiff's prompt extractor: checked where present
        from ..engine.dape import read_dape, read_ram, tagger_file_spec
        from ..errors import WeightsMissingError

        for which, read in (("ram", read_ram), ("dape", read_dape)):
            part = tagger_file_spec(spec, which)
            try:
                path = hub.resolve_weights(part, download=False)  # raises on an altered file
            except WeightsMissingError:
                print_line(f"{name}: prompt extractor {part.weights.filename} not present "
                           f"(needed unless --prompt-extractor none; see `srx models info {name}`)")
                continue
            read(path)
            print_line(f"{name}: prompt extractor {path} OK")


@app.command("import")
@report_errors
def import_(
    name: Annotated[str, typer.Argument(help="Model name.")],
    file: Annotated[Path, typer.Argument(help="A weights file you downloaded by hand.", exists=True, dir_okay=False)],
    autoencoder: Annotated[bool, typer.Option(
        "--autoencoder", help="FILE is the model's autoencoder (ResShift family: autoencoder_vq_f4.pth).")] = False,
) -> None:
    """Import a hand-downloaded weights file (e.g. Hero-SR's Google Drive file) into the cache."""
    from ..errors import UsageError
    from ..families import family_of
    from ..models import hub
    from ..models.registry import get_spec

    spec = get_spec(name)
    if autoencoder:
        if spec.autoencoder is None:
            raise UsageError(f"{name} has no separate autoencoder file (--autoencoder is for the ResShift family)")
        from ..models.checkpoints_resshift import check_autoencoder

        check_autoencoder(file, spec.autoencoder.filename)
        dest = hub.import_weights(hub.autoencoder_spec(spec), file)
        print_line(f"{name}: imported {file} -> {dest}")
        return
    if spec.ram is not None and spec.dape is not None:  # OSEDiff's DAPE.pth / RAM's file, told apart by content
        from ..engine.dape import import_tagger_file

        dest = import_tagger_file(spec, file)
        if dest is not None:
            print_line(f"{name}: imported {file} -> {dest}")
            return
    if spec.weights is None or spec.weights.kind == "embedded":
        raise UsageError(f"{name} has no weights file to import")
    # Refuse files that are not this model's format before copying.
    family_of(spec).check_import(spec, file)
    dest = hub.import_weights(spec, file)
    print_line(f"{name}: imported {file} -> {dest}")


@app.command()
@report_errors
def combine(
    faithful: Annotated[str, typer.Argument(help="The faithful lite model (name or directory): pixel losses.")],
    sharp: Annotated[str, typer.Argument(help="The sharp lite model: the same network fine-tuned with a GAN.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The new model directory (must not exist).")],
    soft: Annotated[float, typer.Option(
        "--soft", help="--detail auto: input softness at and below which the sharp set runs alone.")] = \
        DEFAULT_CURVE["soft"],
    clean: Annotated[float, typer.Option(
        "--clean", help="--detail auto: input softness at and above which the faithful set runs alone.")] = \
        DEFAULT_CURVE["clean"],
    top: Annotated[float, typer.Option("--top", help="--detail auto: the largest detail it gives.")] = \
        DEFAULT_CURVE["top"],
) -> None:
    """Make one lite model with a detail set from two lite models (the shipped lite is made this way).

    The result runs (1 - d) * FAITHFUL + d * SHARP in weight space, d from --detail (auto: from each input's
    softness, the log10 ratio of its power near Nyquist to its mid-high power; see the README).
    """
    from ..families.lite import combine_detail

    path = combine_detail(faithful, sharp, output, {"soft": soft, "clean": clean, "top": top})
    print_line(f"wrote {path} (detail auto: {soft} -> 1 x {top}, {clean} -> 0)")
