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

The same keys (as JSON) describe a saved model directory (``srx_model.json``), see checkpoints.py. The typed
pieces (``ModelSpec``, ``Defaults``, ...) and the option values they are checked against live in ``spec.py``.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ManifestError, UnknownModelError
from .spec import BaseModel, Defaults, ModelSpec, WeightsSource, build_table

__all__ = ["BaseModel", "Defaults", "ModelSpec", "WeightsSource", "build_table", "family_names", "get_spec",
           "is_model_dir", "manifest_text", "parse_manifest", "registry", "spec_from_dict"]


def family_names() -> tuple[str, ...]:
    """The manifest's family names: one module each in ``sr_cli/families/``.

    Imported when called: the families build on the model store (its checkpoint formats), so the store cannot
    import them when it loads."""
    from ..families import FAMILIES

    return tuple(FAMILIES)


def spec_from_dict(name: str, table: dict[str, Any], where: str) -> ModelSpec:
    """Build a ModelSpec from a manifest table (or a model directory's JSON)."""
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: [{name}] must be a table")
    table = dict(table)
    table.pop("name", None)
    for key in ("family", "format"):
        if key not in table:
            raise ManifestError(f"{where}: [{name}] is missing '{key}'")
    families = family_names()
    if table["family"] not in families:
        raise ManifestError(f"{where}: [{name}] has unknown family {table['family']!r} (known: {', '.join(families)})")
    base = table.pop("base", None)
    weights = table.pop("weights", None)
    autoencoder = table.pop("autoencoder", None)
    tagger = {key: table.pop(key, None) for key in ("ram", "dape", "estimator")}  # auxiliary models' files
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
                                                   "ram", "dape", "estimator"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ManifestError(f"{where}: [{name}] unknown key(s) {', '.join(unknown)}")
    return ModelSpec(name=name, base=base_spec, weights=weights_spec, defaults=spec_defaults, autoencoder=ae_spec,
                     **tagger, **table)


def _embedded(name: str, src: WeightsSource) -> WeightsSource:
    from dataclasses import replace

    folder = resources.files("sr_cli").joinpath("weights", src.embedded if isinstance(src.embedded, str) else name)
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
