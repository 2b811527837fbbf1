"""AdcSR's published files for a small SD-2.1-shaped UNet, in the authors' exact layouts, with seeded weights.

The authors' code fixes the widths it compresses (a 320-channel UNet with two layers per block; the pruned decoder
of ``HALF_DECODER``), so the "tiny" model keeps those widths and has two UNet blocks instead of four.

- ``make_adcsr_base``: a diffusers base directory holding only ``unet/`` (AdcSR uses nothing else of the base).
- ``make_adcsr_files``: ``net_params_200.pkl`` (``DataParallel(Net).state_dict()``: ``module.`` keys, the UNet's
  blocks under two names sharing their tensors) and ``halfDecoder.ckpt`` (a training checkpoint whose
  ``state_dict`` holds the pruned decoder as ``decoder.*``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

ADCSR_REPO = "Guaishou74851/AdcSR"
ADCSR_COMMIT = "adc5a000000000000000000000000000000c0de5"


def make_adcsr_base(directory: Path, seed: int = 20) -> Path:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 320),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=5, use_linear_projection=True, norm_num_groups=32)
    unet.save_pretrained(Path(directory) / "unet")
    return Path(directory)


def _randomize(module: torch.nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") and p.dim() == 1:  # norms: around 1
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:  # fan-in scaled, so activations stay of order one through the depth
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)


def make_adcsr_files(base_dir: Path, directory: Path, seed: int = 21) -> tuple[Path, Path]:
    import json

    from diffusers.models.autoencoders.vae import Decoder

    from sr_cli.nets.adcsr import HALF_DECODER, AdcSRNet

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    net = AdcSRNet(json.loads((Path(base_dir) / "unet" / "config.json").read_text()))
    _randomize(net.body, g)
    state = OrderedDict((f"module.{k}", v) for k, v in net.state_dict().items() if not k.startswith("decoder."))
    torch.save(state, directory / "net_params_200.pkl")
    decoder = Decoder(**HALF_DECODER)
    _randomize(decoder, g)
    ckpt = {"epoch": 10, "global_step": 1000,
            "state_dict": OrderedDict((f"decoder.{k}", v) for k, v in decoder.state_dict().items())}
    torch.save(ckpt, directory / "halfDecoder.ckpt")
    return directory / "net_params_200.pkl", directory / "halfDecoder.ckpt"
