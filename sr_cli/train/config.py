"""Training options: one typed dataclass, per-method paper defaults, YAML recipes.

Precedence: command-line options > ``--config recipe.yaml`` > the method's defaults (``METHOD_DEFAULTS``)
> the field defaults below. The resolved config is saved beside every checkpoint and the exported model.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError

METHODS = ("osediff", "hero-sr", "dfosd", "lite", "sinsr", "vpd-sr", "hf-diff")
DISTILL_METHODS = ("sinsr", "vpd-sr", "hf-diff")  # `srx distill`: ResShift teacher -> one-step student

# Hero-SR's Table 1 pairs are not in the paper's text; these follow CLIP-IQA's antonym prompts for the
# attributes the paper names (quality, sharpness, noise, clarity) plus naturalness.
HERO_SR_ATTRIBUTE_PROMPTS: tuple[tuple[str, str], ...] = (
    ("Good photo.", "Bad photo."),
    ("Sharp photo.", "Blurry photo."),
    ("Clean photo.", "Noisy photo."),
    ("Clear photo.", "Unclear photo."),
    ("Natural photo.", "Synthetic photo."),
)


@dataclass
class TrainConfig:
    method: str = "osediff"  # osediff | hero-sr | dfosd
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
    # loss weights
    w_mse: float = 1.0
    w_lpips: float = 2.0
    w_vsd: float = 1.0
    w_td_pal: float = 0.0
    w_id_sal: float = 0.0
    w_ea_dists: float = 0.0
    w_adv: float = 0.0
    w_l1: float = 0.0  # pixel L1 (Charbonnier), the lite model's loss
    lpips_net: str = "vgg"  # LPIPS trunk (OSEDiff uses vgg)
    perceptual_pretrained: bool = True  # False: LPIPS/DISTS/CLIP with random weights (tests, offline smoke runs)
    clip_model: str = "openai/clip-vit-base-patch32"  # CLIP for Hero-SR's TD-PAL / ID-SAL (a Hub id or a directory)
    lite_channels: list[int] = field(default_factory=lambda: [48, 96, 160])  # lite UNet widths
    lite_blocks: int = 2  # lite residual blocks per level and direction
    # distillation (`srx distill`): a multi-step ResShift-family teacher -> one-step student
    teacher: str = "resshift"  # registry name or model directory of the teacher (its VQ autoencoder is kept)
    student: str | None = None  # initial student weights (a ResShift-family model); default: a copy of the teacher
    w_distill: float = 1.0  # MSE of the student's x0 to the teacher's deterministic 15-step x0 (latent)
    w_inverse: float = 0.0  # SinSR inverse loss: student(x0_teacher, t=0) -> x_T
    w_consistency: float = 0.0  # SinSR consistency-preserving loss: student(student(x0_gt, 0), T-1) -> x0_gt
    w_hfp: float = 0.0  # VPD-SR high-frequency (Haar LH/HL/HH) loss between student and teacher latents
    w_clip_sem: float = 0.0  # VPD-SR CLIP semantic loss: 1 - cos(CLIP(SR), CLIP(GT))
    w_inn: float = 0.0  # HF-Diff high-frequency perceptual loss through the invertible network
    w_dino: float = 0.0  # HF-Diff Jensen-Shannon divergence of DINOv2 embeddings (SR vs GT)
    inn_weights: str | None = None  # HF-Diff's inn_pretrained.pt
    dino_model: str = "facebook/dinov2-small"  # a Hub id or a directory (transformers Dinov2Model)
    # bookkeeping
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    validate_every: int = 500  # steps between validation images (0: never)
    validation_images: list[str] = field(default_factory=list)  # LR images upscaled through the engine
    log_every: int = 10
    resume: bool = False  # continue from the newest checkpoint in OUTPUT/checkpoints

    def __post_init__(self):
        if self.method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
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
        return self.base or METHOD_DEFAULTS[self.method]["base"]


METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    # OSEDiff (NeurIPS 2024): SD 2.1-base, LoRA r4 on VAE encoder + UNet (+ full conv_in), MSE + 2 LPIPS + 1 VSD.
    "osediff": {"base": "stabilityai/stable-diffusion-2-1-base", "lora_rank": 4, "lr": 5e-5, "lr_aux": 5e-5,
                "w_mse": 1.0, "w_lpips": 2.0, "w_vsd": 1.0, "timestep": 999, "cfg": 7.5, "lpips_net": "vgg"},
    # Hero-SR: sd-turbo, LoRA r16, DTSM from scratch, 2 MSE + 5 LPIPS + 1 TD-PAL + 0.5 ID-SAL (frozen CLIP).
    "hero-sr": {"base": "stabilityai/sd-turbo", "lora_rank": 16, "lr": 5e-5, "w_mse": 2.0, "w_lpips": 5.0,
                "w_vsd": 0.0, "w_td_pal": 1.0, "w_id_sal": 0.5, "prompt": " "},
    # DFOSD: LoRA r16 alpha 16, learnable text embedding, MSE + EA-DISTS + 5e-3 adversarial
    # (noise-aware discriminator), lr 5e-5 / 5e-7.
    "dfosd": {"base": "stabilityai/stable-diffusion-2-1-base", "lora_rank": 16, "lora_alpha": 16.0, "lr": 5e-5,
              "lr_aux": 5e-7, "w_mse": 1.0, "w_lpips": 0.0, "w_vsd": 0.0, "w_ea_dists": 1.0, "w_adv": 5e-3,
              "timestep": 999},
    # srx's embedded lite model: a small x0-predicting UNet in the pixel-unshuffle latent, pixel L1 only,
    # trained on a mix of Real-ESRGAN degradations and plain bicubic downsampling.
    "lite": {"base": None, "lr": 2e-4, "w_mse": 0.0, "w_lpips": 0.0, "w_vsd": 0.0, "w_l1": 1.0, "resolution": 128,
             "batch_size": 16, "bicubic_prob": 0.5, "weight_decay": 0.0, "timestep": 0},
    # Distillation of the 15-step ResShift teacher (its deterministic sampler) into a one-step student, 256 GT crops.
    # SinSR (code): student = teacher copy, distill + inverse + consistency (1/1/1), AdamW 5e-5, no weight decay.
    "sinsr": {"base": None, "teacher": "resshift", "lr": 5e-5, "weight_decay": 0.0, "resolution": 256,
              "batch_size": 16, "w_mse": 0.0, "w_lpips": 0.0, "w_vsd": 0.0,
              "w_distill": 1.0, "w_inverse": 1.0, "w_consistency": 1.0},
    # VPD-SR: student = ResShift copy, distill + 0.1 HFP + 1 CLIP semantic + 0.1 hinge adversarial (batch 16).
    "vpd-sr": {"base": None, "teacher": "resshift", "lr": 5e-5, "lr_aux": 5e-5, "weight_decay": 0.0,
               "resolution": 256, "batch_size": 16, "w_mse": 0.0, "w_lpips": 0.0, "w_vsd": 0.0,
               "w_distill": 1.0, "w_hfp": 0.1, "w_clip_sem": 1.0, "w_adv": 0.1},
    # HF-Diff: fine-tunes SinSR with the SinSR losses + 0.2 INN HF-perceptual + 0.15 JS(DINOv2) (batch 32).
    "hf-diff": {"base": None, "teacher": "resshift", "student": "sinsr", "lr": 5e-5, "weight_decay": 0.0,
                "resolution": 256, "batch_size": 32, "w_mse": 0.0, "w_lpips": 0.0, "w_vsd": 0.0,
                "w_distill": 1.0, "w_inverse": 1.0, "w_consistency": 1.0, "w_inn": 0.2, "w_dino": 0.15},
}


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
    """Method defaults, then the recipe, then explicit (non-None) overrides."""
    recipe = dict(recipe or {})
    method = method or recipe.get("method") or "osediff"
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    known = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {k: v for k, v in METHOD_DEFAULTS[method].items() if k != "base"}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise UsageError(f"recipe: unknown option(s) {', '.join(unknown)}")
    values.update(recipe)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["method"] = method
    return TrainConfig(**values)
