"""Where the decode + resize time of a 1024 px PNG goes (nih-fullres), stage by stage, on one core.

Run: OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_decode.py [--repeat 5] [--size 224]
Prints JSON: CPU ms per image (this process's CPU time, so other jobs inflate it far less than wall time) over
the 60 nih-fullres PNGs. Stages: each timed on its own, ``repeat`` passes, the median pass. Whole paths, timed
alternately image by image: the float path (``to_uint8_square(read_image(p))``: decode -> float [0, 1] -> uint8
-> resize) vs the uint8 path (``read_image_u8(p, size=size)``, the same pixels); and the Predictor's
per-image work without the model (decode, image checks, quality gate, model-input resize) before vs now."""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

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
    """Median over ``repeat`` passes of the mean CPU ms per item of ``fn(item)`` (one warm-up pass).

    CPU time of this process (single-threaded work: Pillow, numpy with OMP_NUM_THREADS=1), so that other jobs on
    the machine inflate it far less than wall time."""
    for it in items:
        fn(it)
    passes = []
    for _ in range(repeat):
        t = time.process_time()
        for it in items:
            fn(it)
        passes.append(1e3 * (time.process_time() - t) / len(items))
    return float(np.median(passes))


def _ab(fa: Callable[[object], object], fb: Callable[[object], object], items: list,
        repeat: int) -> tuple[float, float]:
    """Mean CPU ms per item of ``fa`` and ``fb``, called alternately on each item (load drifts hit both alike)."""
    ta, tb = [], []
    for _ in range(repeat + 1):
        for it in items:
            t = time.process_time()
            fa(it)
            ta.append(time.process_time() - t)
            t = time.process_time()
            fb(it)
            tb.append(time.process_time() - t)
    n = len(items)  # the first pass is a warm-up
    return 1e3 * float(np.mean(ta[n:])), 1e3 * float(np.mean(tb[n:]))


def main(size: int, repeat: int) -> dict:
    from chestdx.data.transforms import resize_square_u8, to_uint8_square
    from chestdx.inference.ood import image_checks
    from chestdx.inference.prepare import ImagePreparer
    from chestdx.inference.quality import QualityGate
    from chestdx.io import GrayImage, decode_image_bytes, read_image, read_image_u8
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
    gate_in = [gate.preprocess(a)[None] for a in f01]

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
        "Predictor: float image from the uint8 one (GrayImage.img01)":
            _ms(lambda a: GrayImage(u8=a).img01, u8, repeat),
        "Predictor blank check: np.std of the float image": _ms(lambda a: float(np.std(a)), f01, repeat),
        "quality gate input: QualityGate.preprocess (float)": _ms(gate.preprocess, f01, repeat),
        "quality gate model, one image (onnxruntime, 64 px)": _ms(gate.probs_u8, gate_in, repeat),
    }
    preparer = ImagePreparer(size, gate)

    def old_prepare(p: Path) -> np.ndarray:  # the Predictor before the uint8 path: float decode, float resize
        stats: dict = {}
        img = decode_image_bytes(read_bytes(p), str(p), stats=stats)
        image_checks(img, stats.get("colour_spread"))
        res = gate.assess(img)
        return to_uint8_square(gate.correct(img, res), size)

    def new_prepare(p: Path) -> np.ndarray:
        return preparer.prepare(p)[1]

    decode = _ab(lambda p: to_uint8_square(read_image(p), size),
                 lambda p: read_image_u8(p, size=size), paths, repeat)
    predictor = _ab(old_prepare, new_prepare, paths, repeat)
    paths_ms = {
        "float path: read_image + to_uint8_square": decode[0],
        "uint8 path: read_image_u8(p, size=size)": decode[1],
        "Predictor, no model: float decode + checks + gate + to_uint8_square (before)": predictor[0],
        "Predictor, no model: ImagePreparer.prepare (uint8 path)": predictor[1],
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
