"""``UpscaleOptions``: the settings of one upscale call, in plain values (no torch: the light client of
``srx serve`` and the command line build them before any model is loaded)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import OptionError
from ..families import family_of
from ..models.spec import (
    COLOR_FIXES,
    SAMPLERS,
    ModelSpec,
    check_detail,
    prompt_extractor_for,
)


@dataclass(frozen=True)
class UpscaleOptions:
    """Settings of one upscale call; ``None`` fields take the model's defaults."""

    scale: float | None = None
    tile: int | None = None
    overlap: int | None = None
    tile_batch: int | None = None
    color_fix: str | None = None
    prompt: str | None = None
    seed: int | None = None
    sampler: str | None = None  # ResShift family: one-step | deterministic | stochastic
    prompt_extractor: str | None = None  # OSEDiff: "dape" (its default: tags open the prompt) | "none"
    # Dual-LoRA models (PiSA-SR): strengths of the pixel-level and semantic-level LoRAs.
    pixel_guidance: float | None = None
    semantic_guidance: float | None = None
    # Models with a detail weight set (lite): "auto" (from the input) or the sharp set's weight in [0, 1].
    detail: str | float | None = None

    def resolved(self, spec: ModelSpec) -> "UpscaleOptions":
        d = spec.defaults
        guidance = self._guidance(spec)
        opts = UpscaleOptions(
            scale=d.scale if self.scale is None else float(self.scale),  # output factor
            tile=d.tile if self.tile is None else int(self.tile),
            overlap=d.overlap if self.overlap is None else int(self.overlap),
            tile_batch=d.tile_batch if self.tile_batch is None else int(self.tile_batch),
            color_fix=d.color_fix if self.color_fix is None else self.color_fix,
            prompt=d.prompt if self.prompt is None else self.prompt,
            seed=self.seed,
            sampler=d.sampler if self.sampler is None else self.sampler,
            prompt_extractor=prompt_extractor_for(spec, self.prompt_extractor),
            pixel_guidance=guidance[0],
            semantic_guidance=guidance[1],
            detail=self._detail(spec),
        )
        opts.check()
        return opts

    def _guidance(self, spec: ModelSpec) -> tuple[float | None, float | None]:
        """The (pixel, semantic) guidance: the family's defaults where not given; (None, None) for models
        without the two LoRAs, which refuse the options."""
        defaults = family_of(spec).guidance_defaults
        given = {"pixel_guidance": self.pixel_guidance, "semantic_guidance": self.semantic_guidance}
        if defaults is None:
            field = next((k for k, v in given.items() if v is not None), None)
            if field is not None:
                raise OptionError(field, f"applies to models with a pixel and a semantic LoRA (pisa-sr); "
                                         f"{spec.name} has none")
            return None, None
        return tuple(d if v is None else float(v) for v, d in zip(given.values(), defaults))

    def _detail(self, spec: ModelSpec) -> str | float | None:
        """The detail setting: the model's default where not given; None for models without a detail set."""
        if spec.defaults.detail is None:
            if self.detail is not None:
                raise OptionError("detail", f"applies to models with a detail weight set (lite); {spec.name} "
                                            f"has none")
            return None
        if self.detail is None:
            return spec.defaults.detail
        return check_detail(self.detail, lambda msg: OptionError("detail", msg))

    def check(self) -> None:
        """Raise an ``OptionError`` naming the field (the CLI names its flag) for a value out of range."""
        if self.scale < 1:
            raise OptionError("scale", f"must be >= 1, got {self.scale}")
        if self.tile < 0 or (self.tile and self.tile % 8):
            raise OptionError("tile", f"must be 0 (no tiling) or a positive multiple of 8, got {self.tile}")
        if self.tile and not 0 <= self.overlap < self.tile:
            raise OptionError("overlap", f"must be in [0, tile), got {self.overlap} with tile {self.tile}")
        if self.tile_batch < 1:
            raise OptionError("tile_batch", f"must be >= 1, got {self.tile_batch}")
        if self.color_fix not in COLOR_FIXES:
            raise OptionError("color_fix", f"must be one of {', '.join(COLOR_FIXES)}, got {self.color_fix!r}")
        if self.sampler not in SAMPLERS:
            raise OptionError("sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        for field in ("pixel_guidance", "semantic_guidance"):
            value = getattr(self, field)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise OptionError(field, f"must be a finite number >= 0, got {value}")
