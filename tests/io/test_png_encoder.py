"""srx's PNG encoder: decoded by Pillow/pypng to the same pixels, metadata chunks, the Paeth filter against
the PNG specification's per-byte definition, pieces deflated in parallel forming one valid stream."""

import io
import struct
import zlib

import numpy as np
import png
import pytest
from PIL import Image

from sr_cli.io import png_encoder
from sr_cli.io.png_encoder import encode_png, paeth_filter


def photo_like(h: int, w: int, c: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    maxval = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(yy / 7.0)[..., None] + np.cos(xx / 11.0)[..., None] + np.arange(c) * 0.3) * 0.25 + 0.5
    noisy = base + rng.normal(0, 0.02, (h, w, c))
    return np.clip(noisy * maxval, 0, maxval).round().astype(dtype)


def decode16(data: bytes) -> np.ndarray:
    w, h, rows, info = png.Reader(bytes=data).read()
    planes = info["planes"]
    return np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(h, w, planes)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0] == zlib.crc32(kind + body)
        out.append((kind, body))
        pos += 12 + n
    return out


@pytest.mark.parametrize("channels,mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (37, 53), (300, 701)])
def test_8bit_round_trip_through_pillow(channels, mode, shape):
    arr = photo_like(*shape, channels)
    im = Image.open(io.BytesIO(encode_png(arr)))
    assert im.mode == mode and im.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(im).reshape(arr.shape), arr)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_round_trip_through_pypng(channels):
    arr = photo_like(41, 67, channels, dtype=np.uint16)
    assert np.array_equal(decode16(encode_png(arr)), arr)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_parallel_pieces_form_one_valid_zlib_stream(threads, monkeypatch):
    monkeypatch.setattr(png_encoder, "MIN_PIECE_BYTES", 1000)  # several pieces even for a small image
    monkeypatch.setattr(png_encoder, "BLOCK_BYTES", 500)  # several filter blocks per strip
    arr = photo_like(120, 90, 3, seed=threads)
    data = encode_png(arr, threads=threads)
    idat = [body for kind, body in chunks(data) if kind == b"IDAT"]
    assert len(idat) == min(threads, arr.size // 1000)
    raw = zlib.decompress(b"".join(idat))  # checks the Adler-32 of the whole stream too
    rows = np.frombuffer(raw, np.uint8).reshape(120, 1 + 90 * 3)
    assert (rows[:, 0] == 4).all()  # every row Paeth-filtered
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)


def test_stdlib_zlib_fallback_writes_the_same_pixels(monkeypatch):
    monkeypatch.setattr(png_encoder, "deflate_lib", zlib)
    arr = photo_like(64, 80, 3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(arr, threads=2)))), arr)


def test_paeth_filter_matches_the_specification():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, (6, 5 * 3), dtype=np.uint8)
    rows[2] = rows[1]  # repeated rows and flat runs exercise the ties
    rows[3, :6] = 7
    out = np.empty((6, 1 + 15), np.uint8)
    paeth_filter(rows, None, 3, out)

    def predictor(a: int, b: int, c: int) -> int:  # PNG specification, 9.4
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        if pa <= pb and pa <= pc:
            return a
        return b if pb <= pc else c

    for y in range(6):
        assert out[y, 0] == 4
        for x in range(15):
            a = int(rows[y, x - 3]) if x >= 3 else 0
            b = int(rows[y - 1, x]) if y else 0
            c = int(rows[y - 1, x - 3]) if y and x >= 3 else 0
            assert out[y, 1 + x] == (int(rows[y, x]) - predictor(a, b, c)) % 256
    # A block that starts mid-image takes the raw row above it.
    tail = np.empty((3, 16), np.uint8)
    paeth_filter(rows[3:], rows[2], 3, tail)
    assert np.array_equal(tail, out[3:])


def test_metadata_chunks_read_back_by_pillow():
    exif = Image.Exif()
    exif[0x010F] = "srx test camera"
    icc = b"\0\0\0\x10fake-icc-profile" * 8
    data = encode_png(photo_like(16, 24, 3), icc_profile=icc, exif=exif.tobytes(), dpi=(300, 150))
    kinds = [k for k, _ in chunks(data)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert kinds.index(b"iCCP") < kinds.index(b"IDAT") and kinds.index(b"eXIf") < kinds.index(b"IDAT")
    im = Image.open(io.BytesIO(data))
    assert im.info["icc_profile"] == icc
    assert im.getexif()[0x010F] == "srx test camera"
    assert [round(d) for d in im.info["dpi"]] == [300, 150]


def test_size_close_to_pillow_and_smaller_than_its_default_level_1():
    arr = photo_like(256, 256, 3)
    ours = len(encode_png(arr))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    assert ours <= len(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
    assert ours <= 1.02 * len(buf.getvalue())


def test_rejects_what_png_cannot_hold():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_adler32_combine_equals_adler32_of_the_concatenation():
    from sr_cli.io.png_encoder import adler32_combine

    rng = np.random.default_rng(5)
    for n_a, n_b in [(0, 10), (1, 1), (1000, 7), (70000, 123457)]:
        a, b = rng.bytes(n_a), rng.bytes(n_b)
        assert adler32_combine(zlib.adler32(a), zlib.adler32(b), n_b) == zlib.adler32(a + b)
