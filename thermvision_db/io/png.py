"""Lossless PNG frames from raw chunks: the 'up' filter in NumPy, then Huffman-only deflate.

The settings are those the OpenCV writer used (zlib level 1, Huffman coding only, 'up' filter on every row, the
default memory level, IDAT chunks of 8 KiB as libpng writes them), so the pixels are the same and, with OpenCV's
libpng build (>= 4.11, which has the filter option), the bytes too. The deflate is zlib-ng's when the `zlib-ng`
package is installed (about half the CPU time of the standard library's zlib on 512 px thermal faces), else the
standard library's; Huffman-only coding makes both write the same stream.

`write_png` writes to a temporary name in the frame's folder and renames it into place: a full disk, a kill or a
read-only folder never leaves a half-written frame under the frame's name. `in_place=True` is for a folder that
is itself temporary and renamed whole when complete (the corpus's identity folders): the frame is written under
its own name, and a failure still removes what was written of it.
"""

from __future__ import annotations

import errno as errno_codes
import os
import struct
import zlib as _stdlib_zlib
from pathlib import Path

import numpy as np

from thermvision_db.errors import InputError

try:  # a core dependency (the zlib API, SIMD deflate and CRC-32); without it the standard library's zlib
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # pragma: no cover - exercised by forcing the fallback in the tests
    _zlib_ng = None

DEFLATE_LEVEL = 1  # the level the OpenCV writer was given; with Huffman-only coding it changes nothing
MEM_LEVEL = 8  # zlib's default (deflate blocks of 16 Ki symbols), as libpng asks for
IDAT_SIZE = 8192  # libpng's IDAT chunk size
SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_UP = 2
IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def deflate_backend(name: str | None = None):
    """The zlib module used: 'zlib-ng' when installed (or asked for), 'zlib' for the standard library."""
    if name is None:
        name = "zlib-ng" if _zlib_ng is not None else "zlib"
    if name == "zlib-ng":
        if _zlib_ng is None:
            raise InputError("deflate backend 'zlib-ng' asked for, but the zlib-ng package is not installed")
        return _zlib_ng
    if name == "zlib":
        return _stdlib_zlib
    raise InputError(f"unknown deflate backend {name!r}; choose zlib-ng or zlib")


def default_backend() -> str:
    return "zlib-ng" if _zlib_ng is not None else "zlib"


def check_frame(frame) -> np.ndarray:
    """The one frame check of the writers: (H, W) or (H, W, 3) uint8, at least 1x1."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)) \
            or 0 in frame.shape:
        raise InputError(f"frames must be (H, W, 3) or (H, W) uint8, got {frame.shape} {frame.dtype}")
    return frame


def _chunk(kind: bytes, data, crc32) -> list:
    return [struct.pack(">I", len(data)), kind, data, struct.pack(">I", crc32(data, crc32(kind)))]


def encode_png(frame: np.ndarray, backend: str | None = None) -> bytes:
    """The PNG file of `frame`: (H, W) gray (colour type 0) or (H, W, 3) RGB (colour type 2), 8 bits, any strides
    (a channel view of a 3-channel frame is filtered without a copy first)."""
    frame = check_frame(frame)
    zlib = deflate_backend(backend)
    height, width = frame.shape[:2]
    channels = 1 if frame.ndim == 2 else 3
    rows = frame if channels == 1 else np.ascontiguousarray(frame).reshape(height, width * 3)
    filtered = np.empty((height, width * channels + 1), np.uint8)  # one filter byte, then the row's differences
    filtered[:, 0] = FILTER_UP if height > 1 else 0  # libpng writes a one-row image with filter 'none' (the same)
    filtered[0, 1:] = rows[0]  # 'up' on the first row: the row above is taken as zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's does
    deflate = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, 15, MEM_LEVEL, zlib.Z_HUFFMAN_ONLY)
    stream = bytearray(deflate.compress(filtered) + deflate.flush())
    stream[:2] = zlib_header(filtered.size)
    stream = memoryview(stream)
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    parts = [SIGNATURE, *_chunk(b"IHDR", header, zlib.crc32)]
    for start in range(0, len(stream), IDAT_SIZE):
        parts += _chunk(b"IDAT", stream[start:start + IDAT_SIZE], zlib.crc32)
    parts.append(IEND)
    return b"".join(parts)


def stored_png(pixels: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 pixels as a PNG with no filtering and stored (level 0) deflate blocks.

    For a frame that lives only for one row: a `frames` row whose PNG is missing is decoded from the MP4 and must
    reach `datasets.Image` as image bytes. Compressing them only for `datasets` to decompress them a moment later
    cost 37 + 6 ms a 512x512 frame with PIL (level 1) against about 1 + 1.6 ms here; every reader decodes the
    same pixels, and the file is about the size of the raw pixels."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise ValueError(f"stored_png takes (H, W) or (H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"stored_png takes a non-empty image, got {pixels.shape}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None on every scanline
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    crc32 = _stdlib_zlib.crc32
    return b"".join([SIGNATURE, *_chunk(b"IHDR", header, crc32),
                     *_chunk(b"IDAT", _stdlib_zlib.compress(rows.tobytes(), 0), crc32), IEND])


def zlib_header(data_size: int) -> bytes:
    """The stream's 2-byte header as libpng (1.6.59) writes it: the smallest window holding a small image, level
    flags 0. Huffman-only deflate writes no back-references, so any window size is a true statement."""
    window_bits, half_window = 15, 1 << 14
    if data_size <= 16384:
        while data_size <= half_window and window_bits > 8:
            half_window >>= 1
            window_bits -= 1
    cmf = (window_bits - 8) << 4 | 8
    return bytes([cmf, 31 - (cmf << 8) % 31])


def temporary_name(path: Path) -> Path:
    """Where a frame is written before its rename: a hidden name in the same folder, never read as a frame."""
    return path.with_name(f".{path.name}.partial")


def write_png(path: str | os.PathLike, frame: np.ndarray, backend: str | None = None, in_place: bool = False) -> Path:
    """Encode `frame` and write it to a temporary name beside `path`, then rename it to `path` (`in_place`: straight
    to `path`, for a folder that is renamed whole when complete).

    On an OS error (a full disk, a read-only or missing folder) the file written is removed and an `OSError`
    with the same errno names the folder and the frame."""
    return write_file(path, encode_png(frame, backend), in_place)  # a bad frame fails in the encoder, before any file


def write_file(path: str | os.PathLike, data: bytes, in_place: bool = False) -> Path:
    """`data` to a temporary name beside `path` (no fsync: the corpus renames the whole identity folder when it
    is complete), then renamed to `path`; `in_place`: to `path` itself, no rename. On any failure the file
    written is removed. A file or a link already at the name written is removed first, never followed."""
    path = Path(path)
    tmp = path if in_place else temporary_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:  # a killed run's leftover, or a link planted there: removed (never followed)
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o666)
    except OSError as err:
        raise _named(err, path) from err
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        if not in_place:
            os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _named(err, path) from err
        raise
    return path


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises rather than return 0 on a regular file
            raise OSError(errno_codes.EIO, "write returned no progress")
        view = view[written:]


def _named(err: OSError, path: Path) -> OSError:
    """The same kind of OSError (errno kept: a full disk stays ENOSPC), naming the folder and the frame."""
    code = err.errno if err.errno is not None else errno_codes.EIO
    reason = err.strerror or str(err)
    return type(err)(code, f"cannot write PNG frame {path.name} in folder {path.parent}: {reason}")
