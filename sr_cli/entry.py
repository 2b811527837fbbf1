"""The ``srx`` executable: quiet on a Ctrl-C that comes while the command line interface is still loading.

Until a command starts, nothing has been written and there is nothing to clean up: a Ctrl-C then exits at
once with 130, as a shell expects, instead of a traceback from whatever module was being imported. Once a
command runs (``accept_interrupts``), Ctrl-C is a ``KeyboardInterrupt`` again, which the commands turn
into their cleanup, report and exit code 130.
"""

from __future__ import annotations

import os
import signal
import sys

_previous_handler = None


def _interrupted_while_loading(signum, frame) -> None:
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def accept_interrupts() -> None:
    """Called as a command starts: from here on Ctrl-C raises ``KeyboardInterrupt``."""
    global _previous_handler
    if _previous_handler is not None:
        signal.signal(signal.SIGINT, _previous_handler)
        _previous_handler = None


def main() -> None:
    global _previous_handler
    try:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job stays deaf to Ctrl-C
            _previous_handler = signal.signal(signal.SIGINT, _interrupted_while_loading)
    except ValueError:  # not the main thread
        pass
    try:
        from .cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        _interrupted_while_loading(signal.SIGINT, None)
