"""PNG / JPEG (and other Pillow formats) -> float32 grayscale in [0, 1], or straight to its uint8 quantization."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from chestdx.io import limits
from chestdx.io.errors import ImageReadError
from chestdx.io.sniff import PNG_SIGNATURE

# ITU-R BT.601 luma weights (the ones Pillow's convert("L") uses), applied in float.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError, KeyError)


def decode_raster(data: bytes, name: str, fmt: str, max_pixels: int | None = None, max_side: int | None = None,
                  stats: dict | None = None, convert: Callable[[Image.Image], Any] | None = None) -> Any:
    """Decode PNG/JPEG/other Pillow bytes; every failure is an :class:`ImageReadError`.

    Returns ``convert(pillow_image)``: float32 (H, W) in [0, 1] by default (:func:`to_gray01`), or its uint8
    quantization (:func:`to_gray_u8`), or both (:func:`to_gray`). Images far larger than ``max_side`` (see
    :func:`chestdx.io.limits.reduce_factor`) are decoded reduced. ``stats`` (optional dict) receives
    ``width``/``height`` (stored size), ``reduced_by`` and ``colour_spread``.
    """
    return _decode(data, name, fmt, convert or to_gray01, max_pixels, max_side, stats)


def _decode(data: bytes, name: str, fmt: str, convert: Callable[[Image.Image], Any],
            max_pixels: int | None, max_side: int | None, stats: dict | None) -> Any:
    """Checks, header, size limit, (reduced) decode, then ``convert`` of the Pillow image; errors named."""
    if fmt == "PNG":
        _check_png_structure(data, name)
    elif fmt == "JPEG":
        _check_jpeg_complete(data, name)
    im = open_header(data, name, fmt)
    try:
        reason = limits.check_pixels(im.width, im.height, max_pixels)
        if reason:
            raise ImageReadError(name, reason)
        k = limits.reduce_factor(im.width, im.height, max_side)
        stored = (im.width, im.height)
        try:
            if fmt == "JPEG" and k > 1:  # libjpeg's DCT scaling (1/2, 1/4, 1/8): never decodes full size
                im.draft(im.mode, (max(1, im.width // k), max(1, im.height // k)))
            im.load()
            out: Image.Image = im
            if fmt == "JPEG":
                try:
                    out = ImageOps.exif_transpose(out)
                except _DECODE_ERRORS:  # unreadable orientation metadata: keep the pixels as stored
                    pass
            k = limits.reduce_factor(out.width, out.height, max_side)  # what draft left to do
            small = reduce_image(out, k) if k > 1 else out
            if small is not out:  # free the full-size pixels before the conversion
                out.close()
                im.close()
            if stats is not None:
                stats.update(width=stored[0], height=stored[1], colour_spread=colour_spread(small),
                             reduced_by=round(max(stored) / max(small.size), 3))
            return convert(small)
        except ImageReadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageReadError(name, f"refused by Pillow's decompression-bomb check: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise ImageReadError(name, f"corrupt or truncated {fmt} data ({exc})") from exc
        except MemoryError as exc:
            raise ImageReadError(name, f"not enough memory to decode {im.width}x{im.height} image") from exc
    finally:
        im.close()


def colour_spread(im: Image.Image, side: int = 256) -> float:
    """Mean over pixels of (max - min) across R, G, B in [0, 1] on a <= ``side`` px thumbnail; 0 for grayscale
    modes (the same quantity as ``chestdx.inference.ood.colour_spread``, without decoding the bytes again)."""
    if im.mode in ("L", "LA", "1", "I", "F") or im.mode.startswith("I;16"):
        return 0.0
    rgb = im.convert("RGB")
    rgb.thumbnail((side, side))
    a = np.asarray(rgb, dtype=np.int16)
    return float((a.max(axis=2) - a.min(axis=2)).mean() / 255.0)


_REDUCIBLE = frozenset({"L", "LA", "I", "F", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})


def reduce_image(im: Image.Image, k: int) -> Image.Image:
    """Box-average ``im`` by the integer factor ``k`` (Pillow's ``reduce``) in a mode where averaging is
    meaningful: alpha dropped (band by band), palette and 1-bit images expanded, 16-bit grayscale via mode "I"."""
    if im.mode in ("RGBA", "LA"):
        # alpha is dropped anyway (to_gray01); Pillow would premultiply it first in a full-size copy (+4 B/px)
        bands = [im.getchannel(b).reduce(int(k)) for b in im.mode[:-1]]
        return bands[0] if len(bands) == 1 else Image.merge("RGB", bands)
    if im.mode not in _REDUCIBLE:
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode.startswith("I;16"):
            im = im.convert("I")
        else:  # P, PA and anything exotic: RGB, as to_gray01 would (alpha dropped)
            im = im.convert("RGB")
    return im.reduce(int(k))


def open_header(data: bytes, name: str, fmt: str) -> ImageFile.ImageFile:
    """Open lazily (header only) with the format's own Pillow class, bypassing ``Image.open``'s global
    bomb check (no warnings filters touched, thread-safe): our own limit runs right after."""
    factory = _factory(fmt)
    if factory is None:
        raise ImageReadError(name, f"this Pillow build has no {fmt} decoder")
    try:
        return factory(io.BytesIO(data), name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(name, f"refused by Pillow's decompression-bomb check: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise ImageReadError(name, f"invalid {fmt} header ({exc})") from exc


def _factory(fmt: str):
    if fmt not in Image.OPEN:
        Image.init()
    entry = Image.OPEN.get(fmt)
    return entry[0] if entry else None


def to_gray01(im: Image.Image) -> np.ndarray:
    """Pillow image of any common mode -> float32 (H, W) in [0, 1]; alpha is dropped, colour -> luma."""
    mode = im.mode
    if mode == "L":
        out = np.asarray(im, dtype=np.float32) / 255.0
    elif mode == "1":
        out = np.asarray(im, dtype=np.float32)
    elif mode == "LA":
        out = np.asarray(im.getchannel("L"), dtype=np.float32) / 255.0
    elif mode.startswith("I;16"):
        out = np.asarray(im).astype(np.float32) / 65535.0
    elif mode == "I":
        arr = np.asarray(im).astype(np.float64)
        # 16-bit PNGs may surface as mode "I": values then lie in 0..65535.
        out = arr / 65535.0 if arr.size and arr.min() >= 0 and arr.max() <= 65535 else _minmax(arr)
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        out = arr if arr.size and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1 else _minmax(arr)
    else:  # RGB, RGBA, P, PA, CMYK, YCbCr, ... -> RGB (alpha dropped, not composited) -> luma
        rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))  # uint8; summed channel by channel
        out = rgb[..., 0] * LUMA[0]
        out += rgb[..., 1] * LUMA[1]
        out += rgb[..., 2] * LUMA[2]
        out /= np.float32(255.0)
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def resize_square_u8(img: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """The resize of ``chestdx.data.transforms.to_uint8_square``: a uint8 (H, W) array or mode "L" Pillow image ->
    uint8 (size, size), Pillow bilinear with antialiasing (``reducing_gap=None``); non-square images squashed."""
    if isinstance(img, Image.Image):
        if img.mode != "L":
            raise ValueError(f"expected a mode L (8-bit grayscale) image, got mode {img.mode}")
        if img.size == (size, size):
            return np.asarray(img)
    else:
        if img.ndim != 2 or img.dtype != np.uint8:
            raise ValueError(f"expected a 2-D uint8 grayscale image, got shape {img.shape} dtype {img.dtype}")
        if img.shape == (size, size):
            return img
        img = Image.fromarray(img)
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))


def to_square_u8(size: int) -> Callable[[Image.Image], np.ndarray]:
    """Converter for :func:`decode_raster`: ``resize_square_u8(to_gray_u8(im), size)``, an 8-bit grayscale image
    resized as decoded (no copy into numpy and back first)."""
    def convert(im: Image.Image) -> np.ndarray:
        return resize_square_u8(im if im.mode == "L" else to_gray_u8(im), size)

    return convert


class GrayImage:
    """One decoded grayscale image in both forms, each made on first use from the one decoded:
    ``img01`` float32 (H, W) in [0, 1] and ``u8`` = ``quantize_u8(img01)``. An 8-bit grayscale source is held as
    uint8 (``u8 / 255`` is then exactly the float image), anything else as float (``u8`` quantizes it)."""

    __slots__ = ("_img01", "_u8")

    def __init__(self, *, img01: np.ndarray | None = None, u8: np.ndarray | None = None):
        if (img01 is None) == (u8 is None):
            raise ValueError("GrayImage needs exactly one of img01 / u8")
        self._img01, self._u8 = img01, u8

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._u8 if self._u8 is not None else self._img01).shape

    @property
    def img01(self) -> np.ndarray:
        if self._img01 is None:
            img = self._u8.astype(np.float32)
            img /= np.float32(255.0)
            self._img01 = img
        return self._img01

    @property
    def u8(self) -> np.ndarray:
        if self._u8 is None:
            self._u8 = quantize_u8(self._img01)
        return self._u8


_EIGHT_BIT_GRAY = frozenset({"L", "LA", "1"})


def to_gray(im: Image.Image) -> GrayImage:
    """Pillow image -> :class:`GrayImage`, held as uint8 for 8-bit grayscale, else as :func:`to_gray01`'s float."""
    return GrayImage(u8=to_gray_u8(im)) if im.mode in _EIGHT_BIT_GRAY else GrayImage(img01=to_gray01(im))


def quantize_u8(img01: np.ndarray) -> np.ndarray:
    """[0, 1] float image -> uint8: ``rint(x * 255)`` in float32, clipped to 0..255 (the one quantization)."""
    return np.clip(np.rint(np.asarray(img01, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def to_gray_u8(im: Image.Image) -> np.ndarray:
    """Pillow image -> uint8 (H, W), pixel for pixel ``quantize_u8(to_gray01(im))`` without the full-size float
    copies: 8-bit grayscale as stored (x / 255 * 255 rounds back to x), 16-bit through a 65536-entry table built
    with the float path's own operations, colour through the float path's luma fused in place; anything else
    (mode "F", out-of-range "I") through the float path itself."""
    mode = im.mode
    if mode == "L":
        return np.asarray(im)
    if mode == "LA":
        return np.asarray(im.getchannel("L"))
    if mode == "1":
        bits = np.asarray(im).astype(np.uint8)  # Pillow's bool bytes are 0/255: astype makes them 0/1
        bits *= np.uint8(255)
        return bits
    if mode.startswith("I;16"):
        arr = np.asarray(im)
        if arr.dtype.kind == "u" and arr.itemsize == 2:  # unsigned 16-bit (any byte order): a table look-up
            return _lut16(False)[arr]
    elif mode == "I":
        arr = np.asarray(im)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return _lut16(True)[arr]
    elif mode != "F":  # RGB, RGBA, P, PA, CMYK, YCbCr, ...: to_gray01's luma, then quantize_u8, in place
        rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
        out = rgb[..., 0] * LUMA[0]
        out += rgb[..., 1] * LUMA[1]
        out += rgb[..., 2] * LUMA[2]
        out /= np.float32(255.0)
        np.clip(out, 0.0, 1.0, out=out)
        out *= np.float32(255.0)
        return np.rint(out, out=out).astype(np.uint8)
    return quantize_u8(to_gray01(im))


@lru_cache(maxsize=2)
def _lut16(mode_i: bool) -> np.ndarray:
    """uint8 value of every 16-bit level as the float path computes it (mode "I" divides in float64)."""
    levels = np.arange(65536)
    if mode_i:
        img01 = np.clip(levels.astype(np.float64) / 65535.0, 0.0, 1.0).astype(np.float32)
    else:
        img01 = np.clip(levels.astype(np.float32) / 65535.0, 0.0, 1.0)
    lut = quantize_u8(img01)
    lut.flags.writeable = False
    return lut


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _check_png_structure(data: bytes, name: str) -> None:
    """Walk the PNG chunks: refuse truncation and CRC errors whatever ``LOAD_TRUNCATED_IMAGES`` says."""
    pos, size = len(PNG_SIGNATURE), len(data)
    view = memoryview(data)  # CRC over slices of the buffer, no copies
    seen_idat = False
    while True:
        if pos + 8 > size:
            raise ImageReadError(name, f"truncated PNG: file ends at byte {size} before the IEND chunk")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        label = ctype.decode("latin-1")
        if end > size:
            raise ImageReadError(
                name, f"truncated PNG: {label} chunk at byte {pos} needs {length} bytes, file ends at byte {size}"
            )
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise ImageReadError(name, f"corrupt PNG: CRC mismatch in {label} chunk at byte {pos}")
        seen_idat |= ctype == b"IDAT"
        if ctype == b"IEND":
            break
        pos = end
    if not seen_idat:
        raise ImageReadError(name, "corrupt PNG: no IDAT (pixel data) chunk")


def _check_jpeg_complete(data: bytes, name: str) -> None:
    """Refuse a JPEG with no end-of-image marker after its first scan (i.e. truncated)."""
    sos = data.find(b"\xff\xda")
    if sos < 0:
        raise ImageReadError(name, "corrupt JPEG: no start-of-scan marker (no pixel data)")
    if data.rfind(b"\xff\xd9") < sos:
        raise ImageReadError(name, f"truncated JPEG: no end-of-image marker ({len(data)} bytes)")
