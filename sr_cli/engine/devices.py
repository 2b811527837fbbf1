"""Device and precision choice: ``auto|cpu|cuda[:N]|mps`` and ``auto|fp32|fp16|bf16``."""

from __future__ import annotations

import os

import torch

from ..errors import UsageError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' requested but MPS is not available")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r} (use auto, cpu, cuda, cuda:N or mps)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPUs that support it, else fp16 on GPU; fp32 on CPU."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r} (use auto, fp32, fp16 or bf16)")
    return DTYPES[name]


def vae_dtype_for(dtype: torch.dtype) -> torch.dtype:
    # The SD VAE's activations overflow fp16 on some images (the reason diffusers' configs carry
    # force_upcast): keep it in fp32 when the rest runs in fp16. bf16 has fp32's range.
    return torch.float32 if dtype == torch.float16 else dtype


def exact_dtype(device: torch.device) -> torch.dtype:
    """The widest float the device has, for the one-step x0 formula (Hero-SR computes it in float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


# Components that run faster in channels_last (NHWC) memory format, by device type. Measured on the CPU
# (2 cores, ``python -m sr_cli.bench --channels-last on|off``): the lite UNet 30% faster, the SD VAE and the
# VQ-f4 6-14% faster, the SD UNet 5% slower (its attention blocks reshape back and forth). On CUDA, cuDNN's
# NHWC convolution kernels are the tensor-core path for fp16/bf16 (PyTorch's performance guide), so every
# convolutional component takes it there; the Swin-UNet is mostly attention and stays contiguous everywhere.
CHANNELS_LAST = {
    "cpu": {"lite", "vae", "vq"},
    "cuda": {"lite", "vae", "vq", "unet"},
}


def use_channels_last(device: torch.device, component: str) -> bool:
    """Whether ``component`` (lite, vae, vq, unet) runs in channels_last on ``device``;
    ``SRX_CHANNELS_LAST=1`` or ``0`` forces it on or off for every component (benchmarks)."""
    forced = os.environ.get("SRX_CHANNELS_LAST", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return component in CHANNELS_LAST.get(device.type, set())
