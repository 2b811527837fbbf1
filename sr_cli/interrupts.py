"""Ctrl-C while the command line interface is still loading: exit at once, quietly.

Until a command starts, nothing has been written and there is nothing to clean up: a Ctrl-C then exits with
130, as a shell expects, instead of a traceback from whatever module was being imported. Once a command runs
(``accept_interrupts``), Ctrl-C is a ``KeyboardInterrupt`` again, which the commands turn into their cleanup,
report and exit code 130.
"""

from __future__ import annotations

import os
import signal
import sys

_previous_handler = None


def exit_interrupted(signum: int = signal.SIGINT, frame=None) -> None:
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def quiet_until_a_command_starts() -> None:
    """Called first thing by the ``srx`` executable."""
    global _previous_handler
    try:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job stays deaf to Ctrl-C
            _previous_handler = signal.signal(signal.SIGINT, exit_interrupted)
    except ValueError:  # not the main thread
        pass


def accept_interrupts() -> None:
    """Called as a command starts: from here on Ctrl-C raises ``KeyboardInterrupt``."""
    global _previous_handler
    if _previous_handler is not None:
        signal.signal(signal.SIGINT, _previous_handler)
        _previous_handler = None
