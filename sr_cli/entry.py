"""The ``srx`` executable: quiet on a Ctrl-C that comes while the command line interface is still loading
(see ``interrupts``), then the Typer application."""

from __future__ import annotations

from .interrupts import exit_interrupted, quiet_until_a_command_starts


def main() -> None:
    quiet_until_a_command_starts()
    try:
        from .cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        exit_interrupted()
