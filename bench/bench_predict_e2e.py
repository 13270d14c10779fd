"""End-to-end batch prediction vs model-only throughput, ONNX backend, 1024 px PNGs (nih-fullres).

Run: nice -n 10 .venv/bin/python bench/bench_predict_e2e.py [--arch efficientnet_lite0] [--threads 2]
     [--repeat 8] [--workers 2] [--spinning on/off]
Prints JSON. UNTRAINED weights (timing only). Decode + resize per image on one core, by the float path
(``to_uint8_square(read_image(p))``) and by the uint8 path the workers and the cache use
(``read_image_u8(p, size=size)``, the same pixels), then three throughputs on the same images:
- model-only: ``Predictor.logits`` (ONNX backend) on pre-decoded uint8 batches (no I/O, no decoding);
- sequential end-to-end: ``predictor.predict(paths)`` (decode, then model, one after the other);
- pipelined end-to-end: ``chestdx.serve.distributed.predict_distributed(devices=1)`` (decoding in DataLoader
  worker processes overlapping the model; Lightning start-up and the CSV write included), and its steady rate
  (run on half and all of the images: the difference is free of the fixed start-up).
``other_processes_cpu_share``: the share of the machine's CPU time that other processes used during the
measurements (0 = a quiet machine). ``pipelined_cpu_ms_per_image``: CPU time (all our processes) per image of the
steady pipelined part, which other jobs inflate far less than the wall-clock rates. ``cpu_bound_*``: what the
machine's cores could do at best when every image costs the model's 1-thread CPU time plus the decode's (no
overhead, perfect overlap), and that over model-only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_inference import _untrained_run
from common import data_root, machine


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the DataLoader workers, once joined)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _machine_busy_s() -> float:
    """CPU seconds all processes on the machine spent busy so far (/proc/stat; Linux)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main(arch: str, size: int, threads: int, repeat: int, workers: int, batch: int, spinning: bool = True) -> dict:
    import torch

    import chestdx
    from chestdx.data.transforms import to_uint8_square
    from chestdx.inference.backend_onnx import OnnxBackend
    from chestdx.io import read_image, read_image_u8
    from chestdx.serve.distributed import predict_distributed
    from chestdx.serve.onnx_export import export_onnx

    torch.set_num_threads(threads)
    OnnxBackend.allow_spinning = spinning
    cores = len(os.sched_getaffinity(0))
    png = sorted((data_root() / "nih-fullres" / "images").glob("*.png"))
    paths = [str(p) for p in png] * repeat  # the same 60 files several times (all in the page cache)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "m.onnx"
        export_onnx(_untrained_run(arch, size, tmp), onnx, check=False)
        ort = chestdx.load(onnx, threads=threads)  # with the quality gate, as users get it
        load_before = [round(x, 2) for x in os.getloadavg()]
        wall0, busy0, ours0 = time.perf_counter(), _machine_busy_s(), _cpu_s()
        t = time.perf_counter()
        ref = np.stack([to_uint8_square(read_image(p), size) for p in png])
        float_ms = 1e3 * (time.perf_counter() - t) / len(png)
        t = time.perf_counter()
        u8 = np.stack([read_image_u8(p, size=size) for p in png])
        decode_ms = 1e3 * (time.perf_counter() - t) / len(png)
        assert np.array_equal(u8, ref)
        ort.logits(u8[:batch], batch_size=batch)  # warm-up
        t = time.perf_counter()
        for _ in range(repeat):
            ort.logits(u8, batch_size=batch)
        model_only = len(paths) / (time.perf_counter() - t)
        t = time.perf_counter()
        ort.predict(paths[: len(png) * 2], batch_size=batch)
        sequential = len(png) * 2 / (time.perf_counter() - t)
        one = chestdx.load(onnx, threads=1)
        one.logits(u8[:batch], batch_size=batch)
        t = time.perf_counter()
        for _ in range(2):
            one.logits(u8, batch_size=batch)
        model_ms_1t = 1e3 * (time.perf_counter() - t) / (2 * len(png))
        predict_distributed(onnx, paths[:batch], Path(tmp) / "out.csv", devices=1, batch_size=batch,
                            num_workers=workers, threads=threads)  # warm-up: imports, first-time costs
        seconds, cpu = {}, {}
        for n in (len(paths) // 2, len(paths)):  # two lengths: the difference is free of the fixed start-up
            t, c = time.perf_counter(), _cpu_s()
            out = predict_distributed(onnx, paths[:n], Path(tmp) / "out.csv", devices=1, batch_size=batch,
                                      num_workers=workers, threads=threads)
            seconds[n], cpu[n] = time.perf_counter() - t, _cpu_s() - c
            assert sum(1 for _ in open(out)) == n + 1
        cpu_ms = 1e3 * (cpu[len(paths)] - cpu[len(paths) // 2]) / (len(paths) - len(paths) // 2)
        pipelined = len(paths) / seconds[len(paths)]
        steady = (len(paths) - len(paths) // 2) / (seconds[len(paths)] - seconds[len(paths) // 2])
        others = (_machine_busy_s() - busy0 - (_cpu_s() - ours0)) / (cores * (time.perf_counter() - wall0))
    return {"bench": "predict end-to-end vs model-only",
            "other_processes_cpu_share": round(max(0.0, others), 3), "arch": arch, "input_size": size,
            "backend": "onnxruntime",
            "weights": "untrained (timing only)", "threads": threads,
            "onnxruntime_spinning": spinning, "decode_workers": workers, "batch_size": batch,
            "images": len(paths), "source": "nih-fullres 1024 px PNG (60 files x repeat)", "machine": machine(),
            "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "decode_resize_ms_per_image_1_core": decode_ms, "decode_resize_float_path_ms_per_image_1_core": float_ms,
            "model_only_img_per_s": model_only, "model_ms_per_image_1_thread": model_ms_1t,
            "sequential_e2e_img_per_s": sequential, "pipelined_e2e_img_per_s": pipelined,
            "pipelined_steady_img_per_s": steady, "pipelined_cpu_ms_per_image": cpu_ms,
            "pipelined_startup_s": seconds[len(paths)] - len(paths) / steady,
            "ratio_pipelined_over_model_only": pipelined / model_only,
            "ratio_pipelined_steady_over_model_only": steady / model_only,
            "ratio_sequential_over_model_only": sequential / model_only, "target_ratio": 0.8,
            # every image costs the model's CPU time plus the decode's; `cores` cores do at most this many per s
            "cpu_bound_img_per_s": cores * 1e3 / (model_ms_1t + decode_ms),
            "cpu_bound_ratio": cores * 1e3 / (model_ms_1t + decode_ms) / model_only}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--spinning", choices=("on", "off"), default="on",
                    help="onnxruntime intra-op busy-waiting of the diagnosis model (the quality gate's is off)")
    a = ap.parse_args()
    print(json.dumps(main(a.arch, a.size, a.threads, a.repeat, a.workers, a.batch, a.spinning == "on")))
