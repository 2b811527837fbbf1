"""The S3Diff family: SD-Turbo with LoRA on the VAE encoder and the UNet, modulated per image by a degradation
estimator's scores (``engine/s3diff.py``; Zhang et al., arXiv:2409.17058).

Two published files, both in the authors' Hub repository: ``s3diff.pkl`` (the LoRA factors, the UNet's retrained
``conv_in``, the modulation MLPs and block embeddings; a torch pickle read with ``weights_only=True``) and
``de_net.pth`` (MM-RealSR's degradation estimator, the manifest's ``[NAME.estimator]``). They are converted once
to srx's saved-model layout.

Upscaling follows the authors' ``inference_s3diff.py``: the estimator scores the whole low-resolution image; the
input is upsampled bilinearly (float, ``align_corners=False``) and tiled in output space; each tile is padded
(reflect) to a multiple of 64; positive and negative prompts with guidance 1.07; the color fix (wavelet by
default) takes the upsampled input on the authors' 8-bit levels. Where they differ: for images larger than one
tile the authors tile the UNet's latent (96 latent pixels, Gaussian weights) and the VAE with its own hook,
srx tiles the whole network in output space (768-pixel tiles overlapping by 256, the same latent extent).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from ..errors import CheckpointFormatError, UnknownModelError
from .base import ModelFamily, TilePlan, output_space_plan
from .sd_onestep import prefixed_tensors

S3DIFF_FORMAT = "s3diff-pkl"
# peft's LoraConfig default, which the authors never change: the LoRA scale is 8 / r.
LORA_ALPHA = 8
# The authors' default negative prompt (``--neg_prompt`` of their inference script); the positive one is the
# manifest's default prompt.
NEGATIVE_PROMPT = ("oil painting, cartoon, blur, dirty, messy, low quality, deformation, low resolution, "
                   "oversmooth")
_PKL_KEYS = ("rank_unet", "rank_vae", "state_dict_unet", "state_dict_vae", "state_dict_vae_de_mlp",
             "state_dict_unet_de_mlp", "state_dict_vae_block_mlp", "state_dict_unet_block_mlp",
             "state_dict_vae_fuse_mlp", "state_dict_unet_fuse_mlp", "w", "state_embeddings")
_ADAPTER_NAMES = {"unet": "default", "vae": "vae_skip"}  # the peft adapter names in the authors' state dicts


def _lora_tensors(component: str, state: Any, path: Path) -> dict[str, Any]:
    """``<layer>.lora_A.<adapter>.weight`` (peft's key) -> ``<component>.<layer>.lora_A.weight``; other keys
    (the UNet's ``conv_in``) keep their names."""
    adapter = _ADAPTER_NAMES[component]
    out = {}
    for k, v in prefixed_tensors(component, state, path, f"state_dict_{component}").items():
        for factor in ("lora_A", "lora_B"):
            k = k.replace(f".{factor}.{adapter}.weight", f".{factor}.weight")
        if ".lora_" in k and not k.endswith((".lora_A.weight", ".lora_B.weight")):
            raise CheckpointFormatError(f"{path}: unexpected LoRA key {k[len(component) + 1:]!r} (adapter "
                                        f"{adapter!r} expected)")
        out[k] = v
    return out


def convert_s3diff(ckpt: dict, path: Path):
    """``s3diff.pkl``: the LoRA of both components, the UNet's ``conv_in`` and the modulation MLPs (without the
    estimator, a file of its own)."""
    from ..models.checkpoints import ConvertedCheckpoint

    missing = [k for k in _PKL_KEYS if k not in ckpt]
    if missing:
        raise CheckpointFormatError(f"{path}: not an S3Diff checkpoint (missing {', '.join(missing)})")
    embeddings = ckpt["state_embeddings"]
    if not isinstance(embeddings, dict) or not {"state_dict_vae_block", "state_dict_unet_block"} <= set(embeddings):
        raise CheckpointFormatError(f"{path}: state_embeddings is not S3Diff's block embeddings")
    modulation = {"W": ckpt["w"]}
    for name in ("vae_de_mlp", "unet_de_mlp", "vae_block_mlp", "unet_block_mlp", "vae_fuse_mlp", "unet_fuse_mlp"):
        modulation |= prefixed_tensors(name, ckpt[f"state_dict_{name}"], path, f"state_dict_{name}")
    for part in ("vae", "unet"):
        modulation |= prefixed_tensors(f"{part}_block_embeddings", embeddings[f"state_dict_{part}_block"], path,
                                       f"state_embeddings.state_dict_{part}_block")
    tensors = (_lora_tensors("unet", ckpt["state_dict_unet"], path) | _lora_tensors("vae", ckpt["state_dict_vae"], path)
               | {f"modulation.{k}": v.detach() for k, v in modulation.items()})
    net = {"rank_unet": int(ckpt["rank_unet"]), "rank_vae": int(ckpt["rank_vae"]), "lora_alpha": LORA_ALPHA}
    return ConvertedCheckpoint(tensors=tensors, source_format=S3DIFF_FORMAT, net=net)


def read_estimator(path: Path) -> dict[str, Any]:
    """``de_net.pth``: the estimator's state dict, prefixed ``estimator.``."""
    from ..models.checkpoints import safe_torch_load

    state = safe_torch_load(path, "de_net.pth")
    if not isinstance(state, dict) or "conv_first.0.weight" not in state:
        raise CheckpointFormatError(f"{path}: not S3Diff's degradation estimator (de_net.pth: a DEResNet state dict)")
    return prefixed_tensors("estimator", state, path, "the estimator")


class S3DiffFamily(ModelFamily):
    name = "s3diff"
    text_conditioned = True
    formats: ClassVar = {S3DIFF_FORMAT: convert_s3diff}

    def detect(self, obj: Any) -> str | None:
        return S3DIFF_FORMAT if isinstance(obj, dict) and "state_dict_unet_fuse_mlp" in obj else None

    def source_files(self, spec, download: bool) -> list[Path]:
        """``s3diff.pkl`` and ``de_net.pth``: one converted model directory, keyed by both hashes."""
        from ..models import hub

        return [*super().source_files(spec, download), hub.resolve_weights(hub.estimator_spec(spec), download=download)]

    def convert(self, spec, files: list[Path]):
        ckpt = super().convert(spec, files[:1])
        ckpt.tensors |= read_estimator(files[1])
        return ckpt

    def verify(self, spec, converted: Path | None) -> str:
        line = super().verify(spec, converted)
        from ..models import hub

        path = hub.resolve_weights(hub.estimator_spec(spec), download=False)
        read_estimator(path)
        return f"{line}; estimator {path} OK (sha256 {hub.sha256_file(path)})"

    def build(self, spec, ckpt, *, download: bool, merge_lora: bool):
        """The network (its LoRA is modulated per image, so it is never merged: ``merge_lora`` does not apply)."""
        from ..engine.s3diff import S3DiffSD
        from ..models import hub

        if spec.base is None:
            raise UnknownModelError(f"model {spec.name!r} names no base model; pass --base")
        return S3DiffSD.from_checkpoint(hub.resolve_base(spec.base, spec.name, download=download), ckpt)

    def plan(self, model, lr, opts, size: tuple[int, int], requested=None) -> TilePlan:
        import torch

        from ..engine.pipeline import truncate_to_8bit
        from ..engine.resize import to_unit_float
        from ..engine.s3diff import bilinear_upsample

        unit = to_unit_float(lr.cpu()).clamp(0, 1)  # the authors read 8-bit images as value / 255
        reference = bilinear_upsample(unit, *size)
        scores = model.net.estimate_degradation(unit)  # the whole low-resolution image, once
        positive = model.net.encode_text(model.prompt_for(reference, requested))
        negative = model.net.encode_text(NEGATIVE_PROMPT)
        t = torch.tensor([float(model.fixed_timestep())])
        generator = None if opts.seed is None else torch.Generator(device=model.device).manual_seed(opts.seed)
        eight_bit = lr.dtype == torch.uint8
        plan = output_space_plan(model, reference, opts,
                                 lambda x: model.net(x, scores, positive, negative, t, generator),
                                 authors_8bit_levels=eight_bit)
        # Their color-fix reference is the upsampled input through ToPILImage: truncated to 8-bit levels.
        return replace(plan, color_reference=(lambda: truncate_to_8bit(reference)) if eight_bit else plan.color_reference)

    def stages(self, net) -> dict[str, Any]:
        return {"estimator": net.estimator, "encode": net.vae.encoder, "unet": net.unet, "decode": net.vae.decoder}

    def flops_call(self, model, tile: int):
        import torch

        x = torch.zeros(1, 3, tile, tile, device=model.device)
        scores = model.net.estimate_degradation(torch.zeros(1, 3, tile // 4, tile // 4))
        text = model.net.encode_text("")
        t = torch.tensor([float(model.fixed_timestep())])
        return lambda: model.net(x, scores, text, text, t, None)

    def describe_defaults(self, spec) -> list[tuple[str, str]]:
        from ..engine.s3diff import GUIDANCE_SCALE

        return [("timestep", str(spec.defaults.timestep)),
                ("guidance", f"{GUIDANCE_SCALE} (classifier-free, negative prompt {NEGATIVE_PROMPT!r})"),
                ("input upsampling", "bilinear (float), padded to a multiple of 64")]


FAMILY = S3DiffFamily()
