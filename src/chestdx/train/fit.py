"""``fit``: config -> run directory with config, split, checkpoints, logs and the best model."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from chestdx.data.pipeline import write_bad_files
from chestdx.train.checkpoint import CHECKPOINT_NAME, save_checkpoint
from chestdx.train.config import load_config, save_config
from chestdx.train.data_setup import PreparedData, prepare_data
from chestdx.train.losses import build_loss
from chestdx.train.module import ChestModule

log = logging.getLogger(__name__)
# expected: frozen layers stay in eval mode on purpose; a Lightning-internal deprecation
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
MONITOR = "val_macro_auroc"


class EpochSummary(Callback):
    """One line per epoch after validation: train loss, val loss, val macro AUROC, training throughput."""

    def __init__(self) -> None:
        self._start = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += int(batch[0].shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        get = lambda k: float(m[k]) if k in m else float("nan")  # noqa: E731
        rate = self._images / max(time.perf_counter() - self._start, 1e-9)
        log.info("epoch %d/%d: train_loss %.4f  val_loss %.4f  val_macro_auroc %.4f  %.1f img/s (incl. validation)",
                 trainer.current_epoch + 1, trainer.max_epochs, get("train_loss"), get("val_loss"), get(MONITOR), rate)


def _precision(config: dict[str, Any]) -> str:
    if config["precision"] != "auto":
        return str(config["precision"])
    if torch.cuda.is_available() and config["accelerator"] in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _loader(ds, config: dict[str, Any], shuffle: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(int(config["seed"]))
    return DataLoader(ds, batch_size=int(config["batch_size"]), shuffle=shuffle,
                      num_workers=int(config["num_workers"]), generator=generator,
                      drop_last=shuffle and len(ds) > int(config["batch_size"]),
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def build_module(config: dict[str, Any], data: PreparedData) -> ChestModule:
    """Model, loss (class weights from the TRAIN split only) and optimizer settings."""
    from chestdx.models import build_model

    mc = config["model"]
    model = build_model(mc["arch"], len(data.labels), pretrained=mc.get("pretrained"), freeze=mc.get("freeze", "none"),
                        metadata=tuple(mc.get("metadata") or ()), input_size=int(config["image_size"]))
    train = data.table[data.table["split"] == "train"]
    loss = build_loss(config["loss"], train[data.labels].to_numpy())
    module = ChestModule(model, loss, config["optimizer"], config["scheduler"], data.labels,
                         monitor_min_positives=int(config["early_stopping"].get("min_val_positives", 1)),
                         channels_last=bool(config.get("channels_last", False)))
    if module.channels_last:
        module.model.to(memory_format=torch.channels_last)
    return module


@torch.no_grad()
def validation_auroc_per_label(module: ChestModule, data: PreparedData, config: dict[str, Any]) -> dict[str, float]:
    """Validation AUROC of the restored best weights, per label with both classes present."""
    import numpy as np

    from chestdx.train.module import macro_auroc

    module.eval()
    probs, ys = [], []
    for x, y, meta in _loader(data.dataset("val", config), config, False):
        probs.append(torch.sigmoid(module(x, meta)).numpy())
        ys.append(y.numpy())
    _, per_label = macro_auroc(np.concatenate(ys), np.concatenate(probs))
    return {data.labels[j]: round(v, 4) for j, v in per_label.items()}


def merge_training_logs(log_dir: Path) -> None:
    """Fold logs saved before a resume back into logs/metrics.csv (one table over all epochs)."""
    import pandas as pd

    parts = sorted(log_dir.glob("metrics.before-resume-*.csv"))
    if not parts:
        return
    current = log_dir / "metrics.csv"
    frames = [pd.read_csv(p) for p in parts] + ([pd.read_csv(current)] if current.exists() else [])
    pd.concat(frames, ignore_index=True).drop_duplicates().to_csv(current, index=False)
    for p in parts:
        p.unlink()


def fit(config: dict[str, Any], out_dir: str | Path, split_csv: str | Path | None = None,
        resume: bool = False) -> Path:
    """Train per ``config`` into ``out_dir``; ``resume`` continues an interrupted run from its last checkpoint."""
    run = Path(out_dir)
    ckpt_dir = run / "checkpoints"
    if resume:
        config = load_config(run / "config.yaml")
        split_csv = run / "split.csv"
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    L.seed_everything(int(config["seed"]), workers=True, verbose=False)
    is_zero = rank_zero_only.rank == 0
    data = prepare_data(config, split_csv, show_progress=is_zero and config["progress"])
    if is_zero:
        run.mkdir(parents=True, exist_ok=True)
        config = dict(config, labels_resolved=data.labels)
        save_config(config, run / "config.yaml")
        if not resume:
            data.table.to_csv(run / "split.csv", index=False)
        write_bad_files(data.report, run / "bad_files.csv")
    module = build_module(config, data)
    callbacks: list[Callback] = [
        EarlyStopping(monitor=MONITOR, mode="max", patience=int(config["early_stopping"]["patience"]),
                      min_delta=float(config["early_stopping"].get("min_delta", 0.0))),
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=MONITOR, mode="max", save_last=True,
                        enable_version_counter=False),
        EpochSummary(),
    ]
    if config["progress"]:
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        max_epochs=int(config["epochs"]), accelerator=config["accelerator"], devices=config["devices"],
        strategy=config["strategy"], num_nodes=int(config["num_nodes"]), precision=_precision(config),
        accumulate_grad_batches=int(config["accumulate"]), deterministic=True, callbacks=callbacks,
        logger=CSVLogger(run, name="logs", version=""), default_root_dir=run,
        limit_train_batches=config["limit_train_batches"], enable_progress_bar=bool(config["progress"]),
        log_every_n_steps=1, enable_model_summary=False, num_sanity_val_steps=0,
    )
    last = ckpt_dir / "last.ckpt"
    metrics_csv = run / "logs" / "metrics.csv"
    earlier_log = run / "logs" / f"metrics.before-resume-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    if resume and is_zero and metrics_csv.exists():  # CSVLogger rewrites the file: keep the epochs logged so far
        metrics_csv.rename(earlier_log)
    start = time.perf_counter()
    trainer.fit(module, _loader(data.dataset("train", config, augment=True), config, True),
                _loader(data.dataset("val", config), config, False),
                ckpt_path=str(last) if resume and last.exists() else None)
    if trainer.is_global_zero:
        merge_training_logs(run / "logs")
        best = ckpt_dir / "best.ckpt"
        best_epoch = None
        if best.exists():  # restore the best weights, not the last ones
            state = torch.load(best, map_location="cpu", weights_only=False)
            module.load_state_dict(state["state_dict"])
            best_epoch = int(state["epoch"]) + 1  # 1-based, as in the report's curves
        save_checkpoint(run / CHECKPOINT_NAME, module.model.cpu().to(memory_format=torch.contiguous_format),
                        data.labels, config)
        val_per_label = validation_auroc_per_label(module, data, config)
        checkpoint_cb = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
        summary = {
            "best_val_macro_auroc": float(checkpoint_cb.best_model_score) if checkpoint_cb.best_model_score is not None
            else None,
            "best_epoch": best_epoch,
            "val_auroc_per_label": val_per_label,
            "epochs_run": int(trainer.current_epoch),
            "stopped_early": bool(trainer.early_stopping_callback and trainer.early_stopping_callback.stopped_epoch),
            "train_seconds_this_session": round(time.perf_counter() - start, 1),
            "labels": data.labels,
            "n_images": data.table["split"].value_counts().to_dict(),
            "n_unreadable": len(data.report.failures),
            "devices": config["devices"], "strategy": config["strategy"], "precision": _precision(config),
        }
        (run / "train_summary.json").write_text(json.dumps(summary, indent=2))
        log.info("best val macro AUROC %s at epoch %s -> %s", summary["best_val_macro_auroc"], best_epoch, run)
    return run
