"""Reading images as users have them, and writing their metadata back: damaged EXIF, TIFF metadata,
16-bit gray+alpha, multi-frame files, formats Pillow cannot read here, paths that are not files."""

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
import torch
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from sr_cli.io.imageio import ImageReadError, encode_image, read_image

RNG = np.random.default_rng(7)


def _rgb(h=6, w=8) -> np.ndarray:
    return (RNG.random((h, w, 3)) * 255).astype(np.uint8)


def _camera_exif(orientation: int | None = None) -> Image.Exif:
    """EXIF as cameras write it: IFD0 tags plus the Exif and GPS sub-directories."""
    exif = Image.Exif()
    exif[0x010F] = "SRXCam"
    exif[0x0110] = "Model X"
    if orientation:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 12:00:00"  # DateTimeOriginal
    exif.get_ifd(0x8769)[0x829A] = IFDRational(1, 250)  # ExposureTime
    exif.get_ifd(0x8825)[1] = "N"  # GPSLatitudeRef
    return exif


def _exif_of(data: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(data)
    return exif


def _jpeg(path: Path, exif: bytes, arr=None) -> Path:
    Image.fromarray(_rgb() if arr is None else arr).save(path, quality=95, exif=exif)
    return path


def _read_quietly(path, **kw):
    """read_image, asserting that no library warning escapes it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_image(path, **kw)
    assert [str(w.message) for w in caught] == []
    return image


# ----------------------------------------------------------------------------- damaged EXIF


def _raw_exif(entries, header: bytes = b"II*\0", sub_ifd: int = 0, sub_entries=()) -> bytes:
    """A hand-made little-endian EXIF block: (tag, type, count, 4 value bytes) entries in IFD0 and, with
    ``sub_ifd`` (0x8769 Exif, 0x8825 GPS), ``sub_entries`` in that sub-directory right after IFD0."""

    def directory(items):
        return struct.pack("<H", len(items)) + b"".join(struct.pack("<HHI", *e[:3]) + e[3] for e in items) + bytes(4)

    entries = list(entries)
    if sub_ifd:
        sub_at = 8 + 2 + 12 * (len(entries) + 1) + 4  # after IFD0, which gets the pointer entry too
        entries.append((sub_ifd, 4, 1, struct.pack("<I", sub_at)))
    body = directory(entries) + (directory(list(sub_entries)) if sub_ifd else b"")
    return b"Exif\0\0" + header + struct.pack("<I", 8) + body


def test_damaged_exif_values_are_dropped_with_a_note_and_the_image_upscales(tmp_path):
    # GPSAltitude (a RATIONAL) stored as text: Pillow reads it but cannot write it back.
    exif = _raw_exif([(0x010F, 2, 4, b"Cam\0")], sub_ifd=0x8825,
                     sub_entries=[(1, 2, 2, b"N\0\0\0"), (6, 2, 4, b"abc\0")])
    image = _read_quietly(_jpeg(tmp_path / "a.jpg", exif))
    assert image.size == (8, 6)
    assert _exif_of(image.exif)[0x010F] == "Cam" and _exif_of(image.exif).get_ifd(0x8825) == {1: "N"}
    assert image.notes == ["EXIF damaged: unreadable tags not copied"]
    for fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        data = encode_image(image.color, None, fmt, exif=image.exif)
        assert Image.open(io.BytesIO(data)).getexif()[0x010F] == "Cam", fmt


def test_damaged_exif_header_does_not_refuse_a_valid_image(tmp_path):
    exif = _raw_exif([(0x010F, 2, 4, b"Cam\0")], header=b"MX\0*")  # not a TIFF byte order mark
    image = _read_quietly(_jpeg(tmp_path / "a.jpg", exif))
    assert image.size == (8, 6) and image.exif is None
    assert image.notes == ["EXIF unreadable, not copied"]


def test_exif_with_tags_pointing_past_its_end_keeps_the_readable_tags(tmp_path):
    good = _camera_exif().tobytes()
    damaged = bytearray(good)
    # Make the Model entry (type ASCII) claim 5000 bytes: its value lies outside the block.
    order = "<" if good[6:8] == b"II" else ">"
    at = damaged.index(struct.pack(order + "HH", 0x0110, 2)) + 4
    damaged[at : at + 4] = struct.pack(order + "I", 5000)
    image = _read_quietly(_jpeg(tmp_path / "a.jpg", bytes(damaged)))
    exif = _exif_of(image.exif)
    assert exif[0x010F] == "SRXCam" and 0x0110 not in exif
    assert exif.get_ifd(0x8769)[0x9003] == "2024:05:01 12:00:00"
    assert image.notes == ["EXIF damaged: unreadable tags not copied"]


# ----------------------------------------------------------------------------- EXIF into and out of TIFF


@pytest.mark.parametrize("bits", [8, 16])
def test_camera_exif_is_written_into_tiff_with_its_sub_directories(tmp_path, bits):
    image = read_image(_jpeg(tmp_path / "cam.jpg", _camera_exif(orientation=6).tobytes()))
    assert image.size == (6, 8)  # orientation applied
    data = encode_image(image.color, None, "TIFF", bit_depth=bits, exif=image.exif, dpi=(300, 300))
    (tmp_path / "out.tif").write_bytes(data)
    with Image.open(tmp_path / "out.tif") as im:
        im.load()
        exif = im.getexif()
        assert im.size == (6, 8) and im.info["dpi"] == (300, 300)
        assert exif[0x010F] == "SRXCam" and 0x0112 not in exif
        assert exif.get_ifd(0x8769) == {0x9003: "2024:05:01 12:00:00", 0x829A: IFDRational(1, 250)}
        assert exif.get_ifd(0x8825) == {1: "N"}
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:  # a second reader agrees
        assert tif.pages.first.tags["Make"].value == "SRXCam"
        assert tif.pages.first.tags["ExifTag"].value["DateTimeOriginal"] == "2024:05:01 12:00:00"
        np.testing.assert_array_equal(tif.pages.first.asarray().shape, (8, 6, 3))


def test_exif_of_8_bit_tiff_inputs_is_kept_without_the_tiff_layout_tags(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "in.tif", exif=_camera_exif().tobytes())
    image = _read_quietly(tmp_path / "in.tif")
    exif = _exif_of(image.exif)
    assert exif[0x010F] == "SRXCam" and exif.get_ifd(0x8769)[0x9003] == "2024:05:01 12:00:00"
    assert not {256, 257, 258, 259, 273, 279} & set(exif)  # width, strips... describe the input file only
    assert image.notes == []


def test_16_bit_tiff_exif_is_copied_and_no_note_without_exif(tmp_path):
    c16 = (RNG.random((6, 8, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", c16, photometric="rgb", metadata=None, software=False)
    plain = _read_quietly(tmp_path / "plain.tif")
    assert plain.bit_depth == 16 and plain.notes == [] and plain.exif is None
    tifffile.imwrite(tmp_path / "tagged.tif", c16, photometric="rgb")  # tifffile's shape note and name
    tagged = _read_quietly(tmp_path / "tagged.tif")
    assert tagged.notes == [] and dict(_exif_of(tagged.exif)) == {0x0131: "tifffile.py"}


def test_exif_too_long_for_a_jpeg_is_left_out_with_a_note(tmp_path):
    exif = _camera_exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription: fine in PNG, over a JPEG segment
    Image.fromarray(_rgb()).save(tmp_path / "big.png", exif=exif.tobytes())
    image = read_image(tmp_path / "big.png")
    notes: list[str] = []
    data = encode_image(image.color, None, "JPEG", exif=image.exif, notes=notes)
    assert Image.open(io.BytesIO(data)).getexif().get(0x010F) is None
    assert notes == [f"EXIF not copied: {len(image.exif):,} bytes, a JPEG holds at most 65,533"]


# ----------------------------------------------------------------------------- 16-bit gray + alpha


def test_16_bit_gray_alpha_png_round_trips_through_tiff(tmp_path):
    la16 = (RNG.random((6, 8, 2)) * 65535).astype(np.uint16)
    with open(tmp_path / "la16.png", "wb") as f:
        png.Writer(8, 6, greyscale=True, alpha=True, bitdepth=16).write(f, la16.reshape(6, 16))
    image = read_image(tmp_path / "la16.png")
    assert image.grayscale and image.bit_depth == 16 and image.alpha is not None
    data = encode_image(image.color, image.alpha, "TIFF", grayscale=True, bit_depth=16)
    (tmp_path / "out.tif").write_bytes(data)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and page.samplesperpixel == 2
        assert page.extrasamples == (tifffile.EXTRASAMPLE.UNASSALPHA,)
        np.testing.assert_allclose(page.asarray().astype(int), la16.astype(int), atol=1)
    back = read_image(tmp_path / "out.tif")  # and srx reads it back (Pillow cannot)
    assert back.grayscale and back.bit_depth == 16 and back.alpha is not None
    np.testing.assert_allclose(back.alpha[0, 0].numpy() * 65535, la16[:, :, 1], atol=1)


# ----------------------------------------------------------------------------- multi-frame files


def test_animated_gif_and_apng_use_the_first_frame_with_a_note(tmp_path):
    frames = [Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)) for i in range(1, 4)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    for name in ("a.gif", "a.png"):
        image = _read_quietly(tmp_path / name)
        assert image.notes == ["first of 3 frames used (animated or multi-page image)"]
        assert abs(float(image.color.mean()) - 40 / 255) < 0.02
    # A phone JPEG holding a second picture (MPO: a preview or depth map) is one photo, not an animation.
    frames[0].save(tmp_path / "phone.jpg", "MPO", save_all=True, append_images=frames[1:2])
    assert _read_quietly(tmp_path / "phone.jpg").notes == []


def test_multi_page_16_bit_tiff_reads_the_first_page(tmp_path):
    pages = (RNG.random((3, 6, 8, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="rgb")
    image = _read_quietly(tmp_path / "pages.tif")
    assert image.bit_depth == 16 and image.size == (8, 6)
    assert image.notes == ["first of 3 frames used (animated or multi-page image)"]
    np.testing.assert_allclose(image.color[0].permute(1, 2, 0).numpy() * 65535, pages[0], atol=0.5)


# ----------------------------------------------------------------------------- what is not an image here


def test_heic_and_avif_name_the_format_and_the_plugin(tmp_path):
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
    with pytest.raises(ImageReadError) as e:
        read_image(heic)
    assert str(e.value) == f"{heic}: HEIC image: Pillow cannot read it here (install pillow-heif)"


def test_damaged_png_header_says_damaged_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb()).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[20] ^= 0xFF  # inside IHDR: its checksum no longer matches
    (tmp_path / "a.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"a\.png: damaged PNG file"):
        read_image(tmp_path / "a.png")


@pytest.mark.parametrize("kind", ["fifo", "devnull", "folder"])
def test_paths_that_are_not_regular_files_say_so(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.png"
        os.mkfifo(path)  # opening it would block: it must not be opened
        expected = "not a regular file (a named pipe (FIFO))"
    elif kind == "devnull":
        path, expected = Path(os.devnull), "not a regular file (a device)"
    else:
        path = tmp_path / "photos.png"
        path.mkdir()
        expected = "not a regular file (a folder)"
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(e.value) == f"{path}: {expected}"


# ----------------------------------------------------------------------------- raw library output


def test_corrupt_compressed_tiff_prints_nothing_itself(tmp_path, capfd):
    Image.fromarray(_rgb(32, 32)).save(tmp_path / "a.tif", compression="tiff_deflate")
    data = bytearray((tmp_path / "a.tif").read_bytes())
    data[20:60] = bytes(40)  # the compressed strip
    (tmp_path / "a.tif").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"a\.tif: corrupt or truncated image"):
        read_image(tmp_path / "a.tif")
    assert capfd.readouterr().err == ""  # libtiff's own complaint does not reach the terminal


def test_orientation_applies_to_every_reader(tmp_path):
    exif = _camera_exif(orientation=6).tobytes()
    Image.fromarray(_rgb()).save(tmp_path / "8.tif", exif=exif)
    Image.fromarray(_rgb()[:, :, 0]).save(tmp_path / "gray.png", exif=exif)
    c16 = (RNG.random((6, 8, 3)) * 65535).astype(np.uint16)
    with open(tmp_path / "c16.png", "wb") as f:
        png.Writer(8, 6, greyscale=False, bitdepth=16).write(f, c16.reshape(6, 24))
    raw = (tmp_path / "c16.png").read_bytes()
    body = exif[6:]
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body
    chunk += struct.pack(">I", __import__("zlib").crc32(b"eXIf" + body))
    (tmp_path / "c16.png").write_bytes(raw[:33] + chunk + raw[33:])  # after IHDR
    for name in ("8.tif", "gray.png", "c16.png"):
        image = _read_quietly(tmp_path / name)
        assert image.size == (6, 8), name
        assert 0x0112 not in _exif_of(image.exif) and _exif_of(image.exif)[0x010F] == "SRXCam", name
    rotated = read_image(tmp_path / "c16.png").color[0].permute(1, 2, 0).numpy() * 65535
    np.testing.assert_allclose(rotated, np.rot90(c16, k=-1), atol=0.5)


def test_encoded_tiff_has_no_writer_metadata_of_its_own():
    data = encode_image(torch.rand(1, 3, 4, 5), None, "TIFF", bit_depth=16)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        assert "ImageDescription" not in tif.pages.first.tags and "Software" not in tif.pages.first.tags


def test_tiff_with_absurd_samples_per_pixel_is_refused_without_library_log_lines(tmp_path, caplog):
    Image.fromarray(_rgb()).save(tmp_path / "a.tif")
    data = bytearray((tmp_path / "a.tif").read_bytes())
    (first,) = struct.unpack("<I", data[4:8])
    for i in range(struct.unpack("<H", data[first : first + 2])[0]):
        entry = first + 2 + 12 * i
        if struct.unpack("<H", data[entry : entry + 2])[0] == 277:  # SamplesPerPixel
            data[entry + 8 : entry + 10] = struct.pack("<H", 31744)
    (tmp_path / "a.tif").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"a\.tif: "):
        read_image(tmp_path / "a.tif")
    assert [r.getMessage() for r in caplog.records] == []  # Pillow's log line would reach stderr


def test_16_bit_cmyk_tiff_is_refused_not_read_as_rgba(tmp_path):
    tifffile.imwrite(tmp_path / "cmyk.tif", (RNG.random((6, 8, 4)) * 65535).astype(np.uint16), photometric="separated")
    with pytest.raises(ImageReadError, match=r"cmyk\.tif: unsupported TIFF layout .*photometric 5"):
        read_image(tmp_path / "cmyk.tif")


def test_upscale_to_tiff_keeps_camera_exif_and_16_bit_gray_alpha(tmp_path):
    from typer.testing import CliRunner

    from sr_cli.cli import app

    _jpeg(tmp_path / "cam.jpg", _camera_exif().tobytes())
    la16 = (RNG.random((6, 8, 2)) * 65535).astype(np.uint16)
    with open(tmp_path / "la16.png", "wb") as f:
        png.Writer(8, 6, greyscale=True, alpha=True, bitdepth=16).write(f, la16.reshape(6, 16))
    r = CliRunner().invoke(app, ["upscale", str(tmp_path / "cam.jpg"), str(tmp_path / "la16.png"), "--format", "tiff",
                                 "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "out" / "cam_srx.tif") as im:
        assert im.size == (32, 24) and im.getexif().get_ifd(0x8769)[0x9003] == "2024:05:01 12:00:00"
    with tifffile.TiffFile(tmp_path / "out" / "la16_srx.tif") as tif:
        page = tif.pages.first
        assert (page.shape, page.dtype, page.photometric) == ((24, 32, 2), np.uint16, tifffile.PHOTOMETRIC.MINISBLACK)


def test_upscale_to_jpeg_notes_exif_too_long_for_it(tmp_path):
    from typer.testing import CliRunner

    from sr_cli.cli import app

    exif = _camera_exif()
    exif[0x010E] = "x" * 70_000
    Image.fromarray(_rgb()).save(tmp_path / "big.png", exif=exif.tobytes())
    r = CliRunner().invoke(app, ["upscale", str(tmp_path / "big.png"), "-o", str(tmp_path / "out.jpg")])
    assert r.exit_code == 0, r.output
    assert f"note: {tmp_path / 'big.png'}: EXIF not copied: " in r.stderr
    assert Image.open(tmp_path / "out.jpg").size == (32, 24)
