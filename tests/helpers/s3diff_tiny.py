"""S3Diff's two published files for the tiny SD base, in the authors' exact layouts, with seeded random weights.

- ``s3diff.pkl``: what the authors' ``S3Diff.save_model`` writes (peft-keyed LoRA state dicts with the adapter
  names ``default`` (UNet) and ``vae_skip`` (VAE), their target lists, ranks, the UNet's ``conv_in``, the six MLP
  state dicts, ``w`` as a ``Parameter`` and the block embeddings), saved with ``torch.save``.
- ``de_net.pth``: a state dict of MM-RealSR's ``DEResNet`` at its published size (the authors' code builds it with
  fixed arguments, so it cannot be made smaller).

Every weight is non-zero and the modulation matrices are of order one, so the LoRA changes the output and the
degradation scores matter.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

S3DIFF_REPO = "zhangap/S3Diff"
S3DIFF_COMMIT = "5d3d1ff0000000000000000000000000000c0de5"
# The authors' target lists (S3Diff.__init__): UNet by name suffix, VAE encoder by a regular expression.
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_TARGETS = r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"


def _randomized(model: nn.Module, keep, g: torch.Generator, scale: float = 0.05) -> dict:
    state = OrderedDict()
    for k, v in model.state_dict().items():
        if "lora" in k:
            state[k] = torch.randn(v.shape, generator=g) * scale
        elif keep(k):
            state[k] = v + torch.randn(v.shape, generator=g) * scale
    return state


def _mlp_states(rank_unet: int, rank_vae: int, g: torch.Generator) -> dict:
    """The authors' MLPs (``S3Diff.__init__``) with seeded default-initialised weights."""
    def seeded(module: nn.Module) -> OrderedDict:
        return OrderedDict((k, torch.rand(v.shape, generator=g) * 0.4 - 0.2) for k, v in module.state_dict().items())

    mlp = lambda i, o: nn.Sequential(nn.Linear(i, o), nn.ReLU(True))  # noqa: E731
    return {
        "state_dict_vae_de_mlp": seeded(mlp(256, 256)),
        "state_dict_unet_de_mlp": seeded(mlp(256, 256)),
        "state_dict_vae_block_mlp": seeded(mlp(64, 64)),
        "state_dict_unet_block_mlp": seeded(mlp(64, 64)),
        "state_dict_vae_fuse_mlp": seeded(nn.Linear(320, rank_vae**2)),
        "state_dict_unet_fuse_mlp": seeded(nn.Linear(320, rank_unet**2)),
        "w": nn.Parameter(torch.randn(64, generator=g), requires_grad=False),
        "state_embeddings": {
            "state_dict_vae_block": OrderedDict(weight=torch.randn(6, 64, generator=g)),
            "state_dict_unet_block": OrderedDict(weight=torch.randn(10, 64, generator=g)),
        },
    }


def make_s3diff_pkl(base_dir: Path, path: Path, rank_unet: int = 8, rank_vae: int = 4, seed: int = 11) -> Path:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig

    g = torch.Generator().manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
    vae.add_adapter(LoraConfig(r=rank_vae, init_lora_weights="gaussian", target_modules=VAE_TARGETS),
                    adapter_name="vae_skip")
    unet.add_adapter(LoraConfig(r=rank_unet, init_lora_weights="gaussian", target_modules=UNET_TARGETS))
    sd = {
        "unet_lora_target_modules": UNET_TARGETS,
        "vae_lora_target_modules": VAE_TARGETS,
        "rank_unet": rank_unet,
        "rank_vae": rank_vae,
        "state_dict_unet": _randomized(unet, lambda k: "conv_in" in k, g),
        "state_dict_vae": _randomized(vae, lambda k: "skip_conv" in k, g),
        **_mlp_states(rank_unet, rank_vae, g),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


def make_de_net(path: Path, seed: int = 12) -> Path:
    from sr_cli.nets.deresnet import DEResNet

    torch.manual_seed(seed)
    net = DEResNet()
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict((k, torch.randn(v.shape, generator=g) * (0.05 if v.dim() > 1 else 0.1))
                        for k, v in net.state_dict().items())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def make_s3diff_files(base_dir: Path, directory: Path) -> tuple[Path, Path]:
    """``(s3diff.pkl, de_net.pth)`` in ``directory`` for the tiny base model ``base_dir``."""
    directory = Path(directory)
    return make_s3diff_pkl(base_dir, directory / "s3diff.pkl"), make_de_net(directory / "de_net.pth")
