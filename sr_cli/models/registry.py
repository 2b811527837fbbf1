"""The model registry: ``weights_manifest.toml`` parsed into frozen, typed specs.

One table per model::

    [osediff]
    family = "sd-onestep"            # which model family runs it (sr_cli/families/)
    format = "osediff-pkl"           # how its weights file is laid out (read by its family)
    description, paper, license = "..."
    [osediff.base]                   # the pretrained diffusion model it builds on
    repo = "stabilityai/stable-diffusion-2-1-base"
    revision = "main"
    [osediff.weights]                # where the one-step weights come from: one of
    repo/filename/revision           #   a Hugging Face Hub file
    url/filename                     #   a URL (downloaded into the srx cache)
    manual = true, filename, instructions   # a file the user downloads by hand (Google Drive)
    sha256 = "..."                   # optional pin; otherwise recorded on first download
    [osediff.defaults]               # scale, timestep ("dtsm" for Hero-SR), prompt policy, color fix, tiling

The same keys (as JSON) describe a saved model directory (``srx_model.json``), see checkpoints.py.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ManifestError, UnknownModelError
from ..families import FAMILIES as FAMILY_OBJECTS
from ..families import SAMPLERS  # the samplers' one definition (also checked by Defaults below)

FAMILIES = tuple(FAMILY_OBJECTS)  # the manifest's family names (sr_cli/families/, one module each)
COLOR_FIXES = ("adain", "wavelet", "none")
TEXT_CONDITIONS = ("prompt", "learned")


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
    embedded: bool = False  # shipped inside the package (sr_cli/weights/<name>/, a model directory)
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

    def __post_init__(self):
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


def spec_from_dict(name: str, table: dict[str, Any], where: str) -> ModelSpec:
    """Build a ModelSpec from a manifest table (or a model directory's JSON)."""
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: [{name}] must be a table")
    table = dict(table)
    table.pop("name", None)
    for key in ("family", "format"):
        if key not in table:
            raise ManifestError(f"{where}: [{name}] is missing '{key}'")
    if table["family"] not in FAMILIES:
        raise ManifestError(f"{where}: [{name}] has unknown family {table['family']!r} (known: {', '.join(FAMILIES)})")
    base = table.pop("base", None)
    weights = table.pop("weights", None)
    autoencoder = table.pop("autoencoder", None)
    tagger = {key: table.pop(key, None) for key in ("ram", "dape")}
    defaults = table.pop("defaults", {})
    base_spec = build_table(BaseModel, base, f"{where}: [{name}.base]") if base is not None else None
    if base_spec is not None and not (base_spec.repo or base_spec.path):
        raise ManifestError(f"{where}: [{name}.base] needs 'repo' or 'path'")
    weights_spec = build_table(WeightsSource, weights, f"{where}: [{name}.weights]") if weights is not None else None
    if weights_spec is not None and weights_spec.embedded:
        weights_spec = _embedded(name, weights_spec)
    if weights_spec is not None and weights_spec.kind == "manual" and not weights_spec.manual:
        raise ManifestError(f"{where}: [{name}.weights] needs one of 'repo', 'url', 'path' or 'manual = true'")
    ae_spec = build_table(WeightsSource, autoencoder, f"{where}: [{name}.autoencoder]") if autoencoder is not None else None
    tagger = {key: build_table(WeightsSource, src, f"{where}: [{name}.{key}]") if src is not None else None
              for key, src in tagger.items()}
    spec_defaults = build_table(Defaults, defaults, f"{where}: [{name}.defaults]")
    known = {f.name for f in fields(ModelSpec)} - {"name", "base", "weights", "defaults", "autoencoder", "part_of",
                                                   "ram", "dape"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ManifestError(f"{where}: [{name}] unknown key(s) {', '.join(unknown)}")
    return ModelSpec(name=name, base=base_spec, weights=weights_spec, defaults=spec_defaults, autoencoder=ae_spec,
                     **tagger, **table)


def _embedded(name: str, src: WeightsSource) -> WeightsSource:
    from dataclasses import replace

    folder = resources.files("sr_cli").joinpath("weights", name)
    return replace(src, path=str(folder))


def parse_manifest(text: str, where: str = "weights_manifest.toml") -> dict[str, ModelSpec]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{where}: not valid TOML ({e})") from None
    return {name: spec_from_dict(name, table, where) for name, table in data.items()}


def manifest_text() -> str:
    return resources.files("sr_cli").joinpath("weights_manifest.toml").read_text(encoding="utf-8")


_REGISTRY: dict[str, ModelSpec] | None = None


def registry() -> dict[str, ModelSpec]:
    """All models of the packaged manifest, by name."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = parse_manifest(manifest_text())
    return _REGISTRY


def get_spec(name: str) -> ModelSpec:
    models = registry()
    if name not in models:
        raise UnknownModelError(
            f"unknown model {name!r}: not in the registry ({', '.join(sorted(models))}) and not a model directory"
        )
    return models[name]


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / "srx_model.json").is_file()
