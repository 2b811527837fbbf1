"""Model families: one module each, one ``ModelFamily`` object per module (see ``base.py`` for the protocol).

``FAMILIES`` maps the manifest's ``family = "..."`` to the object; ``family_of(spec)`` is how every other module
reaches a model's family. Adding a family: a new module here with ``FAMILY = YourFamily()``, listed below.
"""

from __future__ import annotations

from . import adcsr, hypir, lite, ncnn_family, resshift, s3diff, sd_dual_lora, sd_onestep, spandrel_family
from .base import SAMPLERS, ModelFamily, TilePlan, output_space_plan

FAMILIES: dict[str, ModelFamily] = {m.FAMILY.name: m.FAMILY for m in (sd_onestep, lite, resshift, spandrel_family,
                                                                  s3diff, adcsr, hypir, sd_dual_lora, ncnn_family)}


def family_of(spec) -> ModelFamily:
    """The family of a ``ModelSpec`` (or of a family name)."""
    return FAMILIES[spec if isinstance(spec, str) else spec.family]


def format_owner(fmt: str) -> ModelFamily | None:
    """The family that reads the single-file published format ``fmt`` (None: no family reads it alone)."""
    return next((f for f in FAMILIES.values() if fmt in f.formats), None)


def detect_format(obj) -> str | None:
    """Which published format a loaded checkpoint object is, by its contents (None: not recognised)."""
    return next((found for f in FAMILIES.values() if (found := f.detect(obj)) is not None), None)


__all__ = ["FAMILIES", "SAMPLERS", "ModelFamily", "TilePlan", "detect_format", "family_of", "format_owner", "output_space_plan"]
