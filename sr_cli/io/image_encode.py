"""Encoding images to bytes in the format users asked for, and writing them safely.

Encoding copies the EXIF into every format that holds it (into TIFF through ``exif.tiff_with_exif``), the ICC
profile and the DPI; 16-bit data stays 16-bit in PNG and TIFF. Writing is atomic (``fsio.atomic_write``): a
temporary file in the target folder, flushed to disk, renamed into place.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import SrxError
from .exif import tiff_with_exif
from .fsio import DestinationExists, atomic_write, stale_files
from .png_encoder import encode_png

FORMAT_BY_NAME = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "tif": "TIFF",
                  "bmp": "BMP"}
EXTENSION_BY_FORMAT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
PNG_COMPRESS_LEVEL = 1  # zlib level 1 with the run-length strategy: see png_encoder


class ImageWriteError(SrxError):
    """An output that could not be written."""


def to_gray(color: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as Pillow's RGB -> L conversion."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=color.dtype).view(1, 3, 1, 1)
    return (color * w).sum(1, keepdim=True)


def _quantize(t: torch.Tensor, bits: int) -> np.ndarray:
    """(1, C, H, W) [0, 1] -> (H, W, C) uint8/uint16, rounded, C-contiguous."""
    maxval = 65535.0 if bits == 16 else 255.0
    c, h, w = t.shape[1:]
    out = torch.empty((h, w, c), dtype=torch.uint8 if bits == 8 else torch.int32)
    # A block of rows at a time (about 1 MiB of floats: cache-sized temporaries, 2.5x faster than whole-image
    # passes); the planar -> interleaved transpose happens in the copy that also converts the type.
    rows = max(1, (1 << 18) // max(1, c * w))
    for top in range(0, h, rows):
        block = t[0, :, top : top + rows].clamp(0, 1).mul_(maxval).round_()
        out[top : top + rows].copy_(block.permute(1, 2, 0))
    return out.numpy() if bits == 8 else out.numpy().astype(np.uint16)


JPEG_MAX_EXIF = 65533  # one APP1 segment


def _encode_tiff(arr: np.ndarray, bits: int, icc_profile: bytes | None, dpi) -> bytes:
    """Deflate-compressed TIFF: 8 bits through Pillow, 16 bits (gray, gray+alpha, RGB, RGBA) through tifffile."""
    buf = io.BytesIO()
    channels = arr.shape[-1]
    if bits == 16:
        import tifffile

        kwargs = {"resolution": (float(dpi[0]), float(dpi[1])), "resolutionunit": "INCH"} if dpi else {}
        tifffile.imwrite(buf, arr if channels > 1 else arr[:, :, 0],
                         photometric="minisblack" if channels <= 2 else "rgb",
                         extrasamples=("unassalpha",) if channels in (2, 4) else None,
                         iccprofile=icc_profile, compression="zlib", metadata=None, software=False, **kwargs)
        return buf.getvalue()
    params: dict = {"compression": "tiff_deflate"}
    if icc_profile:
        params["icc_profile"] = icc_profile
    if dpi:
        params["dpi"] = tuple(float(d) for d in dpi)
    Image.fromarray(arr if channels > 1 else arr[:, :, 0]).save(buf, format="TIFF", **params)
    return buf.getvalue()


def encode_image(color: torch.Tensor, alpha: torch.Tensor | None, fmt: str, *, grayscale: bool = False,
                 bit_depth: int = 8, quality: int = 95, exif: bytes | None = None, icc_profile: bytes | None = None,
                 dpi=None, notes: list[str] | None = None) -> bytes:
    """Encode to bytes in ``fmt`` (PNG/JPEG/WEBP/TIFF/BMP); the caller has dropped what ``fmt`` cannot hold.

    ``exif`` is what ``read_image`` gives (already checked to be writable). Metadata a format cannot hold
    (EXIF over 64 KiB in a JPEG) is left out, with a note appended to ``notes``.
    """
    channels = to_gray(color) if grayscale else color
    if alpha is not None:
        channels = torch.cat([channels, alpha], dim=1)
    bits = bit_depth if fmt in SIXTEEN_BIT_FORMATS else 8
    arr = _quantize(channels, bits)
    if fmt == "PNG":
        return encode_png(arr, icc_profile=icc_profile, exif=exif, dpi=dpi, level=PNG_COMPRESS_LEVEL)
    if fmt == "TIFF":
        data = _encode_tiff(arr, bits, icc_profile, dpi)
        if exif and data[2:4] not in (b"*\0", b"\0*") and notes is not None:
            notes.append("EXIF not copied: the TIFF is a BigTIFF (over 4 GiB)")
        return tiff_with_exif(data, exif) if exif else data
    if exif and fmt == "JPEG" and len(exif) > JPEG_MAX_EXIF:
        if notes is not None:
            notes.append(f"EXIF not copied: {len(exif):,} bytes, a JPEG holds at most {JPEG_MAX_EXIF:,}")
        exif = None
    im = Image.fromarray(arr if arr.shape[-1] > 1 else arr[:, :, 0], mode=None)
    params: dict = {}
    if icc_profile:
        params["icc_profile"] = icc_profile
    if exif and fmt in ("JPEG", "WEBP"):
        params["exif"] = exif
    if dpi and fmt in ("JPEG", "BMP"):
        params["dpi"] = tuple(float(d) for d in dpi)
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    if fmt == "JPEG":
        params["subsampling"] = 0 if quality >= 90 else 2
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def write_atomic(dest: Path, data: bytes, overwrite: bool = False) -> None:
    """Write bytes to ``dest`` through a temporary file in the same folder, then rename into place.

    An interruption at any point leaves either no file or the complete file under ``dest``.
    Without ``overwrite`` an existing ``dest`` is never replaced (checked again just before the rename).
    Any failure (folder not creatable, disk full, read-only file system...) is one ImageWriteError.
    """
    try:
        atomic_write(dest, data, overwrite=overwrite)
    except DestinationExists as e:
        raise ImageWriteError(f"{dest}: {e.strerror}; not overwritten") from None
    except OSError as e:
        raise ImageWriteError(f"{dest}: cannot write ({_os_reason(e)})") from None


def _os_reason(e: OSError) -> str:
    """``strerror`` plus the path it concerns when that is not the destination itself (e.g. a parent folder)."""
    reason = e.strerror or str(e) or type(e).__name__
    return f"{reason}: {e.filename}" if e.filename else reason


def stale_temp_files(folder: Path) -> list[Path]:
    """Temporary (and claim) files that a killed srx run left in ``folder``; never another running srx's."""
    return stale_files(folder)
