"""Training methods, one class each (``base.TrainMethod``); the registry is built from the classes.

Adding a method: a module here with a ``TrainMethod`` subclass (name, defaults, its ``Options``, loss_weights,
loss_terms, export), listed in ``_CLASSES`` below. ``srx train`` runs the methods whose ``commands`` name ``train``,
``srx distill`` those that name ``distill`` (``lite`` is both: trained alone, or distilled from a teacher).
"""

from __future__ import annotations

from pathlib import Path

from .base import TrainMethod, check_loss_weights
from .dfosd import DFOSDMethod
from .hero_sr import HeroSRMethod
from .hf_diff import HFDiffMethod
from .lite import LiteMethod
from .osediff import OSEDiffMethod
from .sinsr import SinSRMethod
from .vpd_sr import VPDSRMethod

_CLASSES: tuple[type[TrainMethod], ...] = (OSEDiffMethod, HeroSRMethod, DFOSDMethod, LiteMethod,
                                           SinSRMethod, VPDSRMethod, HFDiffMethod)
METHODS: dict[str, type[TrainMethod]] = {cls.name: cls for cls in _CLASSES}


def method_names(command: str | None = None) -> tuple[str, ...]:
    """The registered methods (those ``srx COMMAND`` runs, when given)."""
    return tuple(n for n, cls in METHODS.items() if command is None or command in cls.commands)


def build_method(cfg, base_dir: Path | None) -> TrainMethod:
    return METHODS[cfg.method](cfg, base_dir)


__all__ = ["METHODS", "TrainMethod", "build_method", "check_loss_weights", "method_names"]
