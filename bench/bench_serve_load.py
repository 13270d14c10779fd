"""Server under hostile and heavy load: decompression-bomb-sized uploads in parallel, then many real CXRs at once.

Run:
  .venv/bin/python bench/bench_serve_load.py [--arch efficientnet_lite0] [--n-cxr 50] [--big 10]

Each phase runs against ``chestdx.serve.app`` under uvicorn in a subprocess (UNTRAINED weights: memory and
timing only; default limits unless stated) while a sampler reads the server's VmRSS every 20 ms:
  1. ``--big`` concurrent 10000x10000 RGB PNGs (~0.3 MB each, 100 MP: above the 36 MP limit);
  2. ``--big`` concurrent 6000x6000 RGBA PNGs (36 MP: at the limit, decoded reduced);
  3. (server restarted with CHESTDX_MAX_PIXELS=100000000) the 10000x10000 PNGs again, decoded reduced;
  4. ``--n-cxr`` concurrent nih-sample uploads with heatmaps=auto (the default queue admits them all);
  5. the same against ``max_queue=8``: the rest get 503 + Retry-After and the clients retry.
Targets: every request answered 200/413/422/503, peak RSS <= 1.5 GB in 1-3, server healthy afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageDraw

from bench_serve_memory import ServerProcess, cxr_files, proc_status
from common import machine


class RssSampler:
    """Max VmRSS of a process over a ``with`` block, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.02):
        self.pid, self.every, self.peak = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self.peak = proc_status(self.pid)["VmRSS"]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def big_png(width: int, height: int, mode: str) -> bytes:
    """A mostly flat, highly compressible PNG (the decompression-bomb shape) with a few shapes drawn on it."""
    im = Image.new(mode, (width, height), (30, 30, 30, 255)[: len(mode)])
    draw = ImageDraw.Draw(im)
    for k in range(6):
        x, y = width * (k + 1) // 8, height // 3
        draw.ellipse([x - width // 20, y, x + width // 20, y + height // 4], fill=(200, 180, 160, 255)[: len(mode)])
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def post(url: str, name: str, data: bytes, params: dict, retry: bool = False) -> dict:
    """One upload (retrying on 503 after Retry-After when ``retry``) -> status, attempts, latency."""
    import httpx

    t0, attempts, first = time.perf_counter(), 0, None
    while True:
        attempts += 1
        try:
            r = httpx.post(f"{url}/api/predict", params=params, timeout=600,
                           files={"file": (name, data, "application/octet-stream")})
            status, wait = r.status_code, float(r.headers.get("retry-after", 1))
        except httpx.HTTPError as exc:
            status, wait = f"error: {type(exc).__name__}", 1.0
        first = first if first is not None else status
        if not (retry and status == 503 and attempts < 50):
            return {"status": status, "first": first, "attempts": attempts, "latency_s": time.perf_counter() - t0}
        time.sleep(min(wait, 10.0))


def burst(srv: ServerProcess, jobs: list[tuple[str, bytes]], params: dict, retry: bool = False) -> dict:
    """All ``jobs`` at once; status counts, latency percentiles, peak server RSS, health afterwards."""
    import httpx

    with RssSampler(srv.proc.pid) as rss, ThreadPoolExecutor(len(jobs)) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda job: post(srv.url, job[0], job[1], params, retry), jobs))
        wall = time.perf_counter() - t0
    lat = np.array([r["latency_s"] for r in results])
    counts: dict[str, int] = {}
    firsts: dict[str, int] = {}
    for r in results:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
        firsts[str(r["first"])] = firsts.get(str(r["first"]), 0) + 1
    health = httpx.get(f"{srv.url}/api/health", timeout=30).status_code
    return {"requests": len(jobs), "final_status": json.dumps(counts, sort_keys=True),
            "first_attempt_status": json.dumps(firsts, sort_keys=True),
            "all_answered": all(str(r["status"]) in ("200", "413", "422", "503") for r in results),
            "p50_s": round(float(np.percentile(lat, 50)), 2), "p95_s": round(float(np.percentile(lat, 95)), 2),
            "max_s": round(float(lat.max()), 2), "wall_s": round(wall, 1),
            "peak_rss_mib": round(rss.peak, 1), "health_after": health}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--big", type=int, default=10)
    ap.add_argument("--n-cxr", type=int, default=50)
    args = ap.parse_args(argv)

    bomb = big_png(10000, 10000, "RGB")
    at_limit = big_png(6000, 6000, "RGBA")
    cxrs = [(f.name, f.read_bytes()) for f in cxr_files(args.n_cxr)]
    cxrs = [cxrs[i % len(cxrs)] for i in range(args.n_cxr)]
    hm = {"heatmaps": "none", "preview": "true"}
    phases: dict[str, dict] = {}
    model = f"{args.arch}@{args.size} (untrained), {args.threads} torch thread(s)"
    with ServerProcess(arch=args.arch, size=args.size, threads=args.threads) as srv:
        idle = srv.status()["VmRSS"]
        phases[f"{args.big} x 10000x10000 RGB PNG ({len(bomb) // 1024} KB, 100 MP)"] = burst(
            srv, [("bomb.png", bomb)] * args.big, hm)
        phases[f"{args.big} x 6000x6000 RGBA PNG ({len(at_limit) // 1024} KB, 36 MP, at the limit)"] = burst(
            srv, [("limit.png", at_limit)] * args.big, hm)
        phases[f"{args.n_cxr} x nih-sample CXR, heatmaps=auto (default queue: all admitted)"] = burst(
            srv, cxrs, {"heatmaps": "auto"}, retry=True)
    with ServerProcess(arch=args.arch, size=args.size, threads=args.threads,
                       env={"CHESTDX_MAX_PIXELS": "100000000"}) as srv:
        phases[f"{args.big} x 10000x10000 RGB PNG, CHESTDX_MAX_PIXELS=100000000 (decoded reduced)"] = burst(
            srv, [("bomb.png", bomb)] * args.big, hm)
    with ServerProcess(arch=args.arch, size=args.size, threads=args.threads, max_queue=8) as srv:
        phases[f"{args.n_cxr} x nih-sample CXR, heatmaps=auto, max_queue=8 (503 + Retry-After, clients retry)"] = (
            burst(srv, cxrs, {"heatmaps": "auto"}, retry=True))
    print(json.dumps({"bench": "serve load", "model": model, "server": "uvicorn subprocess, defaults: 2 workers, "
                      "queue 64, 256 MiB pending uploads, 36 MP pixel limit, 4 heatmaps per request",
                      "rss_idle_mib": round(idle, 1), "phases": phases, "target_peak_rss_mib": 1536,
                      "machine": machine()}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
