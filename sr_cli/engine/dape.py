"""OSEDiff's DAPE prompts: RAM (Swin-L) fine-tuned as DAPE tags the upsampled input; the tags open the prompt.

What the authors' ``test_osediff.py`` does, step by step (and what this module reproduces):

1. The image RAM sees is the upsampled input (the one that enters the VAE), in [0, 1].
2. ``transforms.Resize((384, 384))`` on that tensor: bilinear, ``align_corners=False`` and, with the
   torchvision their requirements pin (0.15, with torch 2.0.1), **no antialiasing** for tensors; then
   ``Normalize`` with the ImageNet mean/std; then a cast to the model's dtype.
3. ``RAMLora.generate_tag``: a tag is kept when ``sigmoid(logit) > threshold[tag]`` (RAM's per-tag thresholds
   from ``ram_tag_list_threshold.txt``); kept tags are joined with ``", "`` in the order of the tag list.
4. The prompt is ``f"{tags}, {prompt},"`` (the model's ``prompt_template``).

Weights: ``ram_swin_large_14m.pth`` (``{"model": state_dict}``, Apache-2.0) and ``DAPE.pth`` (OSEDiff's
fine-tuning, loaded over RAM with ``strict=False``): LoRA factors (loralib, rank 8, alpha 1) on every Swin
``attn.qkv`` (q and v only) and on the tagging head's cross-attention query/key, plus any full tensors it
holds. The authors' model merges the LoRA factors into the weights when it is put in eval mode; so does
``merge_dape`` here, with the same arithmetic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import CheckpointFormatError
from ..models.checkpoints import safe_torch_load
from ..models.hub import tagger_file_spec
from ..nets.ram import RAM

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RAM_IMAGE_SIZE = 384  # OSEDiff builds RAM with image_size=384, vit="swin_l"
RAM_HEAD_HEADS = 4  # q2l_config.json: not recoverable from the weights
_WRAPPERS = ("model", "state_dict", "params")


def tag_list() -> list[str]:
    """RAM's 4585 tags, in the order of its outputs (package data, Apache-2.0: see sr_cli/tags/NOTICE)."""
    text = resources.files("sr_cli").joinpath("tags", "ram_tag_list.txt").read_text(encoding="utf-8")
    return text.splitlines()


def tag_thresholds() -> torch.Tensor:
    """RAM's per-tag thresholds as the authors build them (float32; with their defaults, exactly the file's)."""
    text = resources.files("sr_cli").joinpath("tags", "ram_tag_list_threshold.txt").read_text(encoding="utf-8")
    values = [float(s.strip()) for s in text.splitlines()]
    # RAMLora: a value above max_threshold (0.9) is kept, others become min(value + 0, 0.9).
    return torch.tensor([v if v > 0.9 else min(v, 0.9) for v in values], dtype=torch.float32)


# ----------------------------------------------------------------------------- checkpoints


def unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The flat state dict inside a checkpoint (bare, or under ``model``/``state_dict``/``params``)."""
    for _ in range(2):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointFormatError(f"{path}: not a RAM/DAPE checkpoint (no state dict inside)")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _published_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        # Recomputed by the network (the authors' loader deletes them too).
        if k.endswith(("relative_position_index", "attn_mask")):
            continue
        out[k.replace("vision_multi", "tagging_head")] = v  # an older name of the tagging head (RAM's loader)
    return out


def _load_mapped(path: Path) -> Any:
    """``torch.load(weights_only=True)`` memory-mapped: RAM's 5.6 GB file also holds a text decoder and encoder
    the tagger never reads, so only the tensors used are paged in. Files in the legacy (non-zip) format, and
    every error, go through ``safe_torch_load``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return safe_torch_load(path)


def read_ram(path: str | Path) -> dict[str, torch.Tensor]:
    """``ram_swin_large_14m.pth`` as a flat state dict with RAM's current names."""
    path = Path(path)
    sd = _published_names(unwrap(_load_mapped(path), path))
    if "label_embed" not in sd or "visual_encoder.patch_embed.proj.weight" not in sd:
        raise CheckpointFormatError(f"{path}: not a RAM checkpoint (no label_embed / visual_encoder weights)")
    return sd


def read_dape(path: str | Path) -> dict[str, torch.Tensor]:
    """``DAPE.pth``: what OSEDiff loads over RAM (LoRA factors and/or full tensors)."""
    path = Path(path)
    sd = _published_names(unwrap(safe_torch_load(path), path))
    if not any(k.endswith(("lora_A", "lora_B")) for k in sd) and "label_embed" not in sd:
        raise CheckpointFormatError(f"{path}: not a DAPE checkpoint (no LoRA factors and no RAM weights)")
    return sd


def is_dape_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    """DAPE's file holds LoRA factors of RAM's image encoder or tagging head (RAM's own file has none)."""
    return any(k.endswith("lora_A") and k.startswith(("visual_encoder.", "tagging_head.")) for k in sd)


