"""Quality gate latency: per image, preprocessing (the shared resize) + the ONNX model, on 1 and 2 threads.

Run:
  .venv/bin/python bench/bench_quality.py [--threads 2] [--repeat 50]
Prints JSON. Images are decoded first (decoding is the Predictor's cost, reported apart); the timed call is
``QualityGate.assess(img01)`` exactly as the Predictor will make it. Target: <= 30 ms per image on 2 threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from common import data_root, machine, timings


def _timed(fn, repeat: int) -> dict:
    times = timings(fn, repeat)
    return {"median_ms": 1e3 * float(np.median(times)), "p95_ms": 1e3 * float(np.percentile(times, 95)),
            "repeat": repeat}


def bench(threads: list[int], repeat: int) -> dict:
    from chestdx.inference.quality import QualityGate
    from chestdx.io import read_image

    root = data_root()
    files = {"nih-fullres 1024 px PNG": sorted((root / "nih-fullres" / "images").glob("*.png"))[0],
             "nih-sample 512 px PNG": sorted((root / "nih-sample" / "images").glob("*.png"))[0]}
    images, decode = {}, {}
    for name, path in files.items():
        t = time.perf_counter()
        images[name] = read_image(path)
        decode[name] = 1e3 * (time.perf_counter() - t)
    rng = np.random.default_rng(0)
    images["synthetic 2500 x 2048 float (large DR size)"] = rng.random((2500, 2048), dtype=np.float32)
    out: dict = {"decode_ms (not part of the gate)": decode}
    for n in threads:
        gate = QualityGate.default(threads=n)
        rows = {name: _timed(lambda img=img, g=gate: g.assess(img), repeat) for name, img in images.items()}
        batch = [images["nih-sample 512 px PNG"]] * 32
        t = _timed(lambda b=batch, g=gate: g.assess_batch(b), max(3, repeat // 10))
        rows["batch of 32 x 512 px, per image"] = {"median_ms": t["median_ms"] / 32, "p95_ms": t["p95_ms"] / 32,
                                                    "repeat": t["repeat"]}
        out[f"{n} thread(s)"] = rows
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args(argv)
    res = bench(args.threads, args.repeat)
    print(json.dumps({"bench": "quality gate latency", "target": "<= 30 ms per image on 2 threads",
                      "machine": machine(), "results": res}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
