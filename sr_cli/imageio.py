"""Reading and writing images as users have them, without losing data or metadata.

Reading gives float tensors in [0, 1]: the color (always 3 channels, grayscale replicated), the alpha
channel when there is one, and what is needed to write the result back the same way (grayscale?,
8 or 16 bits, format, EXIF without the orientation tag, ICC profile, DPI). EXIF orientation is applied
on reading. 16-bit color PNG and TIFF, which Pillow reads only as 8-bit, go through pypng and tifffile.

Writing is atomic: a temporary file in the target folder, flushed to disk, renamed into place.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import SrxError
from .fsio import TEMP_SUFFIX, DestinationExists, atomic_write, stale_files  # noqa: F401 (TEMP_SUFFIX re-exported)
from .limits import DEFAULT_MAX_PIXELS
from .png_encoder import PNG_SIGNATURE, encode_png

FORMAT_BY_NAME = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "tif": "TIFF",
                  "bmp": "BMP"}
EXTENSION_BY_FORMAT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
PNG_COMPRESS_LEVEL = 1  # zlib level 1 with the run-length strategy: see png_encoder
EXIF_ORIENTATION = 0x0112


class ImageReadError(SrxError):
    """A file that cannot be used as an input image (the message names the file and the reason)."""


class ImageWriteError(SrxError):
    """An output that could not be written."""


@dataclass
class DecodedImage:
    color: torch.Tensor  # (1, 3, H, W) float32 in [0, 1]
    alpha: torch.Tensor | None  # (1, 1, H, W) float32 in [0, 1]
    grayscale: bool
    bit_depth: int  # 8 or 16
    format: str  # PIL format name: PNG, JPEG, WEBP, TIFF, BMP, ...
    exif: bytes | None = None  # orientation removed (already applied)
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.color.shape[-1], self.color.shape[-2]

    @property
    def model_input(self) -> torch.Tensor:
        """The color as the engine takes it: an 8-bit image as its uint8 values (the engine then upsamples it
        with PIL's 8-bit bicubic, as the authors' scripts), a 16-bit image as float in [0, 1]. ``color`` holds
        ``value / 255`` in float32 for 8-bit images, from which the values come back exactly."""
        if self.bit_depth == 8:
            return self.color.mul(255).round_().to(torch.uint8)
        return self.color


# ----------------------------------------------------------------------------- reading


def _to_tensor(arr: np.ndarray, maxval: float) -> torch.Tensor:
    """(H, W, C) or (H, W) integer array -> (1, C, H, W) float32 in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) / maxval)
    return t.permute(2, 0, 1)[None].clamp_(0, 1).contiguous()


def _split(t: torch.Tensor, gray: bool, has_alpha: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    n = 1 if gray else 3
    color = t[:, :n]
    if gray:
        color = color.expand(-1, 3, -1, -1).contiguous()
    return color, (t[:, n : n + 1].contiguous() if has_alpha else None)


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, color type) of a PNG file, or None if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, C) array."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
           7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: a.transpose(1, 0, 2)[::-1]}
    return ops[orientation](arr) if orientation in ops else arr


def _exif_without_orientation(exif: Image.Exif) -> tuple[bytes | None, int]:
    orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
    if EXIF_ORIENTATION in exif:
        del exif[EXIF_ORIENTATION]
    return (exif.tobytes() if len(exif) else None), orientation


def _read_png16(path: Path, color_type: int) -> DecodedImage:
    """16-bit RGB / RGBA / gray+alpha PNG (Pillow would drop them to 8 bits)."""
    import png

    reader = png.Reader(filename=str(path))
    width, height, rows, info = reader.read()
    planes = info["planes"]
    arr = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
    icc = dpi = exif_bytes = None
    orientation = 1
    for kind, data in png.Reader(filename=str(path)).chunks():
        if kind == b"iCCP":
            name_end = data.index(b"\0")
            icc = zlib.decompress(data[name_end + 2 :])
        elif kind == b"pHYs" and data[8] == 1:  # pixels per metre
            x, y = struct.unpack(">II", data[:8])
            dpi = (x * 0.0254, y * 0.0254)
        elif kind == b"eXIf":
            exif = Image.Exif()
            exif.load(data)
            exif_bytes, orientation = _exif_without_orientation(exif)
    arr = _orient(arr, orientation)
    has_alpha = color_type in (4, 6)
    gray = color_type in (0, 4)
    color, alpha = _split(_to_tensor(arr, 65535.0), gray, has_alpha)
    return DecodedImage(color, alpha, gray, 16, "PNG", exif_bytes, icc, dpi)


