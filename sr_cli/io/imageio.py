"""Reading and writing images as users have them, without losing data or metadata.

Reading gives float tensors in [0, 1]: the color (always 3 channels, grayscale replicated), the alpha
channel when there is one, and what is needed to write the result back the same way (grayscale?,
8 or 16 bits, format, EXIF without the orientation tag, ICC profile, DPI). EXIF orientation is applied
on reading. 16-bit color and gray+alpha PNG and TIFF, which Pillow reads only as 8-bit (or not at all), go
through pypng and tifffile. Damaged files are one ImageReadError naming the file; damaged metadata is left
out with a note; what the libraries would print (warnings, log lines, libtiff's stderr) becomes notes.

Encoding and atomic writing live in ``image_encode``, EXIF handling in ``exif``; their public names are
importable from here too.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import stat
import struct
import sys
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import SrxError
from ..limits import DEFAULT_MAX_PIXELS
from .exif import EXIF_DAMAGED, Exif, exif_from_bytes, exif_of_image
from .fsio import TEMP_SUFFIX  # noqa: F401 (re-exported: the batch planner skips srx's temporary files)
from .image_encode import (  # noqa: F401 (re-exported: callers import encoding and writing from here)
    ALPHA_FORMATS,
    EXTENSION_BY_FORMAT,
    FORMAT_BY_NAME,
    JPEG_MAX_EXIF,
    PNG_COMPRESS_LEVEL,
    SIXTEEN_BIT_FORMATS,
    ImageWriteError,
    encode_image,
    stale_temp_files,
    to_gray,
    write_atomic,
)
from .png_encoder import PNG_SIGNATURE


class ImageReadError(SrxError):
    """A file that cannot be used as an input image (the message names the file and the reason)."""


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

    def __post_init__(self) -> None:
        if self.dpi is not None:
            self.dpi = _sane_dpi(self.dpi)
            if self.dpi is None:
                self.notes.append("resolution (DPI) unreadable, not copied")

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


def _sane_dpi(dpi) -> tuple[float, float] | None:
    """A resolution worth copying: two finite positive numbers (damaged metadata gives 0, NaN, 1e30...)."""
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return (x, y) if all(math.isfinite(v) and 0 < v < 1e6 for v in (x, y)) else None


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
    """Apply an EXIF orientation (1-8) to an (H, W) or (H, W, C) array."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
           7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1]}
    return ops[orientation](arr) if orientation in ops else arr


# ----------------------------------------------------------------------------- formats Pillow cannot read here

# ISO base media (HEIF family) brands -> format name, the Pillow plugin that reads it.
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
                b"hevx": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
