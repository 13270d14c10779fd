"""The one resize shared by the cache, training, evaluation, inference and ONNX (normalization lives in the
model: ``chestdx.data.normalize.Normalize`` inside ``chestdx.models.inference_net.InferenceNet``)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_uint8_square(img01: np.ndarray, size: int) -> np.ndarray:
    """Quantize a [0,1] grayscale image to uint8 and resize it to ``size`` x ``size`` (bilinear, antialiased).

    Non-square images are squashed, as NIH (square) and the Kermany re-upload (already squashed) are.
    """
    if img01.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {img01.shape}")
    u8 = np.clip(np.rint(np.asarray(img01, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    if u8.shape == (size, size):
        return u8
    return np.asarray(Image.fromarray(u8).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))

