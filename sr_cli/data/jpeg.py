"""JPEG compression in float torch: the baseline JPEG math without the 8-bit entropy-coded file.

Real-ESRGAN's training pipeline (BasicSR, used as-is by OSEDiff and its successors) does not call libjpeg:
it runs the JPEG algorithm on float tensors (the "DiffJPEG" module): RGB -> YCbCr (JFIF), 4:2:0 chroma by
2x2 averaging, 8x8 DCT, quantization by the Annex K tables scaled by libjpeg's quality formula *without*
rounding the tables, rounding of the coefficients, then the inverse, nearest-neighbour chroma upsampling and
a clamp. Nothing is rounded to 8 bits on the way in or out, qualities are real numbers, and images are
zero-padded to a multiple of 16 (dark partial blocks at the right and bottom borders). ``float_jpeg``
reproduces that math so that synthesised training inputs have the reference's statistics; with
``libjpeg_tables=True`` and correctly oriented tables it is close to a real libjpeg round trip instead.

The degradation's JPEG stage (``apply_jpeg``) runs this float JPEG (``"reference"``) or a real libjpeg round
trip (``"libjpeg"``, ``jpeg_compress``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from .draws import randint, uniform

JPEG_MODES: tuple[str, ...] = ("reference", "libjpeg")  # the degradation's JPEG stage: this float JPEG or libjpeg

# JPEG standard (ITU T.81, Annex K) quantization tables, rows = vertical frequency, columns = horizontal.
LUMA_TABLE: tuple[tuple[int, ...], ...] = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE: tuple[tuple[int, ...], ...] = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99), *((99,) * 8,) * 4,
)
# JFIF's full-range BT.601 colour transform, as libjpeg and the reference use it.
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def quality_scale(quality: float) -> float:
    """libjpeg's quality -> table scale (``jpeg_quality_scaling``) as a fraction: 50/q below 50, 2 - q/50 above."""
    if not 0 < quality <= 100:
        raise ValueError(f"JPEG quality must be in (0, 100], got {quality}")
    return 50.0 / quality if quality < 50 else 2.0 - quality / 50.0


def quant_tables(quality: float, libjpeg_tables: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) 8x8 float64 quantization steps at ``quality``, indexed [vertical, horizontal] frequency.

    ``libjpeg_tables``: libjpeg's integer tables, ``clamp((base * scale + 50) // 100, 1, 255)`` with the scale in
    percent (integer qualities, as ``jpeg_set_quality`` computes them); otherwise the reference's unrounded
    ``base * scale``, which goes below 1 above quality ~97 and varies continuously with a real-valued quality.
    """
    luma = torch.tensor(LUMA_TABLE, dtype=torch.float64)
    chroma = torch.tensor(CHROMA_TABLE, dtype=torch.float64)
    if libjpeg_tables:
        q = int(quality)
        percent = 5000 // q if q < 50 else 200 - 2 * q
        return tuple(torch.clamp(torch.div(t * percent + 50, 100, rounding_mode="floor"), 1, 255)
                     for t in (luma, chroma))  # type: ignore[return-value]
    # At quality 100 the scale is 0 and the reference divides by zero (a NaN image): keep the steps positive.
    s = max(quality_scale(float(quality)), 1e-3)
    return luma * s, chroma * s


def dct_matrix(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix ``D`` (row u = frequency): a block's coefficients are ``D @ B @ D.T``.

    With this normalisation the coefficients are exactly JPEG's ``1/4 C(u) C(v) sum f cos cos``.
    """
    u = torch.arange(8, dtype=torch.float64).view(8, 1)
    x = torch.arange(8, dtype=torch.float64).view(1, 8)
    d = torch.cos((2 * x + 1) * u * math.pi / 16) / 2
    d[0] /= math.sqrt(2)
    return d.to(dtype=dtype, device=device)


