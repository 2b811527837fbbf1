"""What a model is: the typed, validated pieces of one manifest table (``ModelSpec``), and the option values srx
knows (samplers, color fixes, text conditions).

The lowest layer of the model store: it imports nothing of srx but its errors, so the engine, the families and the
registry (``registry.py``, which reads the manifest into these) all build on it without import loops.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ManifestError, OptionError

# Every sampler srx has: one step (all families), and the ResShift family's multi-step chains.
SAMPLERS = ("one-step", "deterministic", "stochastic")
# The color fixes of ``engine/color.py``, applied once to the whole image.
COLOR_FIXES = ("adain", "wavelet", "none")
TEXT_CONDITIONS = ("prompt", "learned")
# OSEDiff's prompt extractors: RAM + DAPE tags open the prompt (``engine/dape.py``), or no tags.
EXTRACTORS = ("dape", "none")


def check_detail(value: str | float, error) -> str | float:
    """``value`` as a detail setting ("auto" or a float in [0, 1]); raises ``error(message)`` otherwise."""
    if value == "auto":
        return value
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0 <= number <= 1:  # NaN (not a number) fails too
        raise error(f"must be auto or a number in [0, 1], got {value!r}")
    return number


@dataclass(frozen=True)
class BaseModel:
    """A pretrained diffusion model: a Hub repo (+ revision) or a local directory (diffusers layout)."""

    repo: str | None = None
    revision: str = "main"
    path: str | None = None

    def describe(self) -> str:
        return self.path if self.path else f"{self.repo}@{self.revision}"


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's own weights file comes from."""

    filename: str
    repo: str | None = None
    revision: str = "main"
    url: str | None = None
    manual: bool = False
    instructions: str = ""
    sha256: str | None = None
    path: str | None = None  # a local file (a --weights override or a model directory)
    # Shipped inside the package: true = sr_cli/weights/<name>/ (a model directory); a name = that model's folder
    # (two registry models with one set of weights and other defaults: lite-faithful is lite at --detail 0).
    embedded: bool | str = False
    license: str = ""  # a file with a license of its own (OSEDiff's RAM/DAPE prompt extractor)

    @property
    def kind(self) -> str:
        if self.embedded:
            return "embedded"
        if self.path:
            return "local"
        if self.repo:
            return "hub"
        if self.url:
            return "url"
        return "manual"


@dataclass(frozen=True)
class Defaults:
    """Per-model inference defaults; every one can be overridden on the command line."""

    scale: float = 4.0
    timestep: int | str = 999  # a fixed timestep, or "dtsm" (Hero-SR's per-image choice)
    text_condition: str = "prompt"  # "prompt": CLIP-encoded text; "learned": a trained embedding (DFOSD)
    prompt_template: str = "{prompt}"  # OSEDiff: "{tags}, {prompt}," (tags come from DAPE when available)
    prompt: str = ""
    color_fix: str = "adain"
    tile: int = 512
    overlap: int = 64
    tile_batch: int = 1
    sampler: str = "one-step"  # ResShift family: "deterministic" (SinSR's DDIM-like) or "stochastic" (ResShift's)
    # Models with a detail weight set (``lite``): "auto" (from each input's softness, engine/detail.py) or a
    # blend weight in [0, 1]; None: the model has no detail set (and refuses ``--detail``).
    detail: str | float | None = None

    def __post_init__(self):
        if self.detail is not None:
            check_detail(self.detail, lambda msg: ManifestError(f"defaults.detail {msg}"))
        if self.sampler not in SAMPLERS:
            raise ManifestError(f"defaults.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.scale < 1:
            raise ManifestError(f"defaults.scale must be >= 1, got {self.scale}")
        if isinstance(self.timestep, str) and self.timestep != "dtsm":
            raise ManifestError(f"defaults.timestep must be an integer or 'dtsm', got {self.timestep!r}")
        if self.text_condition not in TEXT_CONDITIONS:
            raise ManifestError(f"defaults.text_condition must be one of {TEXT_CONDITIONS}")
        if self.color_fix not in COLOR_FIXES:
            raise ManifestError(f"defaults.color_fix must be one of {COLOR_FIXES}, got {self.color_fix!r}")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    format: str
    base: BaseModel | None
    weights: WeightsSource | None
    defaults: Defaults = field(default_factory=Defaults)
    autoencoder: WeightsSource | None = None  # ResShift family: the VQ-f4 autoencoder file
    # OSEDiff's prompt extractor: RAM's weights and the DAPE fine-tuning loaded over them (engine/dape.py).
    ram: WeightsSource | None = None
    dape: WeightsSource | None = None
    # S3Diff: the degradation estimator whose scores modulate its LoRA (de_net.pth, families/s3diff.py).
    estimator: WeightsSource | None = None
    description: str = ""
    paper: str = ""
    license: str = ""
    base_license: str = ""
    # For the spec of a file several models share (the ResShift family's autoencoder, cached under a
    # "shared-..." name): the model the user named, for messages. Set by srx, never by the manifest.
    part_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest keys (what srx_model.json holds): without srx's own ``part_of``."""
        d = asdict(self)
        d.pop("part_of")
        return d


def build_table(cls, table: Any, where: str):
    """``cls(**table)`` for a manifest table: unknown keys and wrong arguments are ManifestErrors naming ``where``."""
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: expected a table, got {type(table).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return cls(**table)
    except TypeError as e:
        raise ManifestError(f"{where}: {e}") from None


def prompt_extractor_for(spec: ModelSpec, requested: str | None) -> str:
    """``dape`` or ``none`` for this model: DAPE by default where the model has one (OSEDiff) and its text
    condition is a prompt whose template takes ``{tags}``; other models ignore the option."""
    if requested is not None and requested not in EXTRACTORS:
        raise OptionError("prompt_extractor", f"must be one of {', '.join(EXTRACTORS)}, got {requested!r}")
    d = spec.defaults
    if spec.ram is None or spec.dape is None or d.text_condition != "prompt" or "{tags}" not in d.prompt_template:
        return "none"
    return requested or "dape"
