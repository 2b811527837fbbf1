"""Commands whose implementation lands in later work; registered so the CLI's shape is fixed."""

from __future__ import annotations

from .common import fail


def distill() -> None:
    """Distill a multi-step teacher (ResShift) into a one-step student (SinSR, VPD-SR, HF-Diff)."""
    fail("`srx distill` is not implemented in this version yet")

