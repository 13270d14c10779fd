"""Server memory under sequential uploads with heatmaps: does RSS level off after warm-up?

Run:
  .venv/bin/python bench/bench_serve_memory.py [--n 1000] [--warmup 50] [--arch simple_cnn] [--size 224]

Starts ``chestdx.serve.app`` under a real uvicorn in a subprocess (UNTRAINED weights: memory and timing only),
posts nih-sample CXRs one after another with ``heatmaps=auto`` (4 Grad-CAMs + preview each) and reads the
server's VmRSS from /proc. Prints JSON. Target: growth after warm-up <= 50 MB over 1,000 uploads.
The helpers here (``ServerProcess``) are shared with bench_serve_load.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, data_root, machine


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM (peak) / RssAnon of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            out[key] = int(line.split()[1]) / 1024
    return out


class ServerProcess:
    """``with ServerProcess(arch=..., **create_app_kwargs) as srv: srv.url, srv.status()`` - uvicorn in a child."""

    def __init__(self, arch: str = "simple_cnn", size: int = 224, threads: int = 1, env: dict | None = None,
                 **app_kwargs):
        from chestdx.serve.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(Path(__file__)), "--serve", str(self.port), "--arch", arch, "--size", str(size),
               "--threads", str(threads), "--app-kwargs", json.dumps(app_kwargs)]
        paths = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths or [str(REPO / "src")]), **(env or {})}
        self.proc = subprocess.Popen(cmd, env=full_env, cwd=REPO / "bench")

    def __enter__(self) -> ServerProcess:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server did not start within 180 s")

    def status(self) -> dict[str, float]:
        return proc_status(self.proc.pid)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def serve(port: int, arch: str, size: int, threads: int, app_kwargs: dict) -> None:
    """Child process: untrained predictor + create_app under uvicorn on 127.0.0.1:port."""
    import tempfile

    import torch
    import uvicorn

    import chestdx
    from bench_inference import _untrained_run
    from chestdx.serve.app import create_app

    torch.set_num_threads(threads)
    run = _untrained_run(arch, size, tempfile.mkdtemp(prefix="chestdx-bench-"))
    app = create_app(chestdx.load(run), **app_kwargs)  # with the quality gate, as served
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def cxr_files(n: int = 20) -> list[Path]:
    files = sorted((data_root() / "nih-sample" / "images").glob("*.png"))[:n]
    if not files:
        raise SystemExit(f"no nih-sample images under {data_root()}")
    return files


def bench_memory(n: int, warmup: int, arch: str, size: int, threads: int) -> dict:
    import httpx

    files = cxr_files()
    blobs = [(f.name, f.read_bytes()) for f in files]
    rss: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    with ServerProcess(arch=arch, size=size, threads=threads) as srv, httpx.Client(timeout=120) as client:
        start = srv.status()
        for i in range(n):
            name, data = blobs[i % len(blobs)]
            r = client.post(f"{srv.url}/api/predict", params={"heatmaps": "auto"},
                            files={"file": (name, data, "image/png")})
            if r.status_code != 200 or not r.json()["heatmaps"]:
                raise RuntimeError(f"upload {i}: {r.status_code} {r.text[:200]}")
            if i + 1 == warmup or (i + 1) % 100 == 0 or i + 1 == n:
                rss.append((i + 1, srv.status()["VmRSS"]))
        end = srv.status()
    after_warmup = next(v for k, v in rss if k == warmup)
    tail = [v for k, v in rss if k >= warmup]
    return {"bench": "serve memory, sequential uploads with heatmaps", "model": f"{arch}@{size} (untrained)",
            "uploads": n, "heatmaps_per_upload": "auto (4 Grad-CAMs + preview)",
            "images": f"{len(files)} nih-sample PNGs",
            "server": "uvicorn subprocess, 1 worker process", "rss_start_mib": round(start["VmRSS"], 1),
            "rss_after_warmup_mib": round(after_warmup, 1), "rss_end_mib": round(end["VmRSS"], 1),
            "growth_after_warmup_mib": round(end["VmRSS"] - after_warmup, 1),
            "max_minus_min_after_warmup_mib": round(max(tail) - min(tail), 1),
            "peak_rss_mib": round(end["VmHWM"], 1), "seconds": round(time.perf_counter() - t0, 1),
            "rss_trace": {str(k): round(v, 1) for k, v in rss}, "target_growth_mib": 50, "machine": machine()}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--arch", default="simple_cnn")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--app-kwargs", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve, args.arch, args.size, args.threads, json.loads(args.app_kwargs))
        return
    print(json.dumps(bench_memory(args.n, args.warmup, args.arch, args.size, args.threads), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
