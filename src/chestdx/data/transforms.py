"""The one resize shared by the cache, training, evaluation, inference and ONNX (normalization lives in the
model: ``chestdx.data.normalize.Normalize`` inside ``chestdx.models.inference_net.InferenceNet``)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from chestdx.io.raster import quantize_u8


def to_uint8_square(img01: np.ndarray, size: int) -> np.ndarray:
    """Quantize a [0,1] grayscale image to uint8 and resize it to ``size`` x ``size`` (bilinear, antialiased).

    Non-square images are squashed, as NIH (square) and the Kermany re-upload (already squashed) are.
    """
    if img01.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {img01.shape}")
    return resize_square_u8(quantize_u8(img01), size)


def resize_square_u8(u8: np.ndarray, size: int) -> np.ndarray:
    """The resize step of :func:`to_uint8_square` on an already quantized uint8 (H, W) image, e.g. from
    ``chestdx.io.read_image_u8``: ``resize_square_u8(read_image_u8(p), s) == to_uint8_square(read_image(p), s)``."""
    if u8.ndim != 2 or u8.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 grayscale image, got shape {u8.shape} dtype {u8.dtype}")
    if u8.shape == (size, size):
        return u8
    return np.asarray(Image.fromarray(u8).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))
