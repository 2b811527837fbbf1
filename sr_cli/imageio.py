"""Reading and writing images as users have them, without losing data or metadata.

Reading gives float tensors in [0, 1]: the color (always 3 channels, grayscale replicated), the alpha
channel when there is one, and what is needed to write the result back the same way (grayscale?,
8 or 16 bits, format, EXIF without the orientation tag, ICC profile, DPI). EXIF orientation is applied
on reading. 16-bit color and gray+alpha PNG and TIFF, which Pillow reads only as 8-bit (or not at all), go
through pypng and tifffile. Damaged files are one ImageReadError naming the file; damaged metadata is left
out with a note; what the libraries would print (warnings, log lines, libtiff's stderr) becomes notes.

Encoding copies the EXIF into every format that holds it; into TIFF by merging its tags (Exif and GPS
sub-directories included) into the file's first directory, which neither Pillow's libtiff writer nor tifffile do.

Writing is atomic: a temporary file in the target folder, flushed to disk, renamed into place.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import math
import os
import re
import stat
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

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


# ----------------------------------------------------------------------------- EXIF

# Tags that describe how a TIFF file stores its pixels (or carry data srx keeps elsewhere: the ICC profile,
# XMP, Photoshop blocks), not facts about the photo: never copied from an input's IFD0 to an output.
_STRUCTURAL_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, EXIF_ORIENTATION, 277, 278, 279, 280, 281, 284,
    282, 283, 296,  # resolution: srx carries the DPI on its own (and writes it where the format holds it)
    290, 291, 292, 293, 297, 301, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347,
    *range(512, 522), 529, 530, 531, 532, 700, 34377, 34675, 37724,
})
_SUB_IFDS = (0x8769, 0x8825)  # the Exif (camera settings) and GPS directories
_INTEROP_IFD = 0xA005  # inside the Exif directory
EXIF_UNREADABLE = "EXIF unreadable, not copied"
EXIF_DAMAGED = "EXIF damaged: unreadable tags not copied"


@dataclass
class _Exif:
    data: bytes | None  # "Exif\0\0" + a little TIFF structure, as JPEG/PNG/WebP carry it
    orientation: int
    notes: list[str]


def _ifd_bytes(tags: dict, byteorder: bytes, offset: int) -> bytes:
    """One IFD (sub-directories given as dicts) serialized for a file in which it starts at ``offset``."""
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    ifd = ImageFileDirectory_v2(ifh=byteorder + (b"*\0" if byteorder == b"II" else b"\0*") + b"\0\0\0\0")
    for tag, value in tags.items():
        ifd[tag] = value
    return ifd.tobytes(offset)


def _exif_tags(exif: Image.Exif) -> tuple[dict, int, int]:
    """(tags worth copying, sub-directories as dicts; orientation; number of unreadable tags dropped)."""
    tags: dict = {}
    dropped = 0

    def readable(source, tag, directory=None):
        nonlocal dropped
        try:
            value = source[tag]
            # Values Pillow cannot write again (text where a number belongs...) are as good as unreadable.
            _ifd_bytes({directory: {tag: value}} if directory else {tag: value}, b"II", 8)
            return True, value
        except Exception:  # noqa: BLE001 - damaged tags come in every shape; drop the tag, keep the rest
            dropped += 1
            return False, None

    orientation = 1
    for tag in list(exif.keys()):
        if tag == EXIF_ORIENTATION:
            value = exif.get(tag)
            orientation = value if isinstance(value, int) and 1 <= value <= 8 else 1
        elif tag in _SUB_IFDS:
            try:
                sub = dict(exif.get_ifd(tag))
            except Exception:  # noqa: BLE001 - a sub-directory pointer into nowhere
                dropped += 1
                continue
            if tag == 0x8769 and _INTEROP_IFD in sub:
                try:
                    sub[_INTEROP_IFD] = dict(exif.get_ifd(_INTEROP_IFD)) or None
                except Exception:  # noqa: BLE001 - same: keep what can be kept
                    sub[_INTEROP_IFD] = None
                if sub[_INTEROP_IFD] is None:
                    del sub[_INTEROP_IFD]
                    dropped += 1
            clean = {}
            for sub_tag in list(sub):
                ok, value = (True, sub[sub_tag]) if isinstance(sub[sub_tag], dict) else readable(sub, sub_tag, tag)
                if ok:
                    clean[sub_tag] = value
            if clean:
                tags[tag] = clean
        elif tag not in _STRUCTURAL_TAGS:
            ok, value = readable(exif, tag)
            if ok and not (tag == 0x010E and str(value).startswith('{"shape":')):  # tifffile's layout note
                tags[tag] = value
    return tags, orientation, dropped


def _exif_of(load: Callable[[], Image.Exif]) -> _Exif:
    """The EXIF worth copying, orientation removed (srx applies it): never fails, damage becomes a note.

    The result is serialized and parsed again here, so writing it later (TIFF merges it tag by tag) cannot fail.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tags, orientation, dropped = _exif_tags(load())
            data = (b"Exif\0\0II*\0\x08\0\0\0" + _ifd_bytes(tags, b"II", 8)) if tags else None
            if data is not None:  # what encode_image does with it for a TIFF output: it must work
                again = Image.Exif()
                again.load(data)
                _ifd_bytes(_exif_tags(again)[0], b"II", 8)
        except Exception:  # noqa: BLE001 - Pillow's EXIF parser raises many kinds on damaged blocks
            return _Exif(None, 1, [EXIF_UNREADABLE])
    if dropped or caught:
        note = EXIF_DAMAGED if tags else EXIF_UNREADABLE
        return _Exif(data, orientation, [note])
    return _Exif(data, orientation, [])


