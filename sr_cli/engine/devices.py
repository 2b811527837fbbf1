"""Device and precision choice: ``auto|cpu|cuda[:N]|mps`` and ``auto|fp32|fp16|bf16``."""

from __future__ import annotations

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
