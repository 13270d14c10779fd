"""The one resize shared by the cache, training, evaluation, inference and ONNX (normalization lives in the
model: ``chestdx.data.normalize.Normalize`` inside ``chestdx.models.inference_net.InferenceNet``)."""

from __future__ import annotations

import numpy as np

from chestdx.io.raster import quantize_u8, resize_square_u8

__all__ = ["resize_square_u8", "to_uint8_square"]


def to_uint8_square(img01: np.ndarray, size: int) -> np.ndarray:
    """Quantize a [0,1] grayscale image to uint8 and resize it to ``size`` x ``size`` (bilinear, antialiased).

    Non-square images are squashed, as NIH (square) and the Kermany re-upload (already squashed) are. The two
    steps are public: ``chestdx.io.quantize_u8`` and :func:`resize_square_u8` (also for an already quantized image,
    e.g. ``resize_square_u8(read_image_u8(p), size) == to_uint8_square(read_image(p), size)``).
    """
    if img01.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {img01.shape}")
    return resize_square_u8(quantize_u8(img01), size)