def is_dape_file(path: str | Path) -> bool:
    """Whether ``path`` reads as DAPE weights (for ``srx models import``)."""
    try:
        return is_dape_state_dict(unwrap(safe_torch_load(path), Path(path)))
    except CheckpointFormatError:
        return False


TAGGER_KEYS = ("visual_encoder.", "image_proj.", "label_embed", "wordvec_proj.", "tagging_head.", "fc.")
_QKV = re.compile(r"visual_encoder\.layers\.\d+\.blocks\.\d+\.attn\.qkv$")
_TAG_ENCODER = re.compile(r"tag_encoder\.encoder\.layer\.(\d+)\.crossattention\.self\.(query|key)$")


def merge_dape(ram: dict[str, torch.Tensor], dape: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """RAM's state dict with DAPE loaded over it and its LoRA factors merged, as loralib's ``eval()`` does.

    Swin ``qkv`` is a loralib ``MergedLinear(r=8, enable_lora=[True, False, True])``: the q and v rows get
    ``conv1d(A, B, groups=2) * alpha/r``; BERT ``query``/``key`` are loralib ``Linear(r=8)``: ``B @ A * alpha/r``
    (alpha = 1). RAM ties the first layers of its ``tag_encoder`` to the tagging head (the same weight tensors),
    so LoRA factors saved under ``tag_encoder`` for those layers are merged into the tagging head as well.
    """
    merged = dict(ram)
    merged.update({k: v for k, v in dape.items() if not k.endswith(("lora_A", "lora_B"))})
    # Only the tagger's tensors (RAM's file also holds a text encoder/decoder that stay unread).
    merged = {k: v.float() if v.is_floating_point() else v for k, v in merged.items() if k.startswith(TAGGER_KEYS)}
    head_layers = _count(merged, r"tagging_head\.encoder\.layer\.(\d+)\.")
    for a_key in sorted(k for k in dape if k.endswith(".lora_A")):
        module = a_key.removesuffix(".lora_A")
        a, b = dape[a_key].float(), dape[module + ".lora_B"].float()
        if _QKV.match(module):
            r = a.shape[0] // 2
            delta = F.conv1d(a.unsqueeze(0), b.unsqueeze(-1), groups=2).squeeze(0)
            dim = delta.shape[0] // 2
            padded = delta.new_zeros((3 * dim, delta.shape[1]))
            padded[:dim], padded[2 * dim:] = delta[:dim], delta[dim:]  # rows of q and v; k has no LoRA
            target = module
            delta = padded * (1 / r)
        else:
            r = a.shape[0]
            delta = (b @ a) * (1 / r)
            target = module
            tied = _TAG_ENCODER.match(module)
            if tied:
                if int(tied.group(1)) >= head_layers:
                    continue  # an untied tag_encoder layer: not part of the tagger
                target = f"tagging_head.encoder.layer.{tied.group(1)}.crossattention.self.{tied.group(2)}"
            elif not module.startswith("tagging_head."):
                continue  # LoRA of parts the tagger does not run (text decoder...)
        key = target + ".weight"
        if key not in merged:
            raise CheckpointFormatError(f"DAPE LoRA factors for {module}, which RAM does not have")
        merged[key] = merged[key] + delta
    return merged


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def ram_config(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """RAM's constructor arguments, read off its state dict (only the head's head count is fixed)."""
    try:
        stages = _count(sd, r"visual_encoder\.layers\.(\d+)\.")
        depths = [_count(sd, rf"visual_encoder\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages)]
        table = [sd[f"visual_encoder.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(stages)]
        window = (round(table[0].shape[0] ** 0.5) + 1) // 2
        return dict(
            num_tags=sd["label_embed"].shape[0],
            image_size=RAM_IMAGE_SIZE,
            embed_dim=sd["visual_encoder.patch_embed.proj.weight"].shape[0],
            depths=tuple(depths),
            num_heads=tuple(t.shape[1] for t in table),
            window_size=window,
            head_layers=_count(sd, r"tagging_head\.encoder\.layer\.(\d+)\."),
            head_hidden=sd["fc.weight"].shape[1],
            head_heads=RAM_HEAD_HEADS,
            head_intermediate=sd["tagging_head.encoder.layer.0.intermediate.dense.weight"].shape[0],
        )
    except (KeyError, IndexError) as e:
        raise CheckpointFormatError(f"not a RAM Swin checkpoint (missing {e})") from None


def build_ram(sd: dict[str, torch.Tensor]) -> RAM:
    net = RAM(**ram_config(sd))
    wanted = net.state_dict()
    missing = sorted(set(wanted) - set(sd))
    if missing:
        raise CheckpointFormatError(f"RAM checkpoint lacks {len(missing)} tensors of the tagger (e.g. {missing[0]})")
    bad = [k for k in wanted if sd[k].shape != wanted[k].shape]
    if bad:
        raise CheckpointFormatError(f"RAM checkpoint: {bad[0]} has shape {tuple(sd[bad[0]].shape)}, "
                                    f"expected {tuple(wanted[bad[0]].shape)}")
    net.load_state_dict({k: sd[k] for k in wanted})
    return net.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- the tagger


@dataclass
class DapeTagger:
    """RAM + DAPE with RAM's tag list and thresholds: ``tags(image)`` -> ``"tag, tag, ..."``."""

    net: RAM
    tags_list: list[str]
    thresholds: torch.Tensor

    @classmethod
    def from_files(cls, ram_path: str | Path, dape_path: str | Path | None) -> "DapeTagger":
        sd = read_ram(ram_path)
        if dape_path is not None:
            sd = merge_dape(sd, read_dape(dape_path))
        net = build_ram(sd)
        names, thresholds = tag_list(), tag_thresholds()
        if len(names) != net.label_embed.shape[0]:
            raise CheckpointFormatError(f"{ram_path}: {net.label_embed.shape[0]} tags, RAM's list has {len(names)}")
        return cls(net, names, thresholds)

    def place(self, device: torch.device, dtype: torch.dtype) -> "DapeTagger":
        self.net.to(device=device, dtype=dtype)
        return self

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> RAM's input: bilinear to 384² (no antialias), ImageNet-normalized."""
        p = next(self.net.parameters())
        size = self.net.image_size
        # Resized where the image lies (the host, for the engine): device memory does not grow with the image.
        x = F.interpolate(image.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        x = x.to(p.device)
        mean = torch.as_tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x.sub(mean).div(std).to(p.dtype)

    @torch.inference_mode()
    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(image))

    def tags(self, image: torch.Tensor) -> list[str]:
        """One string per image: the kept tags joined with ``", "`` (RAM's ``generate_tag``)."""
        logits = self.logits(image)
        keep = (torch.sigmoid(logits) > self.thresholds.to(logits.device)).cpu()
        return [", ".join(self.tags_list[i] for i in row.nonzero().flatten().tolist()) for row in keep]


# ----------------------------------------------------------------------------- registry files

def _how_to_get(spec, which: str) -> str:
    src = getattr(spec, which)
    if src.kind == "manual":
        return f"{src.filename} ({src.instructions.rstrip('.')})"
    return f"{src.filename} (run `srx models download {spec.name}` with network access)"


def tagger_files(spec, download: bool = True, requested: str | None = None) -> tuple[Path, Path]:
    """RAM's and DAPE's files for ``spec``, verified; a missing one is ONE error naming what to get."""
    from ..errors import WeightsMissingError
    from ..models import hub

    found, missing = {}, []
    for which in ("ram", "dape"):
        try:
            found[which] = hub.resolve_weights(tagger_file_spec(spec, which), download=download)
        except WeightsMissingError:
            missing.append(which)
    if missing:
        raise WeightsMissingError(_missing_message(spec, missing, requested))
    return found["ram"], found["dape"]


def _missing_message(spec, missing: list[str], requested: str | None) -> str:
    why = ("--prompt-extractor dape needs" if requested == "dape"
           else f"{spec.name} tags its input with DAPE by default (as the authors' results), which needs")
    return (f"{why} " + " and ".join(_how_to_get(spec, w) for w in missing)
            + "; or pass --prompt-extractor none to run without tags")


def require_tagger_files(spec, requested: str | None = None) -> None:
    """A usage error up front (before any work) when a tagger file is neither on disk nor downloadable now."""
    from ..errors import WeightsMissingError
    from ..models import hub

    def present(which: str) -> bool:
        part = tagger_file_spec(spec, which)
        src = part.weights
        if hub.manual_path(part).is_file():
            return True
        if src.kind == "hub":
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(src.repo, src.filename, revision=src.revision)
            return isinstance(cached, str) or not hub.offline()  # else fetched on first use
        return False

    missing = [w for w in ("ram", "dape") if not present(w)]
    if missing:
        raise WeightsMissingError(_missing_message(spec, missing, requested))


def load_dape_tagger(spec, download: bool = True, requested: str | None = None) -> DapeTagger:
    ram_path, dape_path = tagger_files(spec, download, requested)
    return DapeTagger.from_files(ram_path, dape_path)


def import_tagger_file(spec, file: Path) -> Path | None:
    """``srx models import osediff DAPE.pth`` (or RAM's file): copy it into the cache when it reads as one of the
    model's tagger files; ``None`` when it is neither (then it is the model's own weights file, or nothing)."""
    from ..models import hub

    if spec.ram is None or spec.dape is None:
        return None
    try:
        sd = unwrap(safe_torch_load(file), Path(file))
    except CheckpointFormatError:
        return None
    if is_dape_state_dict(sd):
        which = "dape"
    elif "label_embed" in sd and "visual_encoder.patch_embed.proj.weight" in sd:
        which = "ram"
    else:
        return None
    return hub.import_weights(tagger_file_spec(spec, which), Path(file))