def _soft_round(x: torch.Tensor) -> torch.Tensor:
    """Rounding with a usable gradient (Shin & Song, 2017): round(x) + (x - round(x))^3, as DiffJPEG does."""
    r = torch.round(x)
    return r + (x - r) ** 3


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H/8, W/8, 8, 8)."""
    b, h, w = plane.shape
    return plane.view(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(blocks: torch.Tensor) -> torch.Tensor:
    b, nh, nw = blocks.shape[:3]
    return blocks.permute(0, 1, 3, 2, 4).reshape(b, nh * 8, nw * 8)


def _per_sample_quality(quality: float | Sequence[float] | torch.Tensor, batch: int) -> list[float]:
    values = [float(q) for q in torch.as_tensor(quality, dtype=torch.float64).reshape(-1).tolist()]
    if len(values) == 1:
        values = values * batch
    if len(values) != batch:
        raise ValueError(f"need one JPEG quality per sample: {len(values)} qualities for {batch} samples")
    return values


def float_jpeg(
    x: torch.Tensor,
    quality: float | Sequence[float] | torch.Tensor,
    differentiable: bool = False,
    libjpeg_tables: bool = False,
    transposed_luma_table: bool = True,
) -> torch.Tensor:
    """JPEG round trip of ``x`` (B, 3, H, W) in [0, 1] at ``quality`` (scalar or per sample), in float.

    Returns (B, 3, H, W) in [0, 1], same dtype and device, not rounded to 8 bits.

    * ``differentiable``: soft rounding of the coefficients, so gradients flow to ``x`` (hard rounding has a
      zero gradient almost everywhere).
    * ``libjpeg_tables``: libjpeg's rounded integer tables instead of the reference's unrounded ones.
    * ``transposed_luma_table``: the reference applies the luma table transposed (its horizontal-frequency
      steps to vertical frequencies and the reverse); kept by default so the statistics match the pipeline
      models are trained with. The chroma table is symmetric.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) batch, got {tuple(x.shape)}")
    b, _, h, w = x.shape
    if b == 0:
        return x
    qualities = _per_sample_quality(quality, b)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    tables = [quant_tables(q, libjpeg_tables) for q in qualities]
    luma = torch.stack([t[0].T if transposed_luma_table else t[0] for t in tables])
    chroma = torch.stack([t[1] for t in tables])
    luma = luma.to(device=x.device, dtype=dtype).view(b, 1, 1, 8, 8)
    chroma = chroma.to(device=x.device, dtype=dtype).view(b, 1, 1, 8, 8)
    rounding = _soft_round if differentiable else torch.round
    d = dct_matrix(dtype, x.device)

    # Whole 16x16 macroblocks (4:2:0 chroma blocks cover 16 pixels), zero padding as the reference does.
    ph, pw = -h % 16, -w % 16
    img = F.pad(x.to(dtype).clamp(0, 1), (0, pw, 0, ph), value=0.0) * 255.0
    to_ycc = torch.tensor(RGB_TO_YCBCR, dtype=dtype, device=x.device)
    ycc = torch.einsum("kc,bchw->bkhw", to_ycc, img)
    y = ycc[:, 0]
    cbcr = F.avg_pool2d(ycc[:, 1:], 2) + 128.0

    def code(plane: torch.Tensor, table: torch.Tensor, centre: float) -> torch.Tensor:
        coef = d @ (_blocks(plane) - centre) @ d.T
        coef = rounding(coef / table) * table
        return _unblocks(d.T @ coef @ d) + centre

    y = code(y, luma, 128.0)
    cb = code(cbcr[:, 0], chroma, 128.0) - 128.0
    cr = code(cbcr[:, 1], chroma, 128.0) - 128.0
    chroma_full = F.interpolate(torch.stack([cb, cr], 1), scale_factor=2, mode="nearest")
    to_rgb = torch.tensor(YCBCR_TO_RGB, dtype=dtype, device=x.device)
    rgb = torch.einsum("ck,bkhw->bchw", to_rgb, torch.cat([y.unsqueeze(1), chroma_full], 1))
    return (rgb.clamp(0, 255) / 255.0)[:, :, :h, :w].to(x.dtype)


# --------------------------------------------------------------------------------------------------
# The degradation's JPEG stage
# --------------------------------------------------------------------------------------------------


def jpeg_compress(x: torch.Tensor, quality: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Real JPEG round trip (libjpeg through torchvision) at an integer quality, scalar or per sample.

    Encoding runs on CPU 8-bit images (the input is clamped and rounded first); the decoded batch is
    returned on ``x``'s device and dtype, so it holds 8-bit levels.
    """
    b = x.shape[0]
    qualities = [int(q) for q in torch.as_tensor(quality).reshape(-1).expand(b).tolist()]
    images = (x.detach().clamp(0, 1) * 255).round().to(device="cpu", dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec; they still work, and a warning per
        # training sample would drown the logs.
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities", category=DeprecationWarning)
        decoded = [decode_jpeg(encode_jpeg(img.contiguous(), quality=q), mode=ImageReadMode.RGB)
                   for img, q in zip(images, qualities)]
    if not decoded:
        return x
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255.0


def sample_jpeg(
    generator: torch.Generator, batch: int, jpeg_range: tuple[int, int] = (30, 95), integer: bool = True
) -> list[int] | list[float]:
    """Per-sample JPEG qualities uniform in ``jpeg_range``: integers (both ends included) for libjpeg, or real
    numbers, as the reference draws them for its float JPEG (``integer=False``)."""
    if integer:
        return [randint(generator, *jpeg_range) for _ in range(batch)]
    return [uniform(generator, *jpeg_range) for _ in range(batch)]


def apply_jpeg(x: torch.Tensor, quality: Sequence[float], mode: str = "reference") -> torch.Tensor:
    """The JPEG stage: the reference's float JPEG (``float_jpeg``) or real libjpeg."""
    if mode == "libjpeg":
        return jpeg_compress(x, [int(q) for q in quality])
    return float_jpeg(x.clamp(0, 1), list(quality))

