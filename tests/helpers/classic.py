"""Tiny classic SR models built with spandrel's own architecture classes (seeded random weights), saved in the
layouts their authors publish:

- RRDBNet (ESRGAN / Real-ESRGAN): BasicSR's key names (``conv_first``, ``body.N.rdbM.convK``, ``conv_body``,
  ``conv_up1``, ``conv_hr``, ``conv_last``) under ``params_ema``, as ``RealESRGAN_x4plus.pth``.
- SRVGGNetCompact (``realesr-general-x4v3.pth``): ``body.N`` under ``params``.
- SwinIR: its own key names under ``params``, as the SwinIR releases.

Each is written as a torch ``.pth`` (``torch.save``) or as ``.safetensors`` (the bare state dict, as the
OpenModelDB conversions).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch


def _seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn again from a seeded normal (small, so outputs stay mostly inside [0, 1]), biases
    included: models of different seeds differ."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            std = (0.5 / fan_in) ** 0.5 if p.dim() > 1 else 0.02
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module.eval()


def rrdbnet(scale: int = 4, seed: int = 0, num_filters: int = 8, num_blocks: int = 1) -> dict[str, torch.Tensor]:
    """An ESRGAN RRDBNet's state dict in BasicSR's (Real-ESRGAN's) key names."""
    from spandrel.architectures.ESRGAN import ESRGAN

    net = _seeded(ESRGAN(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=scale), seed)
    old = net.state_dict()
    # spandrel keeps the original ESRGAN's sequential names ("model.N..."); BasicSR renamed them.
    ups = sorted({int(m.group(1)) for k in old if (m := re.fullmatch(r"model\.(\d+)\.weight", k))} - {0})
    hr, last = ups[-2], ups[-1]
    names = {f"model.{n}": f"conv_up{i + 1}" for i, n in enumerate(ups[:-2])}
    names.update({"model.0": "conv_first", f"model.1.sub.{num_blocks}": "conv_body", f"model.{hr}": "conv_hr",
                  f"model.{last}": "conv_last"})
    out = {}
    for key, value in old.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        else:
            layer, kind = key.rsplit(".", 1)
            out[f"{names[layer]}.{kind}"] = value
    # RRDBNet has no skip from its input: a last layer around mid-grey keeps the outputs inside (0, 1), not clamped.
    out["conv_last.weight"] = out["conv_last.weight"] * 8
    out["conv_last.bias"] = out["conv_last.bias"] + 0.5
    return out


def compact(scale: int = 4, seed: int = 0, num_feat: int = 16, num_conv: int = 4) -> dict[str, torch.Tensor]:
    """A Real-ESRGAN SRVGGNetCompact's state dict (its own key names)."""
    from spandrel.architectures.Compact import Compact

    return _seeded(Compact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=scale), seed) \
        .state_dict()


def swinir(scale: int = 2, seed: int = 0, embed_dim: int = 12, window_size: int = 8) -> dict[str, torch.Tensor]:
    """A small SwinIR (one residual Swin group of two blocks, lightweight pixel-shuffle upsampler)."""
    from spandrel.architectures.SwinIR import SwinIR

    net = SwinIR(img_size=32, in_chans=3, embed_dim=embed_dim, depths=[2], num_heads=[2], window_size=window_size,
                 mlp_ratio=2.0, upscale=scale, img_range=1.0, upsampler="pixelshuffledirect", resi_connection="1conv")
    return _seeded(net, seed).state_dict()


BUILDERS = {"rrdbnet": rrdbnet, "compact": compact, "swinir": swinir}
# How each architecture's authors wrap the state dict in their .pth files.
PUBLISHED_WRAPPER = {"rrdbnet": "params_ema", "compact": "params", "swinir": "params"}


def save_model(path: Path, state: dict[str, torch.Tensor], wrapper: str | None = None) -> Path:
    """``state`` as ``path``: safetensors (the bare state dict) or a torch file (under ``wrapper`` if given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrapper: state} if wrapper else state, path)
    return path


def make_model_file(folder: Path, arch: str, scale: int, suffix: str = ".pth", seed: int = 0) -> Path:
    """A tiny ``arch`` model at ``scale`` in its published layout, as ``folder/<scale>x_<arch>.<suffix>``."""
    state = BUILDERS[arch](scale=scale, seed=seed)
    return save_model(Path(folder) / f"{scale}x_{arch}{suffix}", state, PUBLISHED_WRAPPER[arch])


def spandrel_forward(path: Path, lr: torch.Tensor) -> torch.Tensor:
    """The reference: spandrel's own loader and plain (untiled, fp32, CPU) forward on ``lr`` in [0, 1]."""
    from spandrel import ModelLoader

    model = ModelLoader().load_from_file(str(path)).eval()
    with torch.no_grad():
        return model(lr.float())
