"""HF-Diff (Sami et al., arXiv:2411.13548): the SinSR losses + 0.2 ``inn`` (MSE of the invertible network's
last-module features of the decoded SR and the GT; needs the authors' ``inn_pretrained.pt``) + 0.15 ``dino``
(Jensen-Shannon divergence between softmax distributions of DINOv2 CLS embeddings of SR and GT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UsageError
from ...models.checkpoints import safe_torch_load
from .resshift_student import ResShiftStudentMethod

if TYPE_CHECKING:
    from ..config import TrainConfig


class CouplingModule(nn.Module):
    """HF-Diff's invertible block: ``b += I1(a)``; ``a = a * exp(I2(b)) + I3(b)`` on a channel split ``(a, b)``."""

    def __init__(self, channels: int, split: int):
        super().__init__()
        self.split = split
        rest = channels - split

        def two_layer(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1))

        self.i1, self.i2, self.i3 = two_layer(split, rest), two_layer(rest, split), two_layer(rest, split)

    def forward(self, x):
        a, b = x[:, : self.split], x[:, self.split :]
        b = b + self.i1(a)
        a = a * torch.exp(self.i2(b)) + self.i3(b)
        return torch.cat([a, b], dim=1)


class HighFrequencyINN(nn.Module):
    """HF-Diff's high-frequency feature extractor: a residual stem 3 -> N channels, K coupling modules.

    The paper gives N = 128 but not K or the split; the defaults (K = 3, split N/2) are srx's reading,
    and ``load`` refuses a weights file whose tensors do not fit this layout.
    """

    def __init__(self, channels: int = 128, modules: int = 3, split: int | None = None):
        super().__init__()
        self.stem_in = nn.Conv2d(3, channels, 3, 1, 1)
        self.stem = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1))
        self.blocks = nn.ModuleList(CouplingModule(channels, split or channels // 2) for _ in range(modules))

    def forward(self, x):
        h = self.stem_in(x)
        h = h + self.stem(h)
        for block in self.blocks:
            h = block(h)
        return h

    @classmethod
    def load(cls, path: str | Path) -> HighFrequencyINN:
        from ...models.checkpoints_resshift import unwrap_state_dict

        path = Path(path)
        state = unwrap_state_dict(safe_torch_load(path), path)
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
        if "stem_in.weight" not in state or not blocks:
            raise UsageError(f"{path}: not an INN weights file in srx's layout (stem_in.*, stem.*, blocks.K.i1/i2/i3.*)")
        channels = state["stem_in.weight"].shape[0]
        split = state["blocks.0.i1.0.weight"].shape[1]
        net = cls(channels, max(blocks) + 1, split)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise UsageError(f"{path}: INN weights do not fit ({str(e).splitlines()[0]})") from None
        return net


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of the softmax distributions of two ``(B, D)`` logit batches (batch mean)."""
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    m = 0.5 * (p + q)
    kl = lambda a, b: (a * (a.clamp_min(1e-12).log() - b.clamp_min(1e-12).log())).sum(-1)  # noqa: E731
    return (0.5 * kl(p, m) + 0.5 * kl(q, m)).mean()


class DINOEmbedder(nn.Module):
    """DINOv2 (transformers) CLS embedding of images in [0, 1] (ImageNet-normalised, resized to its input size)."""

    def __init__(self, name_or_path: str, pretrained: bool = True):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        if pretrained:
            self.model = Dinov2Model.from_pretrained(name_or_path)
        else:  # offline smoke runs and tests: a small random DINOv2
            torch.manual_seed(0)
            self.model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=64, image_size=56, patch_size=14))
        self.model.requires_grad_(False).eval()
        self.size = int(self.model.config.image_size)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return self.model(pixel_values=(x - self.mean) / self.std).pooler_output


class HFDiffMethod(ResShiftStudentMethod):
    """Fine-tunes SinSR (batch 32, 20k iterations)."""

    name = "hf-diff"
    summary = "HF-Diff: SinSR losses + invertible-network high-frequency + DINOv2 Jensen-Shannon losses"
    paper = "Sami et al., HF-Diff, arXiv:2411.13548"
    defaults = {**ResShiftStudentMethod.defaults, "batch_size": 32}
    loss_weights = {"distill": 1.0, "inverse": 1.0, "consistency": 1.0, "inn": 0.2, "dino": 0.15}

    @dataclass
    class Options(ResShiftStudentMethod.Options):
        student: str | None = "sinsr"
        inn_weights: str | None = None  # the authors' inn_pretrained.pt
        dino_model: str = "facebook/dinov2-small"  # a Hub id or a directory (transformers Dinov2Model)

    def __init__(self, cfg: TrainConfig, base_dir: Path | None = None):
        opts = cfg.options
        if cfg.loss_weights.get("inn") and not opts.inn_weights:
            raise UsageError("--method hf-diff needs the authors' pretrained invertible network: pass --inn-weights "
                             "inn_pretrained.pt (from the HF-Diff repository's Google Drive), or --loss-weight inn=0")
        super().__init__(cfg, base_dir)
        self.inn = HighFrequencyINN.load(opts.inn_weights).requires_grad_(False).eval() if self.weight("inn") else None
        self.dino = DINOEmbedder(opts.dino_model, cfg.perceptual_pretrained) if self.weight("dino") else None

    def train(self, mode: bool = True):
        super().train(mode)
        for m in (self.inn, self.dino):
            if m is not None:
                m.eval()
        return self

    def loss_terms(self, lq, hq, clean=None):
        s = self.prepare(lq, hq)
        terms = self.sinsr_terms(s, hq)
        if self.inn is not None or self.dino is not None:
            sr = self.decode_grad(s["z_student"])
            if self.inn is not None:
                with torch.no_grad():
                    gt_feat = self.inn(hq)
                terms["inn"] = F.mse_loss(self.inn(sr), gt_feat)
            if self.dino is not None:
                with torch.no_grad():
                    gt_emb = self.dino(hq)
                terms["dino"] = js_divergence(self.dino(sr), gt_emb)
        return terms, None
