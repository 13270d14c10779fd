"""The one resize and the one normalization shared by training, evaluation, inference and ONNX."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def normalize_numpy(batch01: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(B,1,H,W) float in [0,1] -> (B,3,H,W) normalized float32 (the torch-free twin of ``Normalize``)."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    x = np.repeat(np.asarray(batch01, dtype=np.float32), m.shape[1], axis=1)
    return (x - m) / s

