"""ResShift's Swin-UNet denoiser (arXiv:2307.12348), our own implementation with the official key layout.

An ADM-style UNet (ResBlocks with scale-shift timestep conditioning, GroupNorm computed in float32)
with a Swin layer (two window-attention blocks, the second shifted) after the first ResBlock of every
level and in the middle. The LR image (in [-1, 1], latent resolution) is concatenated to the scaled
latent before the first convolution. ``forward(x, t, lq)`` predicts x0.

Module names equal the authors' ``UNetModelSwin`` (``input_blocks.N.M``, ``middle_block``,
``output_blocks``, ``out``; ``blocks.i.attn.qkv``...), so their state dicts load directly once the
buffers they also saved (``attn_mask``, ``relative_position_index``) are dropped: this module
recomputes both (see ``official_state_dict`` for the reverse direction).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SwinUNetConfig:
    """Hyper-parameters; the defaults are ResShift/SinSR v1 (realsr_swinunet_realesrgan256.yaml)."""

    image_size: int = 64  # latent size at training time: decides where windows shrink (see SwinBlock)
    in_channels: int = 3
    model_channels: int = 160
    out_channels: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    swin_depth: int = 2
    swin_embed_dim: int = 192
    num_head_channels: int = 32
    window_size: int = 8
    mlp_ratio: float = 4.0
    lq_channels: int = 3
    norm_groups: int = 32

    @classmethod
    def from_dict(cls, d: dict) -> "SwinUNetConfig":
        d = dict(d)
        for key in ("channel_mult", "num_res_blocks", "attention_resolutions"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (as the authors' code), cast back to the input dtype."""

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, ``[cos | sin]`` halves (ADM order), of raw (unscaled) timestep indices."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """ADM ResBlock with scale-shift norm: ``out_norm(h) * (1 + scale) + shift`` from the timestep embedding."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).type(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's ``(W*W, W*W)`` index into the ``(2W-1)^2`` relative-bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B * nW, window*window, C)``, windows row-major, tokens row-major."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // window, window, w // window, window).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, window * window, c)


