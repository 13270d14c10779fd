"""Data benchmarks: cache vs decode throughput, index/split/audit at 112k rows, peak RSS over full caches.

Run: .venv/bin/python bench/bench_data.py [decode|scale|rss-nih|rss-kermany]  (prints JSON)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np

from common import best_time, data_root, memory_status, peak_rss_mib


def bench_decode_vs_cache(size: int = 256) -> dict:
    """Throughput of decoding the 1024 px PNGs vs reading the same images from the cache (one epoch)."""
    from chestdx.data.cache import PixelCache
    from chestdx.data.dataset import CXRDataset
    from chestdx.data.files import list_images
    from chestdx.io import read_image

    paths = list_images(data_root() / "nih-fullres" / "images")
    with tempfile.TemporaryDirectory() as tmp:
        cache = PixelCache(tmp, size)
        t = time.perf_counter()
        cache.build(paths, workers=1)
        build_s = time.perf_counter() - t
        decode_s = best_time(lambda: [read_image(p) for p in paths])
        ds = CXRDataset(cache.pixels, cache.slots(paths), np.zeros((len(paths), 1), np.float32))
        cache_s = best_time(lambda: [ds[i] for i in range(len(ds))], repeat=5)
    return {"images": len(paths), "source": "nih-fullres 1024 px PNG", "cache_size": size,
            "decode_img_per_s": len(paths) / decode_s, "cache_img_per_s": len(paths) / cache_s,
            "ratio_cache_over_decode": decode_s / cache_s, "build_img_per_s": len(paths) / build_s}


def bench_scale() -> dict:
    """Index + split + audit of the full 112,120-row NIH CSV as if every image were present."""
    import pandas as pd

    from chestdx.data.nih import read_nih
    from chestdx.data.splits import audit_split, make_split

    nih = data_root() / "nih-sample"
    ids = pd.read_csv(nih / "Data_Entry_2017_v2020.csv", usecols=["Image Index"])["Image Index"]
    listing = {name: f"/fake/images/{name}" for name in ids}  # the file listing is faked, the CSV is real
    t0 = time.perf_counter()
    df = read_nih(nih, listing=listing)
    t1 = time.perf_counter()
    split = make_split(df, seed=0)
    t2 = time.perf_counter()
    ok = audit_split(split).ok
    t3 = time.perf_counter()
    return {"rows": len(df), "patients": int(df["patient_id"].nunique()), "index_s": t1 - t0,
            "split_s": t2 - t1, "audit_s": t3 - t2, "total_s": t3 - t0, "audit_ok": ok}


def bench_rss(dataset: str, size: int = 224) -> dict:
    """Peak memory while iterating one epoch of the full cached dataset through a DataLoader."""
    import torch

    from chestdx.data.dataset import AugmentConfig, CXRDataset
    from chestdx.data.pipeline import cache_table
    from chestdx.data.readers import build_index

    df = build_index(data_root() / dataset)
    cache, df, _ = cache_table(df, size, show_progress=False)
    before = memory_status()
    ds = CXRDataset(cache.pixels, cache.slots(df["path"].tolist()), np.zeros((len(df), 14), np.float32),
                    augment=AugmentConfig())
    n = 0
    for x, _, _ in torch.utils.data.DataLoader(ds, batch_size=32):
        n += x.shape[0]
    after = memory_status()
    return {"dataset": dataset, "images": n, "cache_mib": cache.pixels.nbytes / 2**20,
            "rss_anon_before_mib": before["RssAnon"], "rss_anon_after_mib": after["RssAnon"],
            "rss_file_after_mib": after["RssFile"], "peak_rss_mib": peak_rss_mib()}


if __name__ == "__main__":
    import torch

    torch.set_num_threads(2)
    which = sys.argv[1] if len(sys.argv) > 1 else "decode"
    result = {"decode": bench_decode_vs_cache, "scale": bench_scale,
              "rss-nih": lambda: bench_rss("nih-sample"), "rss-kermany": lambda: bench_rss("kermany")}[which]()
    print(json.dumps(result))
