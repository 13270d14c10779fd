"""Decoding budget for untrusted images (module constants, read at call time).

- ``MAX_PIXELS`` (default 36 MP, e.g. 6000x6000; env ``CHESTDX_MAX_PIXELS``): larger images are refused from
  the header, before any pixel is decoded. The largest chest radiographs (43 cm detectors at 100 um) are about
  18 MP; 100 MP PNGs of a few hundred KB are decompression bombs (~2.3 GB to decode at full size).
- ``DECODE_MAX_SIDE`` (default 2048 px; env ``CHESTDX_DECODE_MAX_SIDE``; 0 = always full size): an image whose
  longest side is at least twice this is decoded reduced by an integer factor ``k = side // DECODE_MAX_SIDE``
  (JPEG: DCT scaling while decoding; PNG and other rasters: box average right after decoding; DICOM: block mean
  of the stored values), so the result's longest side stays >= ``DECODE_MAX_SIDE``. Every consumer resizes to
  <= 1024 px (model input, cache, preview), so nothing they see changes beyond resampling noise.
- ``MAX_FILE_BYTES`` (1 GiB; env ``CHESTDX_MAX_FILE_BYTES``): largest file :func:`chestdx.io.read_image` reads.

Peak memory of one decode is then bounded by the limit: about 4-8 bytes per pixel at ``MAX_PIXELS`` (the
decoder's own full-size buffer, e.g. 144 MB for a 36 MP RGBA PNG) plus small reduced float copies.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        log.warning("ignoring %s=%r: not a number; using %d", name, raw, default)
        return default
    return value if value >= 0 else default


#: Largest image accepted, in pixels (width x height), checked from the header before decoding.
MAX_PIXELS: int = _env_int("CHESTDX_MAX_PIXELS", 36_000_000)

#: Images whose longest side is >= 2x this are decoded reduced (integer factor); 0 disables reduction.
DECODE_MAX_SIDE: int = _env_int("CHESTDX_DECODE_MAX_SIDE", 2048)

#: Largest file accepted by :func:`chestdx.io.read_image`, in bytes.
MAX_FILE_BYTES: int = _env_int("CHESTDX_MAX_FILE_BYTES", 1 << 30)


def check_pixels(width: int, height: int, max_pixels: int | None = None) -> str | None:
    """Return a reason string when ``width x height`` exceeds the limit, else ``None``."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    pixels = int(width) * int(height)
    if pixels > limit:
        return (
            f"image is {width}x{height} = {_mp(pixels)} MP, above the {_mp(limit)} MP limit "
            "(possible decompression bomb; raise it with CHESTDX_MAX_PIXELS or max_pixels=)"
        )
    return None


def reduce_factor(width: int, height: int, max_side: int | None = None) -> int:
    """Integer factor to decode ``width x height`` at: 1 (full size) unless the longest side is >= 2x
    ``max_side`` (default :data:`DECODE_MAX_SIDE`; 0 = never reduce); the reduced longest side stays >= it."""
    target = DECODE_MAX_SIDE if max_side is None else int(max_side)
    if target <= 0:
        return 1
    return max(1, max(int(width), int(height)) // target)


def _mp(pixels: int) -> str:
    value = pixels / 1e6
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"
