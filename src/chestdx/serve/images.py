"""PNG encodings for the web app: a grayscale preview of the decoded image and RGBA heatmap overlays (base64)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

PREVIEW_MAX_SIDE = 768


def png_base64(img: Image.Image) -> str:
    """PNG bytes of a Pillow image, base64 text (for JSON / data: URLs)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=3)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def preview_png(image01: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> str:
    """The decoded [0,1] image (any format, DICOM included) as an 8-bit grayscale PNG, aspect kept."""
    u8 = np.clip(np.rint(np.asarray(image01, np.float32) * 255.0), 0, 255).astype(np.uint8)
    im = Image.fromarray(u8)
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.BILINEAR, reducing_gap=2.0)
    return png_base64(im)


def heatmap_png(heat01: np.ndarray, max_alpha: float = 0.6, cmap: str = "jet") -> str:
    """A (S,S) [0,1] map as an RGBA PNG: colour from ``cmap``, opacity rising with the value (0 = transparent).

    The map is at the model's square input; the page stretches it over the preview, which undoes the squash of
    ``to_uint8_square`` (both axes are scaled linearly).
    """
    from matplotlib import colormaps

    h = np.clip(np.nan_to_num(np.asarray(heat01, np.float32)), 0.0, 1.0)
    rgba = colormaps[cmap](h)
    rgba[..., 3] = max_alpha * np.clip((h - 0.15) / 0.85, 0.0, 1.0) ** 0.8
    return png_base64(Image.fromarray((rgba * 255).astype(np.uint8)))
