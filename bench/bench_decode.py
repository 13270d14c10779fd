"""Where the decode + resize time of a 1024 px PNG goes (nih-fullres), stage by stage, on one core.

Run: OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_decode.py [--repeat 5] [--size 224]
Prints JSON: median ms per image of each stage over the 60 nih-fullres PNGs (each stage timed on its own,
``repeat`` passes, the median pass), and the two whole paths: the float path (``read_image`` +
``to_uint8_square``: decode -> float [0, 1] -> uint8 -> resize) and the uint8 path (``read_image_u8`` +
``resize_square_u8``), plus the Predictor's own extras (blank check, quality gate input) on top of decoding.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import time
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, PngImagePlugin

from common import data_root


def _idat(data: bytes) -> bytes:
    """The concatenated IDAT payload of a PNG (what zlib inflates)."""
    pos, out = 8, []
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if ctype == b"IDAT":
            out.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return b"".join(out)


def _ms(fn: Callable[[object], object], items: list, repeat: int) -> float:
    """Median over ``repeat`` passes of the mean ms per item of ``fn(item)`` (one warm-up pass)."""
    for it in items:
        fn(it)
    passes = []
    for _ in range(repeat):
        t = time.perf_counter()
        for it in items:
            fn(it)
        passes.append(1e3 * (time.perf_counter() - t) / len(items))
    return float(np.median(passes))


def main(size: int, repeat: int) -> dict:
    from chestdx.data.transforms import resize_square_u8, to_uint8_square
    from chestdx.inference.quality import QualityGate
    from chestdx.io import read_image, read_image_u8
    from chestdx.io.raster import _check_png_structure, to_gray01
    from chestdx.io.reader import read_bytes

    paths = sorted((data_root() / "nih-fullres" / "images").glob("*.png"))
    blobs = [read_bytes(p) for p in paths]
    idats = [_idat(b) for b in blobs]
    ims = []
    for b in blobs:
        im = PngImagePlugin.PngImageFile(io.BytesIO(b))
        im.load()
        ims.append(im)
    f01 = [to_gray01(im) for im in ims]
    u8 = [np.asarray(im) for im in ims]
    gate = QualityGate.default()

    def pil_decode(b: bytes) -> None:
        im = PngImagePlugin.PngImageFile(io.BytesIO(b))
        im.load()

    def quantize(a: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(np.asarray(a, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)

    stages = {
        "read_bytes (page cache)": _ms(read_bytes, paths, repeat),
        "png chunk walk + CRC (_check_png_structure)": _ms(lambda b: _check_png_structure(b, "x"), blobs, repeat),
        "zlib inflate of the IDAT data alone": _ms(zlib.decompress, idats, repeat),
        "Pillow open + load (inflate + PNG unfilter)": _ms(pil_decode, blobs, repeat),
        "uint8 -> float32 [0, 1] (to_gray01)": _ms(to_gray01, ims, repeat),
        "float32 -> uint8 (quantize in to_uint8_square)": _ms(quantize, f01, repeat),
        f"resize uint8 1024 -> {size} (Pillow bilinear, antialiased)":
            _ms(lambda a: resize_square_u8(a, size), u8, repeat),
        "Predictor blank check: np.std of the float image": _ms(lambda a: float(np.std(a)), f01, repeat),
        "quality gate input: QualityGate.preprocess (float)": _ms(gate.preprocess, f01, repeat),
    }
    paths_ms = {
        "float path: read_image + to_uint8_square": _ms(lambda p: to_uint8_square(read_image(p), size), paths,
                                                        repeat),
        "uint8 path: read_image_u8 + resize_square_u8": _ms(lambda p: resize_square_u8(read_image_u8(p), size),
                                                           paths, repeat),
    }
    return {"bench": "decode + resize breakdown", "images": len(paths), "source": "nih-fullres 1024 px 8-bit PNG",
            "size": size, "repeat": repeat, "ms_per_image_one_core": stages, "whole_path_ms": paths_ms,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "pillow": Image.__version__, "numpy": np.__version__}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(json.dumps(main(a.size, a.repeat), indent=1))