_PLUGINS = {"HEIC": "pillow-heif", "HEIF": "pillow-heif", "AVIF": "pillow-avif-plugin", "JPEG XL": "pillow-jxl-plugin"}
_plugins_registered = False
_SIGNATURES = ((PNG_SIGNATURE, "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"BM", "BMP"))


def register_optional_plugins() -> None:
    """Let Pillow read HEIC/AVIF/JPEG XL when their plugin packages are installed (some need registering)."""
    global _plugins_registered
    if _plugins_registered:
        return
    _plugins_registered = True
    with contextlib.suppress(Exception):  # an optional plugin that is absent or broken just stays unused
        import pillow_heif

        pillow_heif.register_heif_opener()
    for module in ("pillow_avif", "pillow_jxl"):  # these register themselves on import
        with contextlib.suppress(Exception):
            importlib.import_module(module)


def _unsupported_format(path: Path) -> str:
    """Why Pillow did not recognize ``path``: the format when srx can tell, and what would read it."""
    with open(path, "rb") as f:
        head = f.read(32)
    name = None
    if head[4:8] == b"ftyp":
        brands = [head[8:12]] + [head[i : i + 4] for i in range(16, min(len(head), 32), 4)]
        name = next((_FTYP_BRANDS[b] for b in brands if b in _FTYP_BRANDS), None)
    elif head.startswith((b"\xff\x0a", b"\0\0\0\x0cJXL \r\n\x87\n")):
        name = "JPEG XL"
    if name:
        return f"{name} image: Pillow cannot read it here (install {_PLUGINS[name]})"
    damaged = next((fmt for magic, fmt in _SIGNATURES if head.startswith(magic)), None)
    if damaged:
        return f"damaged {damaged} file (its header cannot be read)"
    if head.startswith(b"%PDF"):
        return "a PDF document, not an image"
    if b"<svg" in head or head.lstrip().startswith(b"<?xml"):
        return "an SVG/XML file: srx reads raster images"
    return "not an image (unrecognized format)"


# ----------------------------------------------------------------------------- decoders


class _LibraryMessages(logging.Handler):
    """Collects what decoders say while reading (Python warnings, tifffile's log) instead of printing it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []  # (where from, first line)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append((record.name, record.getMessage()))

    @contextlib.contextmanager
    def capture(self):
        logs = [logging.getLogger(name) for name in ("PIL", "tifffile")]  # unconfigured: printed on stderr
        propagate = [log.propagate for log in logs]
        for log in logs:
            log.addHandler(self)
            log.propagate = False
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield self
        finally:
            for log, before in zip(logs, propagate):
                log.removeHandler(self)
                log.propagate = before
            self.messages += [(w.filename, str(w.message)) for w in caught]

    @contextlib.contextmanager
    def c_stderr(self, origin: str):
        """What C code (libtiff) prints on file descriptor 2 meanwhile, collected instead of shown."""
        try:
            sys.stderr.flush()
            sink = tempfile.TemporaryFile()  # noqa: SIM115 - entered below, once it exists
        except (OSError, ValueError):  # no stderr, or no temporary folder: the messages are shown, nothing fails
            yield
            return
        with sink:
            try:
                saved = os.dup(2)
            except OSError:
                yield
                return
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
                self.messages += [(origin, line) for line in text.splitlines() if line.strip()]

    def notes(self, fmt: str) -> list[str]:
        """One note per distinct message; Pillow's EXIF parser and TIFF tag readers speak of damaged metadata."""
        notes: list[str] = []
        for origin, message in self.messages:
            text = (message.strip().splitlines() or ["(no message)"])[0]
            if origin.endswith("TiffImagePlugin.py") or origin in ("tifffile", "PIL.TiffImagePlugin") or "EXIF" in text:
                note = f"damaged TIFF tags skipped ({text[:120]})" if fmt == "TIFF" else EXIF_DAMAGED
            else:
                note = f"decoder warning: {text[:200]}"
            if note not in notes:
                notes.append(note)
        return notes


def _frames_note(im: Image.Image) -> list[str]:
    if im.format == "MPO":  # phone JPEGs: the main picture first, then previews or depth maps, not frames
        return []
    try:
        frames = int(getattr(im, "n_frames", 1))
    except Exception:  # noqa: BLE001 - a damaged later frame: the first one may still be fine
        frames = 1
    finally:
        if im.tell() != 0:
            im.seek(0)
    return [f"first of {frames} frames used (animated or multi-page image)"] if frames > 1 else []


def _read_png16(path: Path, color_type: int) -> DecodedImage:
    """16-bit RGB / RGBA / gray+alpha PNG (Pillow would drop them to 8 bits)."""
    import png

    with open(path, "rb") as f:  # pypng leaves files it opens itself open when they are damaged
        width, height, rows, info = png.Reader(file=f).read()
        planes = info["planes"]
        arr = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
    with open(path, "rb") as f:
        chunks = list(png.Reader(file=f).chunks())
    icc = dpi = None
    exif = Exif(None, 1, [])
    for kind, data in chunks:
        if kind == b"iCCP":
            name_end = data.index(b"\0")
            icc = zlib.decompress(data[name_end + 2 :])
        elif kind == b"pHYs" and len(data) == 9 and data[8] == 1:  # pixels per metre
            x, y = struct.unpack(">II", data[:8])
            dpi = (x * 0.0254, y * 0.0254)
        elif kind == b"eXIf":
            exif = exif_from_bytes(data)
    arr = _orient(arr, exif.orientation)
    has_alpha = color_type in (4, 6)
    gray = color_type in (0, 4)
    color, alpha = _split(_to_tensor(arr, 65535.0), gray, has_alpha)
    return DecodedImage(color, alpha, gray, 16, "PNG", exif.data, icc, dpi, exif.notes)


def _read_tiff16(path: Path, max_pixels: int, exif: Exif, icc: bytes | None, dpi, notes: list[str]) -> DecodedImage:
    """16-bit gray+alpha and color TIFF through tifffile (Pillow reads them as 8 bits, or not at all)."""
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        page = tif.pages.first
        w, h = page.imagewidth, page.imagelength
        if w * h > max_pixels:
            raise ImageReadError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds --max-pixels {max_pixels:,}")
        photometric = int(page.photometric)
        arr = page.asarray()
    if arr.ndim == 3 and arr.shape[0] in (2, 3, 4) and arr.shape[-1] not in (2, 3, 4):
        arr = arr.transpose(1, 2, 0)  # planar configuration
    gray = photometric in (0, 1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if (arr.dtype != np.uint16 or arr.ndim != 3 or photometric not in (0, 1, 2)
            or arr.shape[-1] not in ((1, 2) if gray else (3, 4))):
        layout = "x".join(map(str, arr.shape))
        raise ImageReadError(f"{path}: unsupported TIFF layout ({layout} {arr.dtype} array, photometric "
                             f"{photometric}); srx reads 8/16-bit gray, gray+alpha, RGB and RGBA")
    if photometric == 0:  # min-is-white
        arr[..., :1] = 65535 - arr[..., :1]
    arr = _orient(arr, exif.orientation)
    color, alpha = _split(_to_tensor(arr, 65535.0), gray, arr.shape[-1] in (2, 4))
    return DecodedImage(color, alpha, gray, 16, "TIFF", exif.data, icc, dpi, notes + exif.notes)


def _tiff_metadata_without_pillow(path: Path) -> tuple[Exif, bytes | None, tuple[float, float] | None, list[str]]:
    """EXIF, ICC profile, DPI and the frames note of a TIFF that Pillow cannot open.

    A TIFF file is itself an EXIF structure: its first directory is read as one (layout tags are left out).
    """
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        frames = len(tif.pages)
        tags = tif.pages.first.tags
        icc = tags.valueof(34675)
        x, y, unit = tags.valueof(282), tags.valueof(283), tags.valueof(296, 2)
    dpi = None
    with contextlib.suppress(TypeError, ValueError, IndexError, ArithmeticError):  # damaged: no DPI, not an error
        if x and y and int(unit) in (2, 3):
            per_inch = 2.54 if int(unit) == 3 else 1.0
            dpi = (x[0] / x[1] * per_inch, y[0] / y[1] * per_inch)
    notes = [f"first of {frames} frames used (animated or multi-page image)"] if frames > 1 else []
    return exif_from_bytes(path.read_bytes()), (bytes(icc) if icc else None), dpi, notes


def _is_tiff16_color_or_alpha(im: Image.Image) -> bool:
    bits = im.tag_v2.get(258, (8,))
    samples = im.tag_v2.get(277, 1)
    first_bits = bits[0] if isinstance(bits, tuple) and bits else bits
    return first_bits == 16 and samples in (2, 3, 4)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an image file; any problem is an ImageReadError naming the file and the reason.

    Library warnings (damaged EXIF, odd chunks) become notes on the result instead of text on stderr.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(f"{path}: not a regular file ({_file_kind(st.st_mode)})")
    if st.st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    register_optional_plugins()
    messages = _LibraryMessages()
    try:
        with messages.capture():
            image = _read(path, max_pixels, messages)
        image.notes += [n for n in messages.notes(image.format) if n not in image.notes]
        return image
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: {_unsupported_format(path)}") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: refused: {e}") from None
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode it") from None
    except OSError as e:
        if e.errno is not None:  # the file system, not the content
            raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
        raise ImageReadError(f"{path}: corrupt or truncated image ({str(e) or type(e).__name__})") from None
    except (SyntaxError, ValueError, TypeError, IndexError, KeyError, ArithmeticError, struct.error, zlib.error,
            EOFError) as e:
        reason = str(e) or type(e).__name__
        raise ImageReadError(f"{path}: corrupt or truncated image ({reason})") from None
    except Exception as e:  # decoders raise many kinds; the batch must go on
        if type(e).__module__.startswith(("png", "tifffile")):
            raise ImageReadError(f"{path}: corrupt image ({e})") from None
        raise


def _read(path: Path, max_pixels: int, messages: _LibraryMessages) -> DecodedImage:
    Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before decoding
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic not in (b"II*\0", b"MM\0*"):
            raise
        # A TIFF layout Pillow does not know (16-bit gray+alpha, for one): tifffile may.
        exif, icc, dpi, notes = _tiff_metadata_without_pillow(path)
        return _read_tiff16(path, max_pixels, exif, icc, dpi, notes)
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise ImageReadError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds --max-pixels {max_pixels:,}")
        notes = _frames_note(im)
        fmt = im.format or "PNG"
        header = _png_header(path) if fmt == "PNG" else None
        if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
            image = _read_png16(path, header[1])
            image.notes[:0] = notes
            return image
        icc = im.info.get("icc_profile")
        dpi = im.info.get("dpi")
        if fmt == "TIFF" and _is_tiff16_color_or_alpha(im):
            return _read_tiff16(path, max_pixels, exif_of_image(im), icc, dpi, notes)
        if fmt == "TIFF":
            with messages.c_stderr("libtiff"):  # libtiff prints its complaints itself
                im.load()
        else:
            im.load()
        # After load(): Pillow applies a TIFF's orientation itself while loading (and drops the tag).
        exif = exif_of_image(im)
        notes += exif.notes
        mode = im.mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # conversion advice ("palette images with transparency ...") is ours to act on
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
                arr = _orient(np.asarray(im).astype(np.float32), exif.orientation)
                color, alpha = _split(_to_tensor(arr, 65535.0), True, False)
                return DecodedImage(color, alpha, True, 16, fmt, exif.data, icc, dpi, notes)
            if mode in ("L", "LA", "RGB", "RGBA"):
                arr = _orient(np.asarray(im), exif.orientation)
                gray, has_alpha = mode in ("L", "LA"), mode in ("LA", "RGBA")
                color, alpha = _split(_to_tensor(arr, 255.0), gray, has_alpha)
                return DecodedImage(color, alpha, gray, 8, fmt, exif.data, icc, dpi, notes)
            notes.append(f"{mode} image converted to RGB")
            arr = _orient(np.asarray(im.convert("RGB")), exif.orientation)
        color, _ = _split(_to_tensor(arr, 255.0), False, False)
        return DecodedImage(color, None, False, 8, fmt, exif.data, icc, dpi, notes)
