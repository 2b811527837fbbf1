"""EXIF as srx carries it from an input to its output: read without ever failing, written into every format.

Reading keeps the tags that describe the photo (camera, GPS, dates), drops the ones that describe how a TIFF
stores its pixels, takes the orientation out (srx applies it) and turns damage into a note instead of an error.
Writing into TIFF merges the tags (Exif and GPS sub-directories included) into the file's first directory,
which neither Pillow's libtiff writer nor tifffile do.
"""

from __future__ import annotations

import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

EXIF_ORIENTATION = 0x0112

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
class Exif:
    data: bytes | None  # "Exif\0\0" + a little TIFF structure, as JPEG/PNG/WebP carry it
    orientation: int
    notes: list[str]


def ifd_bytes(tags: dict, byteorder: bytes, offset: int) -> bytes:
    """One IFD (sub-directories given as dicts) serialized for a file in which it starts at ``offset``."""
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    ifd = ImageFileDirectory_v2(ifh=byteorder + (b"*\0" if byteorder == b"II" else b"\0*") + b"\0\0\0\0")
    for tag, value in tags.items():
        ifd[tag] = value
    return ifd.tobytes(offset)


def exif_tags(exif: Image.Exif) -> tuple[dict, int, int]:
    """(tags worth copying, sub-directories as dicts; orientation; number of unreadable tags dropped)."""
    tags: dict = {}
    dropped = 0

    def readable(source, tag, directory=None):
        nonlocal dropped
        try:
            value = source[tag]
            # Values Pillow cannot write again (text where a number belongs...) are as good as unreadable.
            ifd_bytes({directory: {tag: value}} if directory else {tag: value}, b"II", 8)
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


def exif_of(load: Callable[[], Image.Exif]) -> Exif:
    """The EXIF worth copying, orientation removed (srx applies it): never fails, damage becomes a note.

    The result is serialized and parsed again here, so writing it later (TIFF merges it tag by tag) cannot fail.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tags, orientation, dropped = exif_tags(load())
            data = (b"Exif\0\0II*\0\x08\0\0\0" + ifd_bytes(tags, b"II", 8)) if tags else None
            if data is not None:  # what encode_image does with it for a TIFF output: it must work
                again = Image.Exif()
                again.load(data)
                ifd_bytes(exif_tags(again)[0], b"II", 8)
        except Exception:  # noqa: BLE001 - Pillow's EXIF parser raises many kinds on damaged blocks
            return Exif(None, 1, [EXIF_UNREADABLE])
    if dropped or caught:
        note = EXIF_DAMAGED if tags else EXIF_UNREADABLE
        return Exif(data, orientation, [note])
    return Exif(data, orientation, [])


def exif_from_bytes(data: bytes) -> Exif:
    def load() -> Image.Exif:
        exif = Image.Exif()
        exif.load(data)
        return exif

    return exif_of(load)


_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([1-8])')


def exif_of_image(im: Image.Image) -> Exif:
    """EXIF of an opened image, parsed afresh: Pillow's cached copy may have swallowed a parse error."""
    raw = im.info.get("exif")
    exif = exif_from_bytes(raw) if isinstance(raw, bytes) else exif_of(im.getexif)
    if exif.orientation == 1:  # no EXIF orientation: Adobe software may have put it in the XMP packet
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or b""
        match = _XMP_ORIENTATION.search(xmp.encode() if isinstance(xmp, str) else xmp)
        if match and im.format != "TIFF":  # (Pillow applies a TIFF's own)
            exif.orientation = int(match[1])
    return exif


def tiff_with_exif(tiff: bytes, exif: bytes) -> bytes:
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
    tags = {tag: value for tag, value in exif_tags(parsed)[0].items() if tag not in present}
    if not tags:
        return tiff
    start = len(tiff) + len(tiff) % 2
    block = ifd_bytes(tags, order, start)  # a directory (not used) followed by the values and sub-directories
    (added,) = struct.unpack(endian + "H", block[:2])
    entries += [block[2 + 12 * i : 14 + 12 * i] for i in range(added)]
    entries.sort(key=lambda e: struct.unpack(endian + "H", e[:2])[0])
    new_first = start + len(block) + len(block) % 2
    directory = struct.pack(endian + "H", len(entries)) + b"".join(entries) + struct.pack(endian + "I", next_ifd)
    out = bytearray(tiff)
    out[4:8] = struct.pack(endian + "I", new_first)
    out += b"\0" * (start - len(tiff)) + block + b"\0" * (new_first - start - len(block)) + directory
    return bytes(out)

