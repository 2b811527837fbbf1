"""Which files are images: one rule for every command that scans a folder (upscale, train, evaluate).

A folder scan picks up regular files whose extension belongs to a format Pillow can open *and decode* here
(HEIC/AVIF/JPEG XL when their plugin is installed), and skips hidden files and folders and srx's own
temporary and claim files. A file named explicitly is never filtered: reading it gives the true reason
when it is not a usable image.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from .fsio import CLAIM_SUFFIX, TEMP_SUFFIX

NOT_DECODABLE = {"MPEG"}  # Pillow identifies these files but cannot decode their pixels


def _can_decode(fmt: str) -> bool:
    from PIL import ImageFile

    if fmt in NOT_DECODABLE:
        return False
    if fmt == "EPS":  # through Ghostscript only
        from PIL import EpsImagePlugin

        return bool(EpsImagePlugin.has_ghostscript())
    cls = Image.OPEN[fmt][0]
    if isinstance(cls, type) and issubclass(cls, ImageFile.StubImageFile):  # identified; decoded by a plugin only
        return getattr(cls, "_handler", None) is not None
    return True


def image_extensions() -> set[str]:
    """Extensions (lower case, with the dot) of the formats Pillow can open and decode here.

    Save-only formats (PDF) and formats that need a missing program or plugin (EPS without Ghostscript,
    the BUFR/GRIB/HDF5/WMF stubs) are left out: a scan must not pick files it will then fail.
    """
    from .imageio import register_optional_plugins

    register_optional_plugins()  # HEIC/AVIF/JPEG XL files are scanned when their plugin is installed
    Image.init()
    openable = {fmt for fmt in Image.OPEN if _can_decode(fmt)}
    if "JPEG" in openable:
        openable.add("MPO")  # multi-picture JPEGs open through the JPEG plugin
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in openable}


def is_srx_work_file(name: str) -> bool:
    """A temporary or claim file of a running (or killed) srx: never an input."""
    return name.startswith(".") and name.endswith((TEMP_SUFFIX, CLAIM_SUFFIX))


def list_images(folder: str | Path, recursive: bool = False, extensions: set[str] | None = None) -> list[Path]:
    """The image files in ``folder`` (and its subfolders with ``recursive``), sorted by path.

    Hidden files, files inside hidden folders and srx's temporary files are skipped, as are files whose
    extension is not in ``extensions`` (default: ``image_extensions()``).
    """
    folder = Path(folder)
    exts = image_extensions() if extensions is None else extensions
    found = []
    for path in sorted(folder.glob("**/*" if recursive else "*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or is_srx_work_file(path.name):
            continue
        if path.suffix.lower() in exts and path.is_file():
            found.append(path)
    return found
