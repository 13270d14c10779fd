"""Training benchmarks.

  python bench/bench_train.py ratio ARCH   # full training loop (cache + augmentation + Lightning) vs model-only
  python bench/bench_train.py rss DATASET  # peak memory of one training epoch (nih-sample | kermany)
  python bench/bench_train.py zerograd ARCH  # Lightning loop with vs without freeing gradients after each step

Prints one JSON line.
"""

from __future__ import annotations

import itertools
import json
import sys
import time

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from common import data_root, memory_status, peak_rss_mib


class _Clock(Callback):
    """Wall time of training batches after ``warmup`` batches (excludes setup and validation)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.images = warmup, None, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.images += batch[0].shape[0]
            self.end = time.perf_counter()


def _setup(dataset: str, arch: str, size: int, batch: int, extra: tuple[str, ...] = ()):
    from chestdx.train.config import load_config
    from chestdx.train.data_setup import prepare_data
    from chestdx.train.fit import build_module

    cfg = load_config("default", [f"data={data_root() / dataset}", f"model.arch={arch}", f"image_size={size}",
                                  f"batch_size={batch}", "progress=false", "model.pretrained=null",
                                  "model.freeze=none", "scheduler.name=none", *extra])
    data = prepare_data(cfg, show_progress=False)
    return cfg, data, build_module(cfg, data)


def _lightning_img_per_s(module, loader, steps: int) -> float:
    """img/s of ``steps`` training batches in a fresh one-epoch Trainer (the first batch is warm-up)."""
    clock = _Clock(warmup=1)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=steps + 1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[clock], accelerator="cpu", devices=1)
    trainer.fit(module, loader)
    return clock.images / (clock.end - clock.start)


def bench_ratio(arch: str, size: int = 224, batch: int = 16, steps: int = 8, rounds: int = 5,
                extra: tuple[str, ...] = ()) -> dict:
    """img/s of the real training loop divided by img/s of the model alone on an in-memory batch.

    Model-only and Lightning loops alternate; the ratio is the median over ``rounds`` of (Lightning loop) /
    (mean of the model-only loops just before and after it). The loader alone is timed too (ms per batch)."""
    from chestdx.train.fit import _loader

    cfg, data, module = _setup("nih-sample", arch, size, batch, extra)
    ds = data.dataset("train", cfg, augment=True)
    loader = _loader(ds, cfg, shuffle=True)  # the loader `chestdx train` uses (workers, seeding, drop_last)
    t = time.perf_counter()
    batches = list(itertools.islice(loader, steps + 1))
    x, y, meta = batches[-1]  # the model-only loop reuses this in-memory batch
    loader_ms = 1000 * (time.perf_counter() - t) / (steps + 1)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    module.train()

    def step():
        opt.zero_grad()
        module.loss_fn(module(x, meta), y).backward()
        opt.step()

    def model_only() -> float:
        step()  # warmup
        t = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch / (time.perf_counter() - t)

    # interleaved rounds: other tenants of a shared machine shift throughput by 5-10% from one minute to the
    # next, so each round compares a Lightning loop with the model-only loops right before and after it
    alone, full = [model_only()], []
    for _ in range(rounds):
        full.append(_lightning_img_per_s(module, loader, steps))
        alone.append(model_only())
    ratios = [f / ((a + b) / 2) for f, a, b in zip(full, alone[:-1], alone[1:], strict=True)]
    return {"arch": arch, "size": size, "batch": batch, "steps": steps, "rounds": rounds,
            "num_workers": int(cfg["num_workers"]), "model_only_img_per_s": float(np.median(alone)),
            "training_loop_img_per_s": float(np.median(full)), "loader_only_ms_per_batch": loader_ms,
            "loader_share_of_step": loader_ms / 1000 / (batch / float(np.median(alone))),
            "round_ratios": " ".join(f"{r:.3f}" for r in ratios), "ratio": float(np.median(ratios))}


def bench_zerograd(arch: str, size: int = 224, batch: int = 16, steps: int = 8, rounds: int = 4) -> dict:
    """ChestModule frees gradients right after each optimizer step; Lightning alone zeroes them only after the
    next forward pass. Paired rounds (order alternating) of the same loop with and without that override."""
    from chestdx.train.fit import _loader
    from chestdx.train.module import ChestModule

    cfg, data, module = _setup("nih-sample", arch, size, batch)
    loader = _loader(data.dataset("train", cfg, augment=True), cfg, shuffle=True)
    freeing = ChestModule.optimizer_step
    speed: dict[bool, list[float]] = {True: [], False: []}
    try:
        for r in range(rounds):
            for free in ((True, False) if r % 2 == 0 else (False, True)):
                ChestModule.optimizer_step = freeing if free else L.LightningModule.optimizer_step
                speed[free].append(_lightning_img_per_s(module, loader, steps))
    finally:
        ChestModule.optimizer_step = freeing
    gains = [a / b for a, b in zip(speed[True], speed[False], strict=True)]
    return {"arch": arch, "size": size, "batch": batch, "steps": steps, "rounds": rounds,
            "freed_img_per_s": " ".join(f"{v:.2f}" for v in speed[True]),
            "lightning_default_img_per_s": " ".join(f"{v:.2f}" for v in speed[False]),
            "rounds_faster_when_freed": f"{sum(g > 1 for g in gains)}/{rounds}",
            "median_speedup": float(np.median(gains))}


def bench_rss(dataset: str, size: int = 224, batch: int = 32) -> dict:
    """Peak memory over a full training epoch (simple_cnn: the loader, not the model, is measured)."""
    cfg, data, module = _setup(dataset, "simple_cnn", size, batch)
    before = memory_status()
    loader = torch.utils.data.DataLoader(data.dataset("train", cfg, augment=True), batch_size=batch, shuffle=True)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    t = time.perf_counter()
    trainer.fit(module, loader)
    after = memory_status()
    n = len(loader.dataset)
    return {"dataset": dataset, "train_images": n, "size": size, "epoch_s": time.perf_counter() - t,
            "cache_mib": float(np.prod(data.cache.pixels.shape)) / 2**20, "rss_anon_before_mib": before["RssAnon"],
            "rss_anon_after_mib": after["RssAnon"], "rss_file_after_mib": after["RssFile"],
            "peak_rss_mib": peak_rss_mib()}


if __name__ == "__main__":
    torch.set_num_threads(2)
    kind, arg, extra = sys.argv[1], sys.argv[2], tuple(sys.argv[3:])  # extra: config overrides, e.g. num_workers=1
    result = {"ratio": lambda: bench_ratio(arg, extra=extra), "rss": lambda: bench_rss(arg),
              "zerograd": lambda: bench_zerograd(arg)}[kind]()
    print(json.dumps(result))
