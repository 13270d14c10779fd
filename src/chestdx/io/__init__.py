"""Image decoding: PNG/JPEG (8/16-bit, RGB(A), palette, CMYK) and DICOM -> float32 grayscale in [0, 1].

Every failure raises :class:`ImageReadError` naming the file and the problem. Limits: set
``chestdx.io.limits.MAX_PIXELS`` / ``MAX_FILE_BYTES`` (read at call time) or pass ``max_pixels=``.
"""

from chestdx.io import limits
from chestdx.io.errors import ImageReadError
from chestdx.io.reader import ImageInfo, decode_image_bytes, probe_image, read_image
from chestdx.io.sniff import sniff_format

__all__ = [
    "ImageInfo",
    "ImageReadError",
    "decode_image_bytes",
    "limits",
    "probe_image",
    "read_image",
    "sniff_format",
]
