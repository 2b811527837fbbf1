"""Training options: the fields every method shares, its loss weights, and the method's own options.

``TrainConfig`` holds what every method uses (data, optimisation, bookkeeping) and ``loss_weights``; what only
some methods use (LoRA rank, prompt, teacher, ...) is the method's ``Options`` dataclass
(``sr_cli/train/methods/``), in ``TrainConfig.options``. Recipes and flags spell both flat
(``lora_rank: 16``, ``--lora-rank 16``): ``resolve_config`` routes each name to where it belongs and refuses a
name the method does not have.

Precedence: command-line options > ``--config recipe.yaml`` > the method's defaults (``TrainMethod.defaults``,
its ``Options`` defaults and ``TrainMethod.loss_weights``) > the field defaults below. The resolved config is
saved (flat, as a recipe) beside every checkpoint and the exported model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError


def _method_class(name: str):
    # Imported here: the methods import torch (and this module for their type hints).
    from .methods import METHODS

    if name not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {name!r}")
    return METHODS[name]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _names(dataclass_or_instance) -> set[str]:
    return {f.name for f in fields(dataclass_or_instance)}


@dataclass
class TrainConfig:
    method: str = "osediff"  # a name in sr_cli.train.methods.METHODS
    data: list[str] = field(default_factory=list)  # folders of high-quality images, or paired folders with HR/ and LR/
    output: str = "runs/srx-model"  # the model directory written (checkpoints/ and logs inside)
    # data
    resolution: int = 512  # high-quality crop size (the model's output size during training)
    scale: int = 4  # super-resolution factor the model is trained for
    bicubic_prob: float = 0.0  # share of samples degraded by plain bicubic downsampling instead of Real-ESRGAN
    degradation: dict[str, Any] = field(default_factory=dict)  # overrides of DegradationConfig fields
    num_workers: int = 0  # DataLoader worker processes
    # optimisation
    batch_size: int = 1  # per process
    grad_accum: int = 1  # gradient accumulation steps
    max_steps: int = 100_000  # optimizer steps
    lr: float = 5e-5  # generator learning rate (AdamW)
    lr_aux: float = 5e-5  # learning rate of the auxiliary network (OSEDiff's fake-score LoRA, a discriminator)
    lr_schedule: str = "constant"  # constant | cosine (from lr_decay_start to max_steps, down to lr_min)
    lr_min: float = 0.0
    lr_decay_start: int = 0  # step where the cosine decay begins (constant before)
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16
    seed: int = 0
    # loss weights by term name (every term of the method; its paper's weights by default)
    loss_weights: dict[str, float] = field(default_factory=dict)
    perceptual_pretrained: bool = True  # False: LPIPS/DISTS/CLIP/DINOv2 with random weights (tests, offline smoke runs)
    # bookkeeping
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    validate_every: int = 500  # steps between validation images (0: never)
    validation_images: list[str] = field(default_factory=list)  # LR images upscaled through the engine
    log_every: int = 10
    resume: bool = False  # continue from the newest checkpoint in OUTPUT/checkpoints
    # the method's own options: an instance of its ``Options`` dataclass (a mapping is converted; None: defaults)
    options: Any = None

    def __post_init__(self):
        from .methods import check_loss_weights

        cls = _method_class(self.method)
        self.loss_weights = check_loss_weights(cls, self.loss_weights)
        self.options = method_options(cls, self.options)
        if self.resolution % (8 * self.scale):
            raise UsageError(f"--resolution must be a multiple of {8 * self.scale}, got {self.resolution}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UsageError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "max_steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1")
        if not 0 <= self.bicubic_prob <= 1:
            raise UsageError("bicubic_prob must be in [0, 1]")
        if self.lr_schedule not in ("constant", "cosine"):
            raise UsageError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")

    def __getattr__(self, name: str) -> Any:
        # A method option reads as an attribute too (``cfg.lora_rank``), as recipes and flags spell it.
        options = self.__dict__.get("options")
        if options is not None and name in _names(options):
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('method')!r} has no option {name!r}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of every learning rate at optimizer step ``step`` (a pure function: resume-exact)."""
        if self.lr_schedule == "constant" or step < self.lr_decay_start or self.lr <= 0:
            return 1.0
        span = max(1, self.max_steps - self.lr_decay_start)
        progress = min(1.0, (step - self.lr_decay_start) / span)
        floor = self.lr_min / self.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def to_dict(self) -> dict[str, Any]:
        """The config flat, as a recipe spells it (``resolve_config`` reads it back)."""
        out = asdict(self)
        options = out.pop("options")
        return {**out, **options}


def method_options(cls, given: Any):
    """``given`` (None, a mapping or an instance) as the method's validated ``Options``."""
    if isinstance(given, cls.Options):
        return given
    given = asdict(given) if is_dataclass(given) else dict(given or {})
    unknown = sorted(set(given) - _names(cls.Options))
    if unknown:
        raise UsageError(_not_an_option(cls, unknown[0]))
    return cls.Options(**given)


def _not_an_option(cls, name: str, spelled: str | None = None) -> str:
    """The error for an option ``name`` the method ``cls`` does not have (spelled as a flag unless given)."""
    from .methods import METHODS

    owners = [n for n, c in METHODS.items() if name in _names(c.Options)]
    where = f" (an option of {', '.join(owners)})" if owners else ""
    return f"{spelled or _flag(name)}: {cls.name} has no such option{where}"


def load_recipe(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: cannot read recipe ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a recipe must be a mapping of option names to values")
    return data


def resolve_config(method: str | None, recipe: dict[str, Any] | None = None, **overrides) -> TrainConfig:
    """Method defaults, then the recipe, then explicit (non-None) overrides; loss weights merge term by term.

    Recipe keys and overrides are flat: each name goes to ``TrainConfig`` or to the method's ``Options``; a name
    that is neither is a usage error. A recipe's old-style ``w_NAME: VALUE`` keys are read as
    ``loss_weights: {NAME: VALUE}``.
    """
    recipe = dict(recipe or {})
    method = method or recipe.get("method") or "osediff"
    cls = _method_class(method)
    common = _names(TrainConfig) - {"options"}
    own = _names(cls.Options)
    weights: dict[str, Any] = {}
    for key in [k for k in recipe if k.startswith("w_") and k not in common | own]:
        weights[key[2:]] = recipe.pop(key)
    recipe_weights = recipe.pop("loss_weights", None) or {}
    if not isinstance(recipe_weights, dict):
        raise UsageError("recipe: loss_weights must be a mapping of loss term names to weights")
    weights.update(recipe_weights)
    unknown = sorted(set(recipe) - common - own)
    if unknown:
        raise UsageError("recipe: " + _not_an_option(cls, unknown[0], unknown[0]))
    weights.update(overrides.pop("loss_weights", None) or {})
    values: dict[str, Any] = dict(cls.defaults)
    values.update(recipe)
    values.update({k: v for k, v in overrides.items() if v is not None})
    options = {k: values.pop(k) for k in list(values) if k in own}
    if set(values) - common:
        raise UsageError(_not_an_option(cls, sorted(set(values) - common)[0]))
    values.update(method=method, loss_weights=weights, options=options)
    return TrainConfig(**values)


def parse_loss_weights(items: list[str] | None) -> dict[str, float]:
    """``--loss-weight NAME=VALUE`` options as a mapping."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--loss-weight {item!r}: expected NAME=NUMBER, e.g. --loss-weight lpips=2") from None
    return out
