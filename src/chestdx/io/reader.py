"""Entry points: read an image file or decode in-memory bytes into float32 grayscale in [0, 1], or into its uint8
quantization directly (the cache's and the model's pixels, without the full-size float round trip)."""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from chestdx.io import limits
from chestdx.io.archive_member import read_member, split_member_path
from chestdx.io.dicom import check_dataset, decode_dicom, read_dataset
from chestdx.io.errors import ImageReadError
from chestdx.io.raster import (
    GrayImage,
    decode_raster,
    open_header,
    quantize_u8,
    resize_square_u8,
    to_gray,
    to_gray01,
    to_gray_u8,
    to_square_u8,
)
from chestdx.io.sniff import describe_unknown, sniff_format

PathType = str | PathLike[str]


def read_image(path: PathType, *, max_pixels: int | None = None, max_side: int | None = None) -> np.ndarray:
    """Read PNG/JPEG/DICOM (format from content) -> float32 (H, W) in [0, 1]; raises ImageReadError."""
    return decode_image_bytes(read_bytes(path), str(path), max_pixels=max_pixels, max_side=max_side)


def read_image_u8(path: PathType, *, size: int | None = None, max_pixels: int | None = None,
                  max_side: int | None = None, stats: dict | None = None) -> np.ndarray:
    """:func:`read_image` quantized to uint8 (H, W): pixel for pixel ``quantize_u8(read_image(path))``, faster;
    with ``size``, resized as well: ``to_uint8_square(read_image(path), size)``, the cache's and the model's pixels."""
    return decode_image_bytes_u8(read_bytes(path), str(path), size=size, max_pixels=max_pixels, max_side=max_side,
                                 stats=stats)


def decode_image_bytes(data: bytes, name: str, *, max_pixels: int | None = None,
                       max_side: int | None = None, stats: dict | None = None) -> np.ndarray:
    """Decode an image held in memory (no disk access); ``name`` is used in messages and as a hint.

    Images above ``max_pixels`` (default ``limits.MAX_PIXELS``) are refused from the header; images whose longest
    side is >= 2x ``max_side`` (default ``limits.DECODE_MAX_SIDE``; 0 = full size) come back reduced by an integer
    factor, their longest side still >= ``max_side``. Always float32 (H, W) in [0, 1]. ``stats`` (optional dict)
    receives ``width``/``height`` as stored, ``reduced_by`` and ``colour_spread`` (the OOD colour check's value,
    measured on the decoded pixels: no second decode; None for DICOM).
    """
    return _decode(data, name, "float", max_pixels, max_side, stats)


def decode_image_bytes_u8(data: bytes, name: str, *, size: int | None = None, max_pixels: int | None = None,
                          max_side: int | None = None, stats: dict | None = None) -> np.ndarray:
    """:func:`decode_image_bytes` quantized to uint8 (H, W): the same pixels as
    ``quantize_u8(decode_image_bytes(...))`` with the same checks, limits and errors; PNG/JPEG skip the full-size
    float copies, DICOM keeps its float LUT path. With ``size``: ``to_uint8_square(decode_image_bytes(...), size)``
    (an 8-bit grayscale image is resized as decoded, without a copy into numpy first)."""
    return _decode(data, name, "u8", max_pixels, max_side, stats, square=None if size is None else int(size))


def decode_image_gray(data: bytes, name: str, *, max_pixels: int | None = None,
                      max_side: int | None = None, stats: dict | None = None) -> GrayImage:
    """:func:`decode_image_bytes` as a :class:`~chestdx.io.raster.GrayImage`: its ``img01`` is that float image and
    its ``u8`` that uint8 image, whichever is needed, from one decode (the Predictor needs both)."""
    return _decode(data, name, "gray", max_pixels, max_side, stats)


#: form -> (Pillow image -> result, DICOM's float image -> result)
_FORMS: dict[str, tuple[Callable[[Image.Image], Any], Callable[[np.ndarray], Any]]] = {
    "float": (to_gray01, lambda img: img),
    "u8": (to_gray_u8, quantize_u8),
    "gray": (to_gray, lambda img: GrayImage(img01=img)),
}


def _decode(data: bytes, name: str, form: str, max_pixels: int | None, max_side: int | None,
            stats: dict | None, square: int | None = None) -> Any:
    """Sniff, then DICOM or Pillow; ``form`` picks the result (see ``_FORMS``); ``square`` (form "u8" only):
    resized to ``square`` x ``square``."""
    if not isinstance(data, bytes):
        data = bytes(data)  # bytearray / memoryview from web frameworks
    fmt = _format_or_raise(data, name)
    from_pillow, from_float = _FORMS[form]
    if fmt in ("DICOM", "DICOM-RAW"):
        out = from_float(decode_dicom(data, name, force=fmt == "DICOM-RAW", max_pixels=max_pixels,
                                      max_side=max_side, stats=stats))
        return out if square is None else resize_square_u8(out, square)
    return decode_raster(data, name, fmt, max_pixels=max_pixels, max_side=max_side, stats=stats,
                         convert=from_pillow if square is None else to_square_u8(square))


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of an image file (nothing decoded)."""

    format: str
    width: int
    height: int


def probe_image(path: PathType) -> ImageInfo:
    """Format and size from the header only (cheap); raises ImageReadError like :func:`read_image`."""
    name = str(path)
    data = read_bytes(path)
    fmt = _format_or_raise(data, name)
    if fmt in ("DICOM", "DICOM-RAW"):
        ds = read_dataset(data, name, force=fmt == "DICOM-RAW")
        check_dataset(ds, name, forced=fmt == "DICOM-RAW", max_pixels=2**62)
        return ImageInfo("DICOM", int(ds.Columns), int(ds.Rows))
    im = open_header(data, name, fmt)
    try:
        return ImageInfo(fmt, im.width, im.height)
    finally:
        im.close()


def read_bytes(path: PathType) -> bytes:
    """Read a whole file with clear ImageReadError messages (missing, directory, empty, too big)."""
    name = str(path)
    member = split_member_path(name)
    if member is not None:
        try:
            return read_member(*member, max_bytes=limits.MAX_FILE_BYTES)
        except KeyError as exc:
            raise ImageReadError(name, "no such member in the archive") from exc
        except (OSError, EOFError, tarfile.TarError, ValueError) as exc:
            raise ImageReadError(name, f"cannot read the archive member: {exc}") from exc
    try:
        size = os.stat(path).st_size
        if Path(path).is_dir():
            raise ImageReadError(name, "is a directory, not an image file")
        if size > limits.MAX_FILE_BYTES:
            raise ImageReadError(name, f"file is {size} bytes, above the {limits.MAX_FILE_BYTES} byte limit")
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise ImageReadError(name, "broken symbolic link (its target does not exist)") from exc
        raise ImageReadError(name, "file not found") from exc
    except PermissionError as exc:
        raise ImageReadError(name, "permission denied") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(name, "is a directory, not an image file") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(name, "symbolic link loop (the link points back to itself), not a file") from exc
        raise ImageReadError(name, f"cannot open file ({exc.strerror or exc})") from exc
    return data


def _format_or_raise(data: bytes, name: str) -> str:
    if not data:
        raise ImageReadError(name, "file is empty (0 bytes)")
    fmt = sniff_format(data, name)
    if fmt is None:
        raise ImageReadError(name, describe_unknown(data, name))
    return fmt
