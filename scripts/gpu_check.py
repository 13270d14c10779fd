"""GPU check for a training preset: 50 training steps, images/s and peak memory, expected time per epoch.

  python scripts/gpu_check.py                      # gpu_nih preset on the first GPU (or the CPU)
  python scripts/gpu_check.py --steps 3 --batch-size 4 --arch efficientnet_lite0   # CPU smoke test

Two throughputs: the training step alone (synthetic batches already on the device: the model's ceiling) and
the real loader (``CXRDataset`` over an in-memory uint8 cache with the training augmentation, the preset's
``num_workers``). An epoch is bounded by the slower of the two:

    epoch_s = n_train / min(step_img_s, loader_img_s) + n_val / eval_img_s

with NIH's official split: 86,524 train_val images, 10% of the patients to validation (~77.9k train, ~8.7k val).
Weights are random (no download): timing only.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

NIH_TRAIN_VAL = 86_524  # images in NIH's train_val_list.txt


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if device.type != "cuda" or precision in ("32", "32-true"):
        return None
    if precision.startswith("bf16") or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _module(config: dict, n_labels: int, channels_last: bool, device: torch.device):
    from chestdx.models import build_model
    from chestdx.train.losses import build_loss
    from chestdx.train.module import ChestModule

    mc = config["model"]
    model = build_model(mc["arch"], n_labels, pretrained=None, freeze=mc.get("freeze", "none"),
                        input_size=int(config["image_size"]))
    loss = build_loss(config["loss"], np.random.default_rng(0).random((256, n_labels)) < 0.1)
    module = ChestModule(model, loss, config["optimizer"], config["scheduler"], [f"L{i}" for i in range(n_labels)],
                         channels_last=channels_last).to(device)
    if channels_last:
        module.model.to(memory_format=torch.channels_last)
    return module


def step_throughput(module, batch: int, size: int, steps: int, warmup: int, amp: torch.dtype | None,
                    device: torch.device, n_labels: int) -> float:
    """Images/s of forward + backward + optimizer step on synthetic batches resident on the device."""
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    x = torch.rand(batch, 1, size, size, device=device)
    y = (torch.rand(batch, n_labels, device=device) < 0.1).float()
    module.train()
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = module.loss_fn(module(x, None).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


@torch.no_grad()
def eval_throughput(module, batch: int, size: int, steps: int, amp: torch.dtype | None,
                    device: torch.device) -> float:
    module.eval()
    x = torch.rand(batch, 1, size, size, device=device)
    for i in range(steps + 2):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            module(x, None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def loader_throughput(batch: int, size: int, steps: int, workers: int, pin: bool) -> float:
    """Images/s of the training DataLoader (cache read + MONAI augmentation) on phantom pixels."""
    from chestdx.data.dataset import AugmentConfig, CXRDataset
    from chestdx.data.phantom import generate_phantom

    n = batch * min(steps, 8)
    pixels = generate_phantom(min(n, 256), size=size).images
    ds = CXRDataset(pixels, np.arange(n) % len(pixels), np.zeros((n, 14), np.float32), augment=AugmentConfig())
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=pin,
                                         drop_last=True, persistent_workers=workers > 0)
    seen, start = 0, None
    for epoch in range(max(1, -(-steps // max(1, n // batch))) + 1):
        for x, _, _ in loader:
            if start is None:  # the first batch pays the worker start-up
                start = time.perf_counter()
                continue
            seen += x.shape[0]
            if seen >= steps * batch:
                break
        if seen >= steps * batch:
            break
        ds.set_epoch(epoch + 1)
    return seen / (time.perf_counter() - start)


def main() -> None:
    from chestdx.train.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="gpu_nih", help="preset name or YAML")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, help="default: the preset's")
    ap.add_argument("--arch", help="override the preset's model")
    ap.add_argument("--image-size", type=int, help="override the preset's image size")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, help="loader workers (default: the preset's num_workers)")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--n-train", type=int, default=round(NIH_TRAIN_VAL * 0.9))
    ap.add_argument("--n-val", type=int, default=round(NIH_TRAIN_VAL * 0.1))
    a = ap.parse_args()
    config = load_config(a.config)
    if a.arch:
        config["model"]["arch"] = a.arch
    if a.image_size:
        config["image_size"] = a.image_size
    batch, size = a.batch_size or int(config["batch_size"]), int(config["image_size"])
    device = _device(a.device)
    amp = _amp_dtype(device, str(config.get("precision", "auto")))
    channels_last = bool(config.get("channels_last", True)) and not a.no_channels_last
    workers = int(config["num_workers"]) if a.workers is None else a.workers
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    module = _module(config, 14, channels_last, device)
    step = step_throughput(module, batch, size, a.steps, a.warmup, amp, device, 14)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    evals = eval_throughput(module, batch, size, max(3, a.steps // 5), amp, device)
    loader = loader_throughput(batch, size, a.steps, workers, device.type == "cuda")
    train_rate = min(step, loader)
    epoch_s = a.n_train / train_rate + a.n_val / min(evals, loader * 3)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch_threads": torch.get_num_threads(), "arch": config["model"]["arch"], "image_size": size,
           "batch_size": batch, "amp": str(amp).replace("torch.", "") if amp else "off (fp32)",
           "channels_last": channels_last, "steps": a.steps, "train_step_img_per_s": round(step, 1),
           "eval_img_per_s": round(evals, 1), "loader_img_per_s": round(loader, 1), "loader_workers": workers,
           "bottleneck": "loader" if loader < step else "model",
           "peak_memory_gib": round(peak, 2), "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda"
           else "process peak RSS",
           "expected_epoch_s": round(epoch_s, 1),
           "epoch_calculation": f"{a.n_train} / min({step:.1f}, {loader:.1f}) + {a.n_val} / min({evals:.1f}, "
                                f"3 x {loader:.1f}) = {epoch_s:.0f} s ({epoch_s / 60:.1f} min)"}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