def _exif_from_bytes(data: bytes) -> _Exif:
    def load() -> Image.Exif:
        exif = Image.Exif()
        exif.load(data)
        return exif

    return _exif_of(load)


_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([1-8])')


def _exif_of_image(im: Image.Image) -> _Exif:
    """EXIF of an opened image, parsed afresh: Pillow's cached copy may have swallowed a parse error."""
    raw = im.info.get("exif")
    exif = _exif_from_bytes(raw) if isinstance(raw, bytes) else _exif_of(im.getexif)
    if exif.orientation == 1:  # no EXIF orientation: Adobe software may have put it in the XMP packet
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or b""
        match = _XMP_ORIENTATION.search(xmp.encode() if isinstance(xmp, str) else xmp)
        if match and im.format != "TIFF":  # (Pillow applies a TIFF's own)
            exif.orientation = int(match[1])
    return exif


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
    exif = _Exif(None, 1, [])
    for kind, data in chunks:
        if kind == b"iCCP":
            name_end = data.index(b"\0")
            icc = zlib.decompress(data[name_end + 2 :])
        elif kind == b"pHYs" and len(data) == 9 and data[8] == 1:  # pixels per metre
            x, y = struct.unpack(">II", data[:8])
            dpi = (x * 0.0254, y * 0.0254)
        elif kind == b"eXIf":
            exif = _exif_from_bytes(data)
    arr = _orient(arr, exif.orientation)
    has_alpha = color_type in (4, 6)
    gray = color_type in (0, 4)
    color, alpha = _split(_to_tensor(arr, 65535.0), gray, has_alpha)
    return DecodedImage(color, alpha, gray, 16, "PNG", exif.data, icc, dpi, exif.notes)


def _read_tiff16(path: Path, max_pixels: int, exif: _Exif, icc: bytes | None, dpi, notes: list[str]) -> DecodedImage:
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


def _tiff_metadata_without_pillow(path: Path) -> tuple[_Exif, bytes | None, tuple[float, float] | None, list[str]]:
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
    return _exif_from_bytes(path.read_bytes()), (bytes(icc) if icc else None), dpi, notes


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
            return _read_tiff16(path, max_pixels, _exif_of_image(im), icc, dpi, notes)
        if fmt == "TIFF":
            with messages.c_stderr("libtiff"):  # libtiff prints its complaints itself
                im.load()
        else:
            im.load()
        # After load(): Pillow applies a TIFF's orientation itself while loading (and drops the tag).
        exif = _exif_of_image(im)
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


JPEG_MAX_EXIF = 65533  # one APP1 segment


def _tiff_with_exif(tiff: bytes, exif: bytes) -> bytes:
    """``tiff`` (one image, classic TIFF) with the EXIF's tags added to its first directory.

    Pillow's libtiff writer cannot write the Exif/GPS sub-directories and tifffile writes no EXIF, so the EXIF
    tags and sub-directories are appended after the image and a new first directory (the old entries plus
    these) replaces the old one: every offset in the file stays valid. Tags the writer set itself win.
    """
    order = tiff[:2]
    endian = "<" if order == b"II" else ">"
    if struct.unpack(endian + "H", tiff[2:4])[0] != 42:
        return tiff  # BigTIFF (over 4 GiB): left as written
    (first,) = struct.unpack(endian + "I", tiff[4:8])
    (count,) = struct.unpack(endian + "H", tiff[first : first + 2])
    entries = [tiff[first + 2 + 12 * i : first + 14 + 12 * i] for i in range(count)]
    (next_ifd,) = struct.unpack(endian + "I", tiff[first + 2 + 12 * count : first + 6 + 12 * count])
    present = {struct.unpack(endian + "H", e[:2])[0] for e in entries}
    parsed = Image.Exif()
    parsed.load(exif)
    tags = {tag: value for tag, value in _exif_tags(parsed)[0].items() if tag not in present}
    if not tags:
        return tiff
    start = len(tiff) + len(tiff) % 2
    block = _ifd_bytes(tags, order, start)  # a directory (not used) followed by the values and sub-directories
    (added,) = struct.unpack(endian + "H", block[:2])
    entries += [block[2 + 12 * i : 14 + 12 * i] for i in range(added)]
    entries.sort(key=lambda e: struct.unpack(endian + "H", e[:2])[0])
    new_first = start + len(block) + len(block) % 2
    directory = struct.pack(endian + "H", len(entries)) + b"".join(entries) + struct.pack(endian + "I", next_ifd)
    out = bytearray(tiff)
    out[4:8] = struct.pack(endian + "I", new_first)
    out += b"\0" * (start - len(tiff)) + block + b"\0" * (new_first - start - len(block)) + directory
    return bytes(out)


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
        return _tiff_with_exif(data, exif) if exif else data
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
