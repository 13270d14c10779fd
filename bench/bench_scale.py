"""Scaling benchmark: index + split + audit, cache build (1 vs 2 workers), one training-loader epoch, peak
memory and cache size at N = 1k, 10k, 100k synthetic images; a log-log plot of cost vs N.

Run: nice -n 10 .venv/bin/python bench/bench_scale.py [--sizes 1000 10000 100000] [--one-worker-max 10000]
     [--loader-max 10000] [--repeat 3]
Prints JSON; writes docs/img/bench_scale.{json,png}. Each N runs in its own process (clean peak-RSS readings).

Images: N PNG files (256 px, phantoms of ``chestdx.data.phantom``) that are hard links to a pool of 1,000
distinct phantoms, so writing 100k files costs seconds; every file is decoded on its own (the cache keys by
path), so the per-image decode cost is that of distinct files. All files sit in the OS page cache (they were
just written): the numbers are CPU cost, not disk speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import REPO, machine, memory_status

POOL = 1000
IMAGE_PX = 256  # source PNG side
CACHE_PX = 224  # cached side (the gpu_nih preset's input size)
WORK = Path(os.environ.get("CHESTDX_BENCH_TMP", "/tmp/chestdx-bench-scale"))


def _pool(size: int = IMAGE_PX) -> Path:
    """1,000 distinct phantom PNGs and their labels table ``frame.csv`` (written once)."""
    from PIL import Image

    from chestdx.data.phantom import generate_phantom

    folder = WORK / f"pool{size}"
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        ph = generate_phantom(POOL, size=size, seed=0)
        for image_id, img in zip(ph.image_ids, ph.images, strict=True):
            Image.fromarray(img).save(folder / image_id, compress_level=6)
        ph.frame().to_csv(folder / "frame.csv", index=False)
        (folder / "done").write_text("ok")
    return folder


def prepare(n: int) -> Path:
    """``WORK/n<N>/labels.csv`` + ``images/`` of N hard links into the pool."""
    import pandas as pd

    pool = _pool()
    out = WORK / f"n{n}"
    if (out / "labels.csv").exists():
        return out
    (out / "images").mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(pool / "frame.csv")
    src = frame["image_id"].tolist()
    names = [f"phantom_{i:07d}.png" for i in range(n)]
    for i, name in enumerate(names):
        target = out / "images" / name
        if not target.exists():
            os.link(pool / src[i % POOL], target)
    rows = frame.iloc[np.arange(n) % POOL].reset_index(drop=True)
    rows.insert(0, "path", [f"images/{x}" for x in names])
    rows["patient_id"] = [f"P{i // 2:07d}" for i in range(n)]  # ~2 images per patient, as in NIH
    rows.drop(columns="image_id").to_csv(out / "labels.csv", index=False)
    return out


def _hwm_mib() -> float:
    return memory_status()["VmHWM"]


def _children_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _cpu_s() -> tuple[float, float]:
    """User + system CPU seconds of this process, and of its reaped children (the decode workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime, b.ru_utime + b.ru_stime


def measure_one(n: int, workers: list[int], loader: bool = True, loader_workers: int = 2, batch: int = 64,
                repeat: int = 1) -> dict:
    """All stages for one N (run in a fresh process)."""
    import torch

    from chestdx.data.cache import PixelCache
    from chestdx.data.dataset import AugmentConfig, CXRDataset
    from chestdx.data.readers import build_index
    from chestdx.data.splits import audit_split, make_split

    torch.set_num_threads(1)
    folder = prepare(n)
    res: dict = {"n": n, "rss_start_mib": memory_status()["RssAnon"]}
    stages = []
    for _ in range(3):  # best of 3: these stages take well under a second, so one reading is all noise
        t0 = time.perf_counter()
        df = build_index(folder / "labels.csv")
        t1 = time.perf_counter()
        split = make_split(df, seed=0)
        t2 = time.perf_counter()
        assert audit_split(split).ok
        stages.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    best = min(stages, key=sum)
    res.update(index_s=best[0], split_s=best[1], audit_s=best[2], index_split_audit_s=sum(best),
               rss_after_index_mib=memory_status()["RssAnon"])
    paths = split["path"].tolist()
    cache = None
    runs: dict[int, list[dict]] = {w: [] for w in workers}
    for _ in range(max(1, repeat)):  # alternate 1 and 2 workers, so slow phases of a shared machine hit both
        for w in workers:
            root = WORK / f"cache-n{n}-w{w}"
            shutil.rmtree(root, ignore_errors=True)
            os.sync()  # the previous build's dirty pages are written back before this one is timed
            cache = PixelCache(root, CACHE_PX)
            before = memory_status()["RssAnon"]
            (own0, kids0), t = _cpu_s(), time.perf_counter()
            report = cache.build(paths, workers=w)
            secs, (own1, kids1) = time.perf_counter() - t, _cpu_s()
            own, kids = own1 - own0, kids1 - kids0
            assert report.decoded == n and not report.failures
            # CPU-bound stages on an idle machine: wall >= max(writer CPU, workers' CPU / workers)
            runs[w].append({"s": secs, "img_per_s": n / secs, "cpu_ms_per_img": 1e3 * (own + kids) / n,
                            "writer_cpu_ms_per_img": 1e3 * own / n, "workers_cpu_ms_per_img": 1e3 * kids / n,
                            "idle_bound_img_per_s": n / max(own, kids / w) if w > 1 else n / (own + kids),
                            "writer_rss_anon_growth_mib":
                            memory_status()["RssAnon"] - before, "writer_peak_rss_mib": _hwm_mib(),
                            "workers_peak_rss_mib": _children_peak_mib()})
    for w, rs in runs.items():  # the median run (by wall time) of each worker count, and every wall time
        res[f"cache_w{w}"] = {**sorted(rs, key=lambda r: r["s"])[len(rs) // 2], "all_s": [r["s"] for r in rs]}
    if 1 in workers and 2 in workers:
        res["cache_speedup_2_over_1"] = res["cache_w1"]["s"] / res["cache_w2"]["s"]
        res["cache_speedup_paired"] = [a["s"] / b["s"] for a, b in zip(runs[1], runs[2], strict=True)]
        bound = [res[f"cache_w{w}"]["idle_bound_img_per_s"] for w in (1, 2)]
        res["cache_speedup_idle_bound"] = bound[1] / bound[0]
    assert cache is not None
    res["cache_bytes_on_disk"] = cache.data_path.stat().st_size + cache.manifest_path.stat().st_size
    res["memmap_mib"] = n * CACHE_PX * CACHE_PX / 2**20
    for w in workers[:-1]:
        shutil.rmtree(WORK / f"cache-n{n}-w{w}", ignore_errors=True)
    if not loader:
        res["peak_rss_mib"] = _hwm_mib()
        return res
    labels = split[[c for c in ("Effusion", "Nodule", "Cardiomegaly", "Pneumothorax")]].to_numpy(np.float32)
    ds = CXRDataset(cache.pixels, cache.slots(paths), labels, augment=AugmentConfig(), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=loader_workers,
                                         generator=torch.Generator().manual_seed(0), drop_last=False)
    mem0 = memory_status()
    t = time.perf_counter()
    seen = 0
    for x, _, _ in loader:
        seen += x.shape[0]
    secs = time.perf_counter() - t
    mem1 = memory_status()
    res["loader_epoch"] = {"s": secs, "img_per_s": seen / secs, "workers": loader_workers, "batch_size": batch,
                           "augment": True, "rss_anon_mib": mem1["RssAnon"], "rss_file_mib": mem1["RssFile"],
                           "rss_anon_growth_mib": mem1["RssAnon"] - mem0["RssAnon"]}
    res["peak_rss_mib"] = _hwm_mib()
    return res


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = np.array([r["n"] for r in results], float)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = {"index + split + audit": ("index_split_audit_s",), "cache build, 2 workers": ("cache_w2", "s"),
              "cache build, 1 worker": ("cache_w1", "s"), "loader epoch (augmented)": ("loader_epoch", "s")}
    for name, keys in series.items():
        pts = [(r["n"], r[keys[0]] if len(keys) == 1 else r[keys[0]][keys[1]]) for r in results if keys[0] in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=name)
    ref = np.array([r["cache_w2"]["s"] for r in results])
    ax.plot(ns, ref[0] * ns / ns[0], "k:", lw=1, label="linear (from the first point)")
    ax.set(xscale="log", yscale="log", xlabel="images N", ylabel="seconds", title="Cost vs N (log-log)")
    ax.legend(fontsize=8)
    ax2.plot(ns, [r["peak_rss_mib"] for r in results], "o-", label="peak RSS, main process")
    ax2.plot(ns, [r["cache_w2"]["workers_peak_rss_mib"] for r in results], "o-", label="peak RSS, a decode worker")
    ax2.plot(ns, [r["memmap_mib"] for r in results], "k:", label="cache memmap size")
    ax2.set(xscale="log", yscale="log", xlabel="images N", ylabel="MiB", title="Memory vs N")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(sizes: list[int], one_worker_max: int, loader_max: int, repeat: int = 3) -> dict:
    results = []
    for n in sizes:
        prepare(n)  # the phantom pool is rendered here, not in the measured processes
    for n in sizes:
        workers = [1, 2] if n <= one_worker_max else [2]
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--workers", *map(str, workers),
                               "--repeat", str(repeat if n <= one_worker_max else 1),
                               *([] if n <= loader_max else ["--no-loader"])],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"N={n} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"N={n}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    per_image = {
        "index_split_audit_us": {r["n"]: 1e6 * r["index_split_audit_s"] / r["n"] for r in results},
        "cache_w2_ms": {r["n"]: 1e3 * r["cache_w2"]["s"] / r["n"] for r in results},
        "cache_w2_cpu_ms": {r["n"]: r["cache_w2"]["cpu_ms_per_img"] for r in results},
        "loader_epoch_ms": {r["n"]: 1e3 * r["loader_epoch"]["s"] / r["n"] for r in results if "loader_epoch" in r},
        "cache_disk_bytes": {r["n"]: r["cache_bytes_on_disk"] / r["n"] for r in results},
    }
    spread = {k: (max(v.values()) / min(v.values()) - 1) for k, v in per_image.items() if v}
    load = os.getloadavg()
    out = {"bench": "scale", "sizes": sizes, "image_px": IMAGE_PX, "cache_px": CACHE_PX,
           "machine": machine(), "load_average_after": [round(x, 2) for x in load], "results": results,
           "per_image": per_image, "per_image_spread_max_over_min_minus_1": spread}
    (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
    (REPO / "docs" / "img" / "bench_scale.json").write_text(json.dumps(out, indent=1))
    _plot(results, REPO / "docs" / "img" / "bench_scale.png")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--one-worker-max", type=int, default=10000,
                    help="largest N also built with 1 worker (for the speed-up)")
    ap.add_argument("--loader-max", type=int, default=10000, help="largest N whose loader epoch is timed")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-loader", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3,
                    help="cache builds per worker count at N <= --one-worker-max (alternating; the median is kept)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.workers, loader=not args.no_loader, repeat=args.repeat)))
    else:
        print(json.dumps(main(args.sizes, args.one_worker_max, args.loader_max, args.repeat)))
