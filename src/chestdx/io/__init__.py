"""Image decoding: PNG/JPEG (8/16-bit, RGB(A), palette, CMYK) and DICOM -> float32 grayscale in [0, 1]
(``read_image``), or its uint8 quantization without the full-size float round trip (``read_image_u8``), or both
from one decode (``decode_image_gray``).

Every failure raises :class:`ImageReadError` naming the file and the problem. Decoding budget
(:mod:`chestdx.io.limits`): images over ``MAX_PIXELS`` (36 MP; env ``CHESTDX_MAX_PIXELS`` or ``max_pixels=``) are
refused from the header; images with a side >= 2x ``DECODE_MAX_SIDE`` (2048; env ``CHESTDX_DECODE_MAX_SIDE`` or
``max_side=``) are decoded reduced by an integer factor. Module constants are read at call time.
"""

from chestdx.io import limits
from chestdx.io.errors import ImageReadError
from chestdx.io.raster import GrayImage, quantize_u8
from chestdx.io.reader import (
    ImageInfo,
    decode_image_bytes,
    decode_image_bytes_u8,
    decode_image_gray,
    probe_image,
    read_image,
    read_image_u8,
)
from chestdx.io.sniff import sniff_format

__all__ = [
    "GrayImage",
    "ImageInfo",
    "ImageReadError",
    "decode_image_bytes",
    "decode_image_bytes_u8",
    "decode_image_gray",
    "limits",
    "probe_image",
    "quantize_u8",
    "read_image",
    "read_image_u8",
    "sniff_format",
]
