"""AdcSR's compressed network (Chen et al., Adversarial Diffusion Compression for Real-World Image Super-Resolution,
CVPR 2025, arXiv:2411.13383): OSEDiff's SD 2.1 UNet with the VAE encoder, the text conditioning (cross-attention)
and the time embedding removed and every channel count cut to 3/4, then half of a channel-pruned VAE decoder.

    LR in [-1, 1] --PixelUnshuffle(2)--> 12 channels at LR/2 --UNet (no timestep, no text)--> 256 channels
    --decoder mid block (trained with the UNet)--> the pruned decoder's up blocks (x8) --> SR at 4x LR

Built from the base UNet's config (its weights all come from the published file), so the module tree and the
parameter names are those of the authors' ``Net``: ``body.0`` (PixelUnshuffle), ``body.1`` (the UNet, whose
``body`` re-registers its blocks), ``body.2`` (the decoder's mid block); the published ``net_params_200.pkl`` loads
as is once ``module.`` (DataParallel) is stripped. The decoder's up blocks come from ``halfDecoder.ckpt``.
"""

from __future__ import annotations

import torch
from torch import nn

PRUNE = 0.75  # every pruned channel count is int(0.75 * the original)
# The published pruned VAE decoder (the authors' test script builds it with these arguments).
HALF_DECODER = dict(in_channels=4, out_channels=3, up_block_types=["UpDecoderBlock2D"] * 4,
                    block_out_channels=[64, 128, 256, 256], layers_per_block=2, norm_num_groups=32, act_fn="silu",
                    norm_type="group", mid_block_add_attention=True)


def _pruned(n: int) -> int:
    return int(n * PRUNE)


def _groups(channels: int) -> int:
    # The largest of the usual group counts that divides the pruned width (240 channels: 24 groups).
    return next(g for g in (32, 24, 16, 12, 8, 6, 4, 2, 1) if channels % g == 0)


def prune_channels(model: nn.Module) -> None:
    """Replace every Conv2d, Linear, GroupNorm and LayerNorm by one with 3/4 of its channels (shapes only: the
    published file supplies the weights), as the authors' ``halve_channels``."""
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.upsampling import Upsample2D

    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(_pruned(module.in_channels), _pruned(module.out_channels), module.kernel_size,
                            module.stride, module.padding, module.dilation, module.groups, module.bias is not None)
        elif isinstance(module, nn.Linear):
            new = nn.Linear(_pruned(module.in_features), _pruned(module.out_features), module.bias is not None)
        elif isinstance(module, nn.GroupNorm):
            channels = _pruned(module.num_channels)
            new = nn.GroupNorm(_groups(channels), channels, module.eps, module.affine)
        elif isinstance(module, nn.LayerNorm):
            new = nn.LayerNorm(_pruned(module.normalized_shape[0]), module.eps, module.elementwise_affine)
        else:
            if isinstance(module, (Downsample2D, Upsample2D)):
                module.channels = _pruned(module.channels)
            continue
        setattr(parent, child, new)


def compress_unet(unet: nn.Module) -> nn.Module:
    """The authors' structural compression of a diffusers SD UNet, in place: 16-channel input (PixelUnshuffle(2)
    of the image, 12 after pruning), 342-channel output (256 after pruning), no time embedding, no cross-attention,
    channels cut to 3/4; ``unet.body`` lists the blocks in order (as theirs, for the parameter names)."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    width = unet.conv_in.out_channels
    del unet.time_embedding
    unet.conv_in = nn.Conv2d(16, width, 3, padding=1)
    unet.conv_out = nn.Conv2d(width, 342, 3, padding=1)
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            del module.time_emb_proj
        elif isinstance(module, BasicTransformerBlock):
            del module.attn2, module.norm2
    prune_channels(unet)
    unet.body = nn.Sequential(*unet.down_blocks, unet.mid_block, *unet.up_blocks, unet.conv_norm_out,
                              unet.conv_act, unet.conv_out)
    return unet


def _resnet(block, x: torch.Tensor) -> torch.Tensor:
    """A ResnetBlock2D without its time embedding."""
    h = block.conv1(block.nonlinearity(block.norm1(x)))
    h = block.conv2(block.nonlinearity(block.norm2(h)))
    return h + (x if block.conv_shortcut is None else block.conv_shortcut(x))


def _transformer(model, x: torch.Tensor) -> torch.Tensor:
    """A Transformer2DModel (linear projections) whose blocks keep self-attention and the feed-forward only."""
    b, c, h, w = x.shape
    t = model.proj_in(model.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))
    for block in model.transformer_blocks:
        t = t + block.attn1(block.norm1(t))
        t = t + block.ff(block.norm3(t))
    return model.proj_out(t).reshape(b, h, w, c).permute(0, 3, 1, 2) + x


def compressed_unet_forward(unet, x: torch.Tensor) -> torch.Tensor:
    """The compressed UNet on ``x`` (12 channels): the SD UNet's skip structure without timestep or text."""
    x = unet.conv_in(x)
    skips = [x]
    for block in unet.down_blocks:
        attentions = getattr(block, "attentions", None)
        for i, resnet in enumerate(block.resnets):
            x = _resnet(resnet, x)
            if attentions is not None:
                x = _transformer(attentions[i], x)
            skips.append(x)
        if block.downsamplers is not None:
            x = block.downsamplers[0](x)
            skips.append(x)
    mid = unet.mid_block
    x = _resnet(mid.resnets[0], x)
    for attention, resnet in zip(mid.attentions, mid.resnets[1:]):
        x = _resnet(resnet, _transformer(attention, x))
    for block in unet.up_blocks:
        attentions = getattr(block, "attentions", None)
        for i, resnet in enumerate(block.resnets):
            x = _resnet(resnet, torch.cat([x, skips.pop()], dim=1))
            if attentions is not None:
                x = _transformer(attentions[i], x)
        if block.upsamplers is not None:
            x = block.upsamplers[0](x)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))


class AdcSRNet(nn.Module):
    """The authors' ``Net`` (``body``: PixelUnshuffle, compressed UNet, decoder mid block) followed by the pruned
    decoder's up blocks and output layers (``decoder``). ``forward``: LR ``(B, 3, h, w)`` in [-1, 1], sides a
    multiple of 16 -> ``(B, 3, 4h, 4w)``, not clamped."""

    def __init__(self, unet_config: dict):
        super().__init__()
        from diffusers import UNet2DConditionModel
        from diffusers.models.autoencoders.vae import Decoder

        unet = compress_unet(UNet2DConditionModel.from_config(unet_config))
        decoder = Decoder(**HALF_DECODER)
        self.body = nn.Sequential(nn.PixelUnshuffle(2), unet, decoder.mid_block)
        del decoder.conv_in, decoder.mid_block
        self.decoder = decoder  # up_blocks, conv_norm_out, conv_act, conv_out (from halfDecoder.ckpt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unshuffle, unet, mid = self.body
        h = mid(compressed_unet_forward(unet, unshuffle(x)))
        for block in self.decoder.up_blocks:
            h = block(h)
        return self.decoder.conv_out(self.decoder.conv_act(self.decoder.conv_norm_out(h)))
