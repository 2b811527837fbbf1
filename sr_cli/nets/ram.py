"""RAM (Recognize Anything, Swin-L 384) as OSEDiff runs it for its DAPE prompts: our own implementation.

Image tagger = Swin Transformer image encoder -> ``image_proj`` to 512 -> a query-to-label head: one learned
512-d embedding per tag (``label_embed``, projected to the head width and ReLU'd) cross-attends to the image
tokens through a BERT-style stack whose self-attention RAM deletes (Query2Label), then ``fc`` gives one logit
per tag. Module and parameter names equal RAM's (``visual_encoder.layers.i.blocks.j.attn.qkv``,
``tagging_head.encoder.layer.i.crossattention.self.query``...), so its state dict loads directly once the
buffers it also saved (``attn_mask``, ``relative_position_index``) are dropped: this module recomputes both.

The operations follow the authors' code step by step (attention as ``softmax(q*scale @ k^T + bias + mask)``,
patch merging order x0,x1,x2,x3, average pooling as the class token) so that outputs agree to float rounding.
DAPE's LoRA weights are merged into the plain linear layers by the loader (``engine/dape.py``), as loralib does
in eval mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .swin_unet import relative_position_index  # Swin's relative-bias index, the same in RAM and ResShift

# RAM projects image tokens and tag embeddings to this width (hard-coded in the authors' code).
RAM_EMBED_WIDTH = 512


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w, w, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    b = int(windows.shape[0] / (h * w / window / window))
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask: -100 between tokens that the cyclic shift brought from different regions."""
    img = torch.zeros((1, height, width, 1))
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, window).view(-1, window * window)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, shift: int):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:  # a window covering the whole map: no partition, no shift
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4)
        mask = shifted_window_mask(*resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.window).view(-1, self.window * self.window, c)
        windows = self.attn(windows, self.attn_mask).view(-1, self.window, self.window, c)
        x = window_reverse(windows, self.window, h, w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.view(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int]):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window: int,
                 downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2) for i in range(depth)
        ])
        self.downsample = PatchMerging(dim, resolution) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinEncoder(nn.Module):
    """RAM's ``visual_encoder``: tokens (B, 1 + H/32 * W/32, 8 * embed_dim), the first one the mean of the rest."""

    def __init__(self, image_size: int, embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...],
                 window: int):
        super().__init__()
        self.image_size = image_size
        self.patch_embed = PatchEmbed(embed_dim)
        res = image_size // 4
        self.layers = nn.ModuleList([
            SwinStage(embed_dim * 2**i, (res // 2**i, res // 2**i), depth, heads, window, i < len(depths) - 1)
            for i, (depth, heads) in enumerate(zip(depths, num_heads))
        ])
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"RAM's image encoder takes {self.image_size}x{self.image_size} inputs, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        cls = F.adaptive_avg_pool1d(x.transpose(1, 2), 1).transpose(1, 2)
        return torch.cat([cls, x], dim=1)


class LabelCrossAttention(nn.Module):
    """BERT cross-attention (``self.query/key/value``): tag queries attend to the image tokens."""

    def __init__(self, hidden: int, encoder_width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden // num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(encoder_width, hidden)
        self.value = nn.Linear(encoder_width, hidden)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, self.head_size).permute(0, 2, 1, 3)

    def forward(self, hidden: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        k, v, q = self._heads(self.key(image)), self._heads(self.value(image)), self._heads(self.query(hidden))
        # RAM adds an all-zero padding mask here (every image token is attended to): a no-op, left out.
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_size)
        context = (scores.softmax(dim=-1) @ v).permute(0, 2, 1, 3).contiguous()
        return context.view(*context.shape[:-2], -1)


class DenseLayerNorm(nn.Module):
    """BERT's ``output``: dense, then LayerNorm of (result + residual)."""

    def __init__(self, in_dim: int, hidden: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class CrossAttentionBlock(nn.Module):
    def __init__(self, hidden: int, encoder_width: int, num_heads: int, eps: float):
        super().__init__()
        # ``self`` is BERT's attribute name for the attention proper (it keeps the published key names).
        self.self = LabelCrossAttention(hidden, encoder_width, num_heads)
        self.output = DenseLayerNorm(hidden, hidden, eps)

    def forward(self, hidden: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, image), hidden)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class TaggingLayer(nn.Module):
    """A BERT layer without self-attention: cross-attention, then the feed-forward part."""

    def __init__(self, hidden: int, encoder_width: int, num_heads: int, intermediate: int, eps: float):
        super().__init__()
        self.crossattention = CrossAttentionBlock(hidden, encoder_width, num_heads, eps)
        self.intermediate = Intermediate(hidden, intermediate)
        self.output = DenseLayerNorm(intermediate, hidden, eps)

    def forward(self, hidden: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.crossattention(hidden, image)
        return self.output(self.intermediate(x), x)


class TaggingEncoder(nn.Module):
    def __init__(self, layers: int, **kwargs):
        super().__init__()
        self.layer = nn.ModuleList([TaggingLayer(**kwargs) for _ in range(layers)])


class TaggingHead(nn.Module):
    """RAM's ``tagging_head`` (a BertModel whose embeddings and self-attention were deleted)."""

    def __init__(self, layers: int, hidden: int, num_heads: int, intermediate: int, eps: float = 1e-12):
        super().__init__()
        self.encoder = TaggingEncoder(layers, hidden=hidden, encoder_width=RAM_EMBED_WIDTH, num_heads=num_heads,
                                      intermediate=intermediate, eps=eps)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layer:
            queries = layer(queries, image)
        return queries


class RAM(nn.Module):
    """``forward(image)`` -> tag logits (B, num_tags); ``image`` is (B, 3, S, S), ImageNet-normalized.

    Defaults are RAM Swin-L at 384 px (``ram_swin_large_14m.pth``) with its 2-layer, 4-head Query2Label head.
    """

    def __init__(self, num_tags: int = 4585, image_size: int = 384, embed_dim: int = 192,
                 depths: tuple[int, ...] = (2, 2, 18, 2), num_heads: tuple[int, ...] = (6, 12, 24, 48),
                 window_size: int = 12, head_layers: int = 2, head_hidden: int = 768, head_heads: int = 4,
                 head_intermediate: int = 3072):
        super().__init__()
        self.visual_encoder = SwinEncoder(image_size, embed_dim, tuple(depths), tuple(num_heads), window_size)
        self.image_proj = nn.Linear(self.visual_encoder.num_features, RAM_EMBED_WIDTH)
        self.label_embed = nn.Parameter(torch.zeros(num_tags, RAM_EMBED_WIDTH))
        # RAM has no projection when the head is 512 wide.
        self.wordvec_proj = nn.Linear(RAM_EMBED_WIDTH, head_hidden) if head_hidden != RAM_EMBED_WIDTH else nn.Identity()
        self.tagging_head = TaggingHead(head_layers, head_hidden, head_heads, head_intermediate)
        self.fc = nn.Linear(head_hidden, 1)

    @property
    def image_size(self) -> int:
        return self.visual_encoder.image_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image_embeds = self.image_proj(self.visual_encoder(image))
        labels = F.relu(self.wordvec_proj(self.label_embed))
        labels = labels.unsqueeze(0).repeat(image.shape[0], 1, 1)
        return self.fc(self.tagging_head(labels, image_embeds)).squeeze(-1)
