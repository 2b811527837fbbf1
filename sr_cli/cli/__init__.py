"""The ``srx`` command: wires the subcommands; every heavy import happens inside a command."""

from __future__ import annotations

import sys

import typer

from .. import __version__
from . import models
from .bench import bench
from .distill import distill
from .evaluate import evaluate
from .serve import serve
from .train import train
from .upscale import upscale

app = typer.Typer(
    name="srx",
    help="One-step diffusion super-resolution: upscale, evaluate, train and distill.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"srx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """One-step diffusion super-resolution."""
    from ..interrupts import accept_interrupts

    accept_interrupts()  # a command starts: Ctrl-C now goes through its cleanup (see interrupts.py)


app.command()(upscale)
app.command()(train)
app.command()(distill)
app.command()(evaluate)
app.command()(bench)
app.command()(serve)
app.add_typer(models.app, name="models")


@app.command()
def sample() -> None:
    """Print the path of a small sample photograph shipped with srx (NASA's astronaut, public domain, 128x128)."""
    from importlib import resources

    typer.echo(str(resources.files("sr_cli").joinpath("samples", "astronaut_lr.png")))


# Commands whose --json promises one JSON document on stdout, whatever happens.
JSON_COMMANDS = ("upscale", "evaluate")


def _wants_json(argv: list[str]) -> bool:
    return bool(argv) and argv[0] in JSON_COMMANDS and "--json" in argv[1:]


def _run_with_json_errors() -> None:
    """Run the app; a command-line parse error (bad option value, unknown option) still prints
    ``{"error": ...}`` on stdout, as the commands do for their own usage errors."""
    import json

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as e:  # typer's own click exceptions: bad values, unknown options
        sys.stdout.write(json.dumps({"error": e.format_message()}, indent=2) + "\n")
        sys.stdout.flush()
        e.show()
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def main() -> None:
    from ..hostmem import tune_host_allocator

    tune_host_allocator()
    if _wants_json(sys.argv[1:]):
        _run_with_json_errors()
    app()