def from_windows(x: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    b = x.shape[0] // ((h // window) * (w // window))
    x = x.view(b, h // window, w // window, window, window, -1).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, -1, h, w)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """Additive mask ``(nW, window², window²)`` (0 / -100) of the shifted-window attention.

    Reproduces the authors' computation exactly, which is what the published weights were trained
    with: their region labels are written into an NCHW tensor with the (H, W) slice pair applied to
    the (C, H) axes, so regions are told apart along one axis only, and the per-window labels are
    flattened in transposed order. Both quirks are kept on purpose.
    """
    labels = torch.zeros((1, 1, h, w))
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for a in slices:
        for b in slices:
            labels[:, a, b, :] = count
            count += 1
    win = to_windows(labels, window).view(-1, window, window, 1).permute(0, 2, 3, 1).reshape(-1, window * window)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.window, self.heads = window, heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).to(q.dtype)  # heads, n, n
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale 1/sqrt(head_dim), as the authors'
        else:
            # Per-window masks: attend on (B, nW, heads, n, d) so that the (nW, heads, n, n) bias broadcasts
            # over the batch instead of being copied B times.
            nw = mask.shape[0]
            bias = bias[None] + mask[:, None].to(q.dtype)
            q, k, v = (a.reshape(bw // nw, nw, self.heads, n, -1) for a in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).flatten(0, 1)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """One (shifted) window-attention block on ``(B, C, H, W)`` maps, norms are GroupNorm (authors' choice)."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float, groups: int):
        super().__init__()
        if resolution <= window:  # as the authors: a map no larger than a window is one window, unshifted
            shift, window = 0, resolution
        self.window, self.shift = window, shift
        self.norm1 = GroupNorm32(groups, dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = GroupNorm32(groups, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def mask_for(self, h: int, w: int, device) -> torch.Tensor | None:
        if not self.shift:
            return None
        key = (h, w)
        if key not in self._masks:
            self._masks[key] = shifted_window_mask(h, w, self.window, self.shift)
        return self._masks[key].to(device)

    def forward(self, x):
        _, c, h, w = x.shape
        if h % self.window or w % self.window:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the attention window {self.window}")
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(2, 3))
        y = from_windows(self.attn(to_windows(y, self.window), self.mask_for(h, w, x.device)), self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(2, 3))
        x = x + y
        return x + self.mlp(self.norm2(x))


class _Identity(nn.Module):
    def forward(self, x):
        return x


class PatchEmbed(nn.Module):
    def __init__(self, in_ch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, 1)
        self.norm = _Identity()  # patch_norm=False in every released config

    def forward(self, x):
        return self.norm(self.proj(x))


class SwinLayer(nn.Module):
    """The authors' ``BasicLayer``: 1x1 in-projection, ``depth`` Swin blocks (odd ones shifted), 1x1 out-projection."""

    def __init__(self, channels: int, cfg: SwinUNetConfig, resolution: int):
        super().__init__()
        heads = cfg.swin_embed_dim // cfg.num_head_channels
        self.patch_embed = PatchEmbed(channels, cfg.swin_embed_dim)
        self.blocks = nn.ModuleList(
            SwinBlock(cfg.swin_embed_dim, resolution, heads, cfg.window_size,
                      0 if i % 2 == 0 else cfg.window_size // 2, cfg.mlp_ratio, cfg.norm_groups)
            for i in range(cfg.swin_depth)
        )
        self.patch_unembed = PatchEmbed(cfg.swin_embed_dim, channels)

    def forward(self, x):
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)


class TimestepSequential(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class SwinUNet(nn.Module):
    """``forward(x, t, lq) -> x0``: ``x`` the scaled latent, ``t`` int64 indices, ``lq`` the LR image in [-1, 1]."""

    def __init__(self, cfg: SwinUNetConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or SwinUNetConfig.from_dict(kwargs)
        self.config = cfg
        mc, g = cfg.model_channels, cfg.norm_groups
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.in_channels + cfg.lq_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        ds = cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, int(mult * mc), g)]
                ch = int(mult * mc)
                if ds in cfg.attention_resolutions and j == 0:
                    layers.append(SwinLayer(ch, cfg, ds))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skip_channels.append(ch)
                ds //= 2
        self.middle_block = TimestepSequential(ResBlock(ch, emb_dim, ch, g), SwinLayer(ch, cfg, ds), ResBlock(ch, emb_dim, ch, g))

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, int(mc * mult), g)]
                ch = int(mc * mult)
                if ds in cfg.attention_resolutions and i == 0:
                    layers.append(SwinLayer(ch, cfg, ds))
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    ds *= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(g, ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (window size at the coarsest level)."""
        return 2 ** (len(self.config.channel_mult) - 1) * self.config.window_size

    def forward(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        dtype = self.out[2].weight.dtype
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(dtype))
        h = torch.cat([x, lq], dim=1).to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def official_state_dict(net: SwinUNet, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict as the authors' code saves it: with ``relative_position_index`` and ``attn_mask``
    buffers (the mask at the training ``image_size``), optionally with a key prefix (``module.``)."""
    state = dict(net.state_dict())
    for name, module in net.named_modules():
        if isinstance(module, WindowAttention):
            state[f"{name}.relative_position_index"] = module.relative_position_index.clone()
        if isinstance(module, SwinBlock) and module.shift:
            res = _block_resolution(net, name)
            state[f"{name}.attn_mask"] = shifted_window_mask(res, res, module.window, module.shift)
    return {prefix + k: v for k, v in state.items()}


def _block_resolution(net: SwinUNet, block_name: str) -> int:
    """The training-time map size of a Swin block, from its position in the UNet."""
    cfg = net.config
    part, idx = block_name.split(".")[0], block_name.split(".")[1]
    levels = len(cfg.channel_mult)
    if part == "middle_block":
        return cfg.image_size // 2 ** (levels - 1)
    idx = int(idx)
    if part == "input_blocks":
        level, n = 0, 1
        for lv in range(levels):
            n_here = cfg.num_res_blocks[lv] + (1 if lv != levels - 1 else 0)
            if idx < n + n_here:
                level = lv
                break
            n += n_here
        return cfg.image_size // 2 ** level
    n = 0
    for lv in range(levels - 1, -1, -1):
        n_here = cfg.num_res_blocks[lv] + 1
        if idx < n + n_here:
            return cfg.image_size // 2 ** lv
        n += n_here
    raise ValueError(block_name)


def strip_official_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept the authors' layouts: drop ``module.`` prefixes and the recomputable buffers."""
    out = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        if k.endswith(".attn_mask") or k.endswith(".relative_position_index"):
            continue
        out[k] = v
    return out
