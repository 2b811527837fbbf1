"""Training options: one typed dataclass, per-method paper defaults, YAML recipes.

Precedence: command-line options > ``--config recipe.yaml`` > the method's defaults (``TrainMethod.defaults``
and ``TrainMethod.loss_weights``, ``sr_cli/train/methods/``) > the field defaults below. The resolved config is
saved beside every checkpoint and the exported model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError


def _method_class(name: str):
    from .methods import METHODS

    if name not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {name!r}")
    return METHODS[name]


@dataclass
class TrainConfig:
    method: str = "osediff"  # a name in sr_cli.train.methods.METHODS
    data: list[str] = field(default_factory=list)  # folders of high-quality images, or paired folders with HR/ and LR/
    output: str = "runs/srx-model"  # the model directory written (checkpoints/ and logs inside)
    base: str | None = None  # base diffusion model: diffusers dir or org/name[@rev] (default: the method's)
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
    lr_aux: float = 5e-5  # learning rate of the auxiliary network (OSEDiff's fake-score LoRA, DFOSD's discriminator)
    lr_schedule: str = "constant"  # constant | cosine (from lr_decay_start to max_steps, down to lr_min)
    lr_min: float = 0.0
    lr_decay_start: int = 0  # step where the cosine decay begins (constant before)
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False  # trade compute for memory in the UNet
    seed: int = 0
    # model
    lora_rank: int = 4
    lora_alpha: float | None = None  # None: peft's default (8), as the OSEDiff and Hero-SR code leave it
    timestep: int = 999  # fixed timestep (ignored with the DTSM)
    prompt: str = ""  # fixed text condition (no tagger is run)
    neg_prompt: str = ""  # OSEDiff's VSD negative prompt
    cfg: float = 7.5  # OSEDiff's VSD classifier-free guidance scale
    # loss weights by term name (every term of the method; its paper's weights by default)
    loss_weights: dict[str, float] = field(default_factory=dict)
    lpips_net: str = "vgg"  # LPIPS trunk (OSEDiff uses vgg)
    perceptual_pretrained: bool = True  # False: LPIPS/DISTS/CLIP with random weights (tests, offline smoke runs)
    clip_model: str = "openai/clip-vit-base-patch32"  # CLIP for Hero-SR's TD-PAL / ID-SAL (a Hub id or a directory)
    lite_channels: list[int] = field(default_factory=lambda: [48, 96, 160])  # lite UNet widths
    lite_blocks: int = 2  # lite residual blocks per level and direction
    # distillation (`srx distill`): a multi-step ResShift-family teacher -> one-step student
    teacher: str = "resshift"  # registry name or model directory of the teacher (its VQ autoencoder is kept)
    student: str | None = None  # initial student weights (a ResShift-family model); default: a copy of the teacher
    inn_weights: str | None = None  # HF-Diff's inn_pretrained.pt
    dino_model: str = "facebook/dinov2-small"  # a Hub id or a directory (transformers Dinov2Model)
    # bookkeeping
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    validate_every: int = 500  # steps between validation images (0: never)
    validation_images: list[str] = field(default_factory=list)  # LR images upscaled through the engine
    log_every: int = 10
    resume: bool = False  # continue from the newest checkpoint in OUTPUT/checkpoints

    def __post_init__(self):
        from .methods import check_loss_weights

        self.loss_weights = check_loss_weights(_method_class(self.method), self.loss_weights)
        if self.resolution % (8 * self.scale):
            raise UsageError(f"--resolution must be a multiple of {8 * self.scale}, got {self.resolution}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UsageError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "max_steps", "checkpoint_every", "lora_rank"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1")
        if not 0 <= self.bicubic_prob <= 1:
            raise UsageError("bicubic_prob must be in [0, 1]")
        if self.lr_schedule not in ("constant", "cosine"):
            raise UsageError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of every learning rate at optimizer step ``step`` (a pure function: resume-exact)."""
        if self.lr_schedule == "constant" or step < self.lr_decay_start or self.lr <= 0:
            return 1.0
        span = max(1, self.max_steps - self.lr_decay_start)
        progress = min(1.0, (step - self.lr_decay_start) / span)
        floor = self.lr_min / self.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def base_or_default(self) -> str | None:
        """The base diffusion model (None for the lite model, which has none)."""
        return self.base or _method_class(self.method).base


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

    A recipe's old-style ``w_NAME: VALUE`` keys are read as ``loss_weights: {NAME: VALUE}``.
    """
    recipe = dict(recipe or {})
    method = method or recipe.get("method") or "osediff"
    cls = _method_class(method)
    known = {f.name for f in fields(TrainConfig)}
    weights: dict[str, Any] = {}
    for key in [k for k in recipe if k.startswith("w_") and k not in known]:
        weights[key[2:]] = recipe.pop(key)
    recipe_weights = recipe.pop("loss_weights", None) or {}
    if not isinstance(recipe_weights, dict):
        raise UsageError("recipe: loss_weights must be a mapping of loss term names to weights")
    weights.update(recipe_weights)
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise UsageError(f"recipe: unknown option(s) {', '.join(unknown)}")
    values: dict[str, Any] = dict(cls.defaults)
    values.update(recipe)
    weights.update(overrides.pop("loss_weights", None) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["method"] = method
    values["loss_weights"] = weights
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
