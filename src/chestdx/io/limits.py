"""Safety limits for decoding untrusted images (module constants, read at call time)."""

from __future__ import annotations

#: Largest image accepted, in pixels (width x height), checked from the header before decoding.
MAX_PIXELS: int = 100_000_000

#: Largest file accepted by :func:`chestdx.io.read_image`, in bytes.
MAX_FILE_BYTES: int = 1 << 30


def check_pixels(width: int, height: int, max_pixels: int | None = None) -> str | None:
    """Return a reason string when ``width x height`` exceeds the limit, else ``None``."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    pixels = int(width) * int(height)
    if pixels > limit:
        return (
            f"image is {width}x{height} = {_mp(pixels)} MP, above the {_mp(limit)} MP limit "
            "(possible decompression bomb)"
        )
    return None


def _mp(pixels: int) -> str:
    value = pixels / 1e6
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"