def _read_tiff16(path: Path, im: Image.Image) -> DecodedImage:
    """16-bit color TIFF through tifffile; metadata from Pillow's view of the tags."""
    import tifffile

    arr = tifffile.imread(str(path))
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = arr.transpose(1, 2, 0)  # planar configuration
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint16:
        raise ImageReadError(f"{path}: unsupported TIFF layout {arr.shape} {arr.dtype}")
    exif_bytes, orientation = _exif_without_orientation(im.getexif())
    arr = _orient(arr, orientation)
    color, alpha = _split(_to_tensor(arr, 65535.0), False, arr.shape[-1] == 4)
    icc = im.info.get("icc_profile")
    return DecodedImage(color, alpha, False, 16, "TIFF", None, icc, im.info.get("dpi"),
                        ["TIFF EXIF tags are not copied for 16-bit color TIFF"] if exif_bytes else [])


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an image file; any problem is an ImageReadError naming the file and the reason."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        return _read(path, max_pixels)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (unrecognized format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: refused: {e}") from None
    except (OSError, SyntaxError, ValueError, struct.error, zlib.error, EOFError) as e:
        reason = str(e) or type(e).__name__
        raise ImageReadError(f"{path}: corrupt or truncated image ({reason})") from None
    except Exception as e:  # noqa: BLE001 - decoders raise many kinds; the batch must go on
        if type(e).__module__.startswith("png") or type(e).__module__.startswith("tifffile"):
            raise ImageReadError(f"{path}: corrupt image ({e})") from None
        raise


def _read(path: Path, max_pixels: int) -> DecodedImage:
    Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before decoding
    with Image.open(path) as im:
        w, h = im.size
        if w * h > max_pixels:
            raise ImageReadError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds --max-pixels {max_pixels:,}")
        header = _png_header(path) if im.format == "PNG" else None
        if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
            return _read_png16(path, header[1])
        if im.format == "TIFF" and im.mode in ("RGB", "RGBA") and tuple(im.tag_v2.get(258, (8,)))[0] == 16:
            return _read_tiff16(path, im)
        im.load()
        fmt = im.format or "PNG"
        icc = im.info.get("icc_profile")
        dpi = im.info.get("dpi")
        im = ImageOps.exif_transpose(im)  # a new image with the orientation applied and its tag cleared
        exif_bytes, _ = _exif_without_orientation(im.getexif())
        notes: list[str] = []
        mode = im.mode
        if mode == "CMYK":
            im, mode, icc = im.convert("RGB"), "RGB", None
            notes.append("CMYK converted to RGB (the CMYK color profile is not carried over)")
        elif mode == "P":
            mode = "RGBA" if "transparency" in im.info else "RGB"
            im = im.convert(mode)
        elif mode in ("PA", "RGBa", "La"):
            mode = "LA" if mode == "La" else "RGBA"
            im = im.convert(mode)
        elif mode == "1":
            im, mode = im.convert("L"), "L"
        if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            arr = np.asarray(im).astype(np.float32)
            color, alpha = _split(_to_tensor(arr, 65535.0), True, False)
            return DecodedImage(color, alpha, True, 16, fmt, exif_bytes, icc, dpi, notes)
        if mode in ("L", "LA", "RGB", "RGBA"):
            arr = np.asarray(im)
            gray, has_alpha = mode in ("L", "LA"), mode in ("LA", "RGBA")
            color, alpha = _split(_to_tensor(arr, 255.0), gray, has_alpha)
            return DecodedImage(color, alpha, gray, 8, fmt, exif_bytes, icc, dpi, notes)
        notes.append(f"{mode} image converted to RGB")
        color, _ = _split(_to_tensor(np.asarray(im.convert("RGB")), 255.0), False, False)
        return DecodedImage(color, None, False, 8, fmt, exif_bytes, icc, dpi, notes)


# ----------------------------------------------------------------------------- writing


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


def encode_image(color: torch.Tensor, alpha: torch.Tensor | None, fmt: str, *, grayscale: bool = False,
                 bit_depth: int = 8, quality: int = 95, exif: bytes | None = None, icc_profile: bytes | None = None,
                 dpi=None) -> bytes:
    """Encode to bytes in ``fmt`` (PNG/JPEG/WEBP/TIFF/BMP); the caller has dropped what ``fmt`` cannot hold."""
    channels = to_gray(color) if grayscale else color
    if alpha is not None:
        channels = torch.cat([channels, alpha], dim=1)
    bits = bit_depth if fmt in SIXTEEN_BIT_FORMATS else 8
    arr = _quantize(channels, bits)
    if fmt == "PNG":
        return encode_png(arr, icc_profile=icc_profile, exif=exif, dpi=dpi, level=PNG_COMPRESS_LEVEL)
    if bits == 16 and fmt == "TIFF" and arr.shape[-1] > 1:
        import tifffile

        buf = io.BytesIO()
        kwargs = {"resolution": (dpi[0], dpi[1]), "resolutionunit": "INCH"} if dpi else {}
        tifffile.imwrite(buf, arr, photometric="rgb", extrasamples=("unassalpha",) if arr.shape[-1] == 4 else None,
                         iccprofile=icc_profile, compression="zlib", **kwargs)
        return buf.getvalue()
    if bits == 16:
        im = Image.fromarray(arr[:, :, 0])  # I;16 grayscale
    else:
        im = Image.fromarray(arr if arr.shape[-1] > 1 else arr[:, :, 0], mode=None)
    params: dict = {}
    if icc_profile:
        params["icc_profile"] = icc_profile
    if exif and fmt in ("JPEG", "WEBP", "TIFF"):
        params["exif"] = exif
    if dpi and fmt in ("JPEG", "TIFF", "BMP"):
        params["dpi"] = tuple(float(d) for d in dpi)
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    if fmt == "JPEG":
        params["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "TIFF":
        params["compression"] = "tiff_deflate"
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
