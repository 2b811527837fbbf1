"""File-system helpers for tests."""

import contextlib
import os


@contextlib.contextmanager
def umask(mask: int):
    """Run the block with the process umask set to ``mask``."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
