"""Frozen perceptual networks for the training losses, from maintained packages with their own weight
loading: LPIPS and DISTS from pyiqa, CLIP from transformers. Inputs are images in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pyiqa_arch(module: str, name: str):
    try:
        mod = __import__(f"pyiqa.archs.{module}", fromlist=[name])
    except ImportError as e:
        raise UsageError(f"training losses need pyiqa ({e}); install it with: pip install 'srx[train]'") from None
    return getattr(mod, name)


def frozen(net: nn.Module) -> nn.Module:
    return net.eval().requires_grad_(False)


def make_lpips(net: str = "vgg", pretrained: bool = True) -> nn.Module:
    """pyiqa's LPIPS; ``pretrained=False`` builds the same architecture with random weights (no download)."""
    LPIPS = _pyiqa_arch("lpips_arch", "LPIPS")
    return frozen(LPIPS(pretrained=pretrained, net=net, pnet_rand=not pretrained))


def lpips_loss(lpips: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return lpips(x, y, normalize=True).mean()


def make_dists(pretrained: bool = True) -> nn.Module:
    """pyiqa's DISTS (its VGG16 trunk comes through torchvision's weight cache, $TORCH_HOME/hub/checkpoints)."""
    DISTS = _pyiqa_arch("dists_arch", "DISTS")
    return frozen(DISTS(pretrained=pretrained))


def sobel_edges(x: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude per channel (3x3 Sobel, replicate padding), scaled to about [0, 1]."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device) / 4
    c = x.shape[1]
    k = torch.stack([kx, kx.t()])[:, None].repeat(c, 1, 1, 1)  # (2c, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c).view(x.shape[0], c, 2, *x.shape[-2:])
    return (g.pow(2).sum(2) + 1e-12).sqrt().clamp(0, 1)


def ea_dists_loss(dists: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DFOSD's edge-aware DISTS: DISTS on the images plus DISTS on their edge maps."""
    return dists(x, y).mean() + dists(sobel_edges(x), sobel_edges(y)).mean()


class CLIPPerception(nn.Module):
    """Frozen CLIP for Hero-SR's TD-PAL (attribute prompt pairs) and ID-SAL (image-image similarity)."""

    def __init__(self, model, tokenizer, prompt_pairs: tuple[tuple[str, str], ...]):
        super().__init__()
        self.model = frozen(model)
        self.size = model.config.vision_config.image_size
        if prompt_pairs:
            ids = tokenizer([p for pair in prompt_pairs for p in pair], padding=True, return_tensors="pt")
            with torch.no_grad():
                text = self.model.get_text_features(**ids)
                text = getattr(text, "pooler_output", text)
            text = F.normalize(text.float(), dim=-1).view(len(prompt_pairs), 2, -1)
        else:  # image-image similarity only (VPD-SR's semantic loss)
            text = torch.zeros(0, 2, model.config.projection_dim)
        self.register_buffer("text", text)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))

    @classmethod
    def load(cls, name_or_path: str, prompt_pairs, pretrained: bool = True) -> CLIPPerception:
        from transformers import AutoTokenizer, CLIPConfig, CLIPModel

        if pretrained:
            model = CLIPModel.from_pretrained(name_or_path)
        else:
            model = CLIPModel(CLIPConfig.from_pretrained(name_or_path))
        return cls(model, AutoTokenizer.from_pretrained(name_or_path), prompt_pairs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True)
        feats = self.model.get_image_features(pixel_values=(x - self.mean) / self.std)
        feats = getattr(feats, "pooler_output", feats)
        return F.normalize(feats.float(), dim=-1)

    def td_pal(self, sr_emb: torch.Tensor) -> torch.Tensor:
        """1 - mean over attributes of softmax(s_pos, s_neg)[pos], s = cosine(image, prompt)."""
        sims = torch.einsum("bd,apd->bap", sr_emb, self.text)  # (B, attributes, 2)
        return 1 - sims.softmax(dim=-1)[..., 0].mean()

    @staticmethod
    def id_sal(sr_emb: torch.Tensor, gt_emb: torch.Tensor) -> torch.Tensor:
        return 1 - (sr_emb * gt_emb).sum(-1).mean()
