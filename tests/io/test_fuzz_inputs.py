"""Hostile and damaged inputs: seeded mutations of small PNG/JPEG/TIFF/GIF/WebP files (EXIF included).

Every file either decodes or is refused with one ``ImageReadError`` naming it; whatever decodes encodes to
every output format; no library warning and no traceback reaches the user.
"""

import io
import logging
import random
import warnings
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from sr_cli.cli import app
from sr_cli.io.imageio import (
    ALPHA_FORMATS,
    EXTENSION_BY_FORMAT,
    FORMAT_BY_NAME,
    ImageReadError,
    encode_image,
    read_image,
)

SEED = 20240501
MUTANTS_PER_SEED_FILE = 30
MAX_PIXELS = 1 << 16  # mutated headers claim huge sizes: refuse them before decoding


def _camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SRXCam"
    exif[0x0110] = "Model X"
    exif[0x0112] = 6  # orientation
    exif[0x0131] = "firmware 1.0"
    camera = exif.get_ifd(0x8769)
    camera[0x9003] = "2024:05:01 12:00:00"
    camera[0x829A] = (1, 250)
    camera[0x8827] = 400
    exif.get_ifd(0x8825)[1] = "N"
    return exif.tobytes()


def seed_files() -> dict[str, bytes]:
    """Small valid files of every kind srx reads, each with the metadata that can damage it."""
    rng = np.random.default_rng(SEED)
    rgb = (rng.random((10, 12, 3)) * 255).astype(np.uint8)
    rgba = np.dstack([rgb, (rng.random((10, 12)) * 255).astype(np.uint8)])
    c16 = (rng.random((10, 12, 3)) * 65535).astype(np.uint16)
    la16 = (rng.random((10, 12, 2)) * 65535).astype(np.uint16)
    exif = _camera_exif()
    files: dict[str, bytes] = {}

    def pil(name, arr, fmt, **kw):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt, **kw)
        files[name] = buf.getvalue()

    pil("rgb.png", rgb, "PNG", exif=exif, dpi=(300, 300))
    pil("rgba.png", rgba, "PNG")
    pil("photo.jpg", rgb, "JPEG", exif=exif, quality=90)
    pil("photo.webp", rgb, "WEBP", exif=exif)
    pil("rgb8.tif", rgb, "TIFF", exif=exif)  # Pillow's own writer: with the Exif and GPS sub-directories
    pil("rgb8-deflate.tif", rgb, "TIFF", tiffinfo={0x010F: "SRXCam", 0x0112: 8}, compression="tiff_deflate")
    pil("gray.bmp", rgb[:, :, 0], "BMP")
    frames = [Image.fromarray(np.roll(rgb, i, axis=1)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    files["anim.gif"] = buf.getvalue()
    buf = io.BytesIO()
    png.Writer(12, 10, greyscale=False, bitdepth=16).write(buf, c16.reshape(10, 36))
    files["rgb16.png"] = buf.getvalue()
    buf = io.BytesIO()
    png.Writer(12, 10, greyscale=True, alpha=True, bitdepth=16).write(buf, la16.reshape(10, 24))
    files["la16.png"] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(buf, c16, photometric="rgb", compression="zlib")
    files["rgb16.tif"] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(buf, la16, photometric="minisblack", extrasamples=("unassalpha",))
    files["la16.tif"] = buf.getvalue()
    return files


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One damage of the kinds files suffer: flipped bytes, truncation, a copied or removed run of bytes."""
    b = bytearray(data)
    kind = rng.choice(["flip", "flip", "flip", "truncate", "splice", "cut", "header"])
    if kind == "flip":
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        del b[rng.randrange(1, len(b)) :]
    elif kind == "splice":
        start = rng.randrange(len(b))
        run = b[start : start + rng.randint(1, 64)]
        at = rng.randrange(len(b))
        b[at:at] = run
    elif kind == "cut":
        start = rng.randrange(len(b))
        del b[start : start + rng.randint(1, 64)]
    else:  # the first 64 bytes hold the headers (and in TIFF files the first tags)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(min(64, len(b)))] = rng.randrange(256)
    return bytes(b)


def exif_mutants(rng: random.Random, count: int) -> dict[str, bytes]:
    """JPEG and PNG files whose pixels are fine and whose EXIF block is damaged."""
    exif = _camera_exif()
    rgb = (np.random.default_rng(SEED).random((8, 8, 3)) * 255).astype(np.uint8)
    out = {}
    for i in range(count):
        damaged = bytearray(exif)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(6, len(damaged))] = rng.randrange(256)
        fmt = "JPEG" if i % 2 else "PNG"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt, exif=bytes(damaged))
        out[f"exif{i:03d}.{fmt.lower()}"] = buf.getvalue()
    return out


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fuzz")
    rng = random.Random(SEED)
    files = {}
    for name, data in seed_files().items():
        files[name] = data
        for i in range(MUTANTS_PER_SEED_FILE):
            files[f"m{i:02d}-{name}"] = mutate(data, rng)
    files.update(exif_mutants(rng, 120))
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def test_fuzzed_files_decode_or_fail_with_one_clear_error(fuzzed, tmp_path, capfd, caplog):
    decoded = refused = 0
    out = tmp_path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in fuzzed:
            try:
                image = read_image(path, max_pixels=MAX_PIXELS)
            except ImageReadError as e:
                message = str(e)
                assert message.startswith(f"{path}: ") and "\n" not in message, message
                refused += 1
                continue
            decoded += 1
            w, h = image.size
            assert image.color.shape == (1, 3, h, w) and image.bit_depth in (8, 16), path
            assert float(image.color.min()) >= 0 and float(image.color.max()) <= 1, path
            assert image.alpha is None or image.alpha.shape == (1, 1, h, w), path
            for fmt in sorted(set(FORMAT_BY_NAME.values())):
                notes: list[str] = []
                alpha = image.alpha if fmt in ALPHA_FORMATS else None  # as `srx upscale` does: flattened
                data = encode_image(image.color, alpha, fmt, grayscale=image.grayscale,
                                    bit_depth=image.bit_depth, exif=image.exif, icc_profile=image.icc_profile,
                                    dpi=image.dpi, notes=notes)
                written = out / f"{path.stem}{EXTENSION_BY_FORMAT[fmt]}"
                written.write_bytes(data)
                assert read_image(written).size == (w, h), (path, fmt)  # srx reads back what it writes
    assert caught == [], [str(w.message) for w in caught[:5]]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert capfd.readouterr().err == ""  # nothing from C libraries (libtiff, libpng) either
    assert len(fuzzed) > 400 and decoded > 150 and refused > 50, (decoded, refused)


def test_fuzzed_files_through_the_cli(fuzzed, tmp_path, capfd):
    """A sample through ``srx upscale`` with the embedded lite model: one ``error:`` line per bad file."""
    sample = random.Random(SEED).sample(fuzzed, 12)
    good = []
    for path in sample:
        try:
            read_image(path, max_pixels=MAX_PIXELS)
            good.append(path)
        except ImageReadError:
            pass
    result = CliRunner().invoke(app, ["upscale", *map(str, sample), "-o", str(tmp_path / "out"), "--format", "tiff",
                                      "--max-pixels", str(MAX_PIXELS)])  # TIFF: the format with most to get right
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(sample) - len(good), result.stderr
    assert result.exit_code == (1 if errors else 0), result.stderr
    assert 0 < len(good) < len(sample)
    assert len(list((tmp_path / "out").iterdir())) == len(good)
    assert capfd.readouterr().err == ""  # nothing printed around srx's own lines (C libraries write to fd 2)
