"""``fit``: config -> run directory (format ``chestdx-run/2``): config, split (+ folds), one ensemble member per
fold, out-of-fold predictions, per-fold Lightning state (``folds/<k>/{checkpoints,logs}``), training summary.

K = ``config["folds"]`` (default 1). K = 1 trains one member on the train split, early-stopped on val; K > 1
trains fold k's member on the other folds, early-stopped on fold k, one fold after the other. Every member's
predictions on the rows it validated on form ``oof.csv`` (for K = 1: the validation predictions).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from chestdx.allocator import tune_malloc
from chestdx.data.pipeline import write_bad_files
from chestdx.rundir import RunDir, atomic_write_json
from chestdx.train.config import load_config, save_config
from chestdx.train.data_setup import PreparedData, prepare_data
from chestdx.train.folds import check_folds
from chestdx.train.losses import build_loss
from chestdx.train.module import ChestModule

log = logging.getLogger(__name__)
# expected: frozen layers stay in eval mode on purpose; a Lightning-internal deprecation
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
MONITOR = "val_macro_auroc"


class EpochSummary(Callback):
    """One line per epoch after validation: train loss, val loss, val macro AUROC, training throughput."""

    def __init__(self, prefix: str = "") -> None:
        self._start = 0.0
        self._images = 0
        self.prefix = prefix

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
        log.info("%sepoch %d/%d: train_loss %.4f  val_loss %.4f  val_macro_auroc %.4f  %.1f img/s (incl. validation)",
                 self.prefix, trainer.current_epoch + 1, trainer.max_epochs, get("train_loss"), get("val_loss"),
                 get(MONITOR), rate)


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
    extra = {"labels": list(data.labels)} if str(mc["arch"]).startswith("xrv_") else {}  # head from xrv's rows
    model = build_model(mc["arch"], len(data.labels), pretrained=mc.get("pretrained"), freeze=mc["freeze"],
                        metadata=tuple(mc.get("metadata") or ()), input_size=int(config["image_size"]), **extra)
    train = data.table[data.table["split"] == "train"]
    loss = build_loss(config["loss"], train[data.labels].to_numpy())
    module = ChestModule(model, loss, config["optimizer"], config["scheduler"], data.labels,
                         monitor_min_positives=int(config["early_stopping"]["min_val_positives"]),
                         channels_last=bool(config["channels_last"]))
    if module.channels_last:
        module.model.to(memory_format=torch.channels_last)
    return module



@torch.no_grad()
def predict_split(module: ChestModule, data: PreparedData, config: dict[str, Any], split: str = "val") -> np.ndarray:
    """Logits (N, L) of ``module`` on the rows of ``split`` (table order)."""
    module.eval()
    logits = [module(x, meta).double() for x, _, meta in _loader(data.dataset(split, config), config, False)]
    return torch.cat(logits).numpy() if logits else np.zeros((0, len(data.labels)))


def oof_frame(data: PreparedData, fold: int, logits: np.ndarray, split_of: pd.Series) -> pd.DataFrame:
    """Predictions table (contracts.md) of one fold's validation rows: ids, original split, fold, truth, prob_."""
    from chestdx.labels import predictions_table

    part = data.table[data.table["split"] == "val"].assign(fold=fold)
    part["split"] = split_of.loc[part.index].to_numpy()
    return predictions_table(part, data.labels, logits)


def merge_training_logs(log_dir: Path) -> None:
    """Fold logs saved before a resume back into logs/metrics.csv (one table over all epochs)."""
    parts = sorted(log_dir.glob("metrics.before-resume-*.csv"))
    if not parts:
        return
    current = log_dir / "metrics.csv"
    frames = [pd.read_csv(p) for p in parts] + ([pd.read_csv(current)] if current.exists() else [])
    pd.concat(frames, ignore_index=True).drop_duplicates().to_csv(current, index=False)
    for p in parts:
        p.unlink()


def _model_info(module: ChestModule, data: PreparedData, config: dict[str, Any]) -> dict[str, Any]:
    """Manifest facts (model.json) of the trained architecture."""
    model = module.model
    return {"arch": model.arch, "labels": list(data.labels), "input_size": int(config["image_size"]),
            "mean": [float(v) for v in model.mean], "std": [float(v) for v in model.std],
            "metadata": list(model.metadata), "pretrained": config["model"].get("pretrained"),
            "freeze": config["model"]["freeze"], "config_name": config["name"]}


def _fold_data(data: PreparedData, fold: int, k: int) -> PreparedData:
    from chestdx.train.folds import fold_table

    return data if k == 1 else replace(data, table=fold_table(data.table, fold))


def train_fold(config: dict[str, Any], data: PreparedData, run: RunDir, fold: int, k: int, resume: bool,
               split_of: pd.Series) -> dict[str, Any] | None:
    """Train member ``fold`` in ``run.fold_dir(fold)``; on rank 0 write the member, its OOF rows and summary."""
    fold_dir = run.fold_dir(fold)
    ckpt_dir = fold_dir / "checkpoints"
    tag = f"fold {fold + 1}/{k}: " if k > 1 else ""
    L.seed_everything(int(config["seed"]) + fold, workers=True, verbose=False)
    fdata = _fold_data(data, fold, k)
    counts = fdata.table["split"].value_counts().to_dict()
    if rank_zero_only.rank == 0:
        log.info("%strain %d images, validate %d images (test %d untouched)", tag or "", counts.get("train", 0),
                 counts.get("val", 0), counts.get("test", 0))
    module = build_module(config, fdata)
    callbacks: list[Callback] = [
        EarlyStopping(monitor=MONITOR, mode="max", patience=int(config["early_stopping"]["patience"]),
                      min_delta=float(config["early_stopping"]["min_delta"])),
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=MONITOR, mode="max", save_last=True,
                        enable_version_counter=False),
        EpochSummary(tag),
        clock := _SessionClock(fold_dir, resume),
    ]
    if config["progress"]:
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        max_epochs=int(config["epochs"]), accelerator=config["accelerator"], devices=config["devices"],
        strategy=config["strategy"], num_nodes=int(config["num_nodes"]), precision=_precision(config),
        accumulate_grad_batches=int(config["accumulate"]), deterministic=True, callbacks=callbacks,
        logger=CSVLogger(fold_dir, name="logs", version=""), default_root_dir=fold_dir,
        limit_train_batches=config["limit_train_batches"], enable_progress_bar=bool(config["progress"]),
        log_every_n_steps=1, enable_model_summary=False, num_sanity_val_steps=0,
    )
    last = ckpt_dir / "last.ckpt"
    metrics_csv = fold_dir / "logs" / "metrics.csv"
    if resume and trainer.is_global_zero and metrics_csv.exists():  # CSVLogger rewrites it: keep earlier epochs
        metrics_csv.rename(metrics_csv.with_name(f"metrics.before-resume-{time.strftime('%Y%m%d-%H%M%S')}.csv"))
    start = time.perf_counter()
    trainer.fit(module, _loader(fdata.dataset("train", config, augment=True), config, True),
                _loader(fdata.dataset("val", config), config, False),
                ckpt_path=str(last) if resume and last.exists() else None)
    if not trainer.is_global_zero:
        return None
    seconds = time.perf_counter() - start
    merge_training_logs(fold_dir / "logs")
    best = ckpt_dir / "best.ckpt"
    best_epoch = None
    if best.exists():  # restore the best weights, not the last ones
        state = torch.load(best, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
        best_epoch = int(state["epoch"]) + 1  # 1-based, as in the report's curves
    module = module.cpu()
    member = run.write_member(fold, module.model.state_dict(), fold=fold, best_epoch=best_epoch)
    oof = oof_frame(fdata, fold, predict_split(module, fdata, config), split_of)
    oof.to_csv(fold_dir / "oof.csv", index=False)
    from chestdx.labels import label_column
    from chestdx.train.module import macro_auroc

    _, per_label = macro_auroc(oof[data.labels].to_numpy(np.float64),
                               oof[[label_column(lb) for lb in data.labels]].to_numpy())
    checkpoint_cb = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    summary = {
        "fold": fold,
        "best_val_macro_auroc": float(checkpoint_cb.best_model_score) if checkpoint_cb.best_model_score is not None
        else None,
        "best_epoch": best_epoch,
        "val_auroc_per_label": {data.labels[j]: round(v, 4) for j, v in per_label.items()},
        "epochs_run": int(trainer.current_epoch),
        "stopped_early": bool(trainer.early_stopping_callback and trainer.early_stopping_callback.stopped_epoch),
        "train_seconds": round(clock.base + seconds, 1),
        "n_images": {str(s): int(n) for s, n in counts.items()},
        "member": member,
        "model_info": _model_info(module, data, config),
    }
    atomic_write_json(fold_dir / "summary.json", summary)
    log.info("%sbest val macro AUROC %s at epoch %s (%.0f s)", tag, summary["best_val_macro_auroc"], best_epoch,
             seconds)
    return summary


def _earlier_seconds(fold_dir: Path) -> float:
    """Training seconds of earlier, interrupted sessions of this fold (kept in ``seconds.json``)."""
    path = fold_dir / "seconds.json"
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else 0.0


class _SessionClock(Callback):
    """Adds this session's training time to ``seconds.json`` after every epoch, so a resume can sum them."""

    def __init__(self, fold_dir: Path, resume: bool) -> None:
        self.fold_dir = fold_dir
        self.base = _earlier_seconds(fold_dir) if resume else 0.0
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.fold_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.fold_dir / "seconds.json",
                              {"seconds": self.base + time.perf_counter() - self.start})


def fit(config: dict[str, Any], out_dir: str | Path, split_csv: str | Path | None = None,
        resume: bool = False) -> Path:
    """Train per ``config`` into ``out_dir``; ``resume`` continues an interrupted run where it stopped (finished
    folds are skipped, the interrupted one continues from its last checkpoint)."""
    run = RunDir(out_dir)
    if resume:
        if not run.config.is_file():
            raise FileNotFoundError(f"{run.config}: missing; nothing to resume in {run.path}")
        config = load_config(run.config)
        split_csv = run.split
    k = check_folds(config["folds"])
    tune_malloc()
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    is_zero = rank_zero_only.rank == 0
    data = prepare_data(config, split_csv, show_progress=is_zero and config["progress"])
    split_of = data.table["split"]
    config = dict(config, labels_resolved=data.labels, folds=k)
    if is_zero:
        run.path.mkdir(parents=True, exist_ok=True)
        save_config(config, run.config)
        if not resume:
            data.table.to_csv(run.split, index=False)
        write_bad_files(data.report, run.path / "bad_files.csv")
    done = {f for f in range(k) if resume and (run.fold_dir(f) / "summary.json").is_file()}
    start = time.perf_counter()
    for fold in range(k):
        if fold in done:
            if is_zero:
                log.info("fold %d/%d: finished earlier, skipped", fold + 1, k)
            continue
        train_fold(config, data, run, fold, k, resume, split_of)
    if is_zero:
        write_run(run, data, k, time.perf_counter() - start, config)
        log.info("%d member(s) -> %s", k, run.path)
    return run.path


def write_run(run: RunDir, data: PreparedData, k: int, seconds: float, config: dict[str, Any]) -> None:
    """After the last fold: ``oof.csv``, ``train_summary.json`` and the manifest (written last: its presence
    marks a complete run dir)."""
    from chestdx.labels import label_column
    from chestdx.train.module import macro_auroc

    folds = [json.loads((run.fold_dir(f) / "summary.json").read_text()) for f in range(k)]
    oof = pd.concat([pd.read_csv(run.fold_dir(f) / "oof.csv", dtype={"image_id": str, "patient_id": str})
                     for f in range(k)], ignore_index=True)
    oof.to_csv(run.oof, index=False)
    macro, per_label = macro_auroc(oof[data.labels].to_numpy(np.float64),
                                   oof[[label_column(lb) for lb in data.labels]].to_numpy())
    summary: dict[str, Any] = {
        "folds": k,
        "oof_macro_auroc": None if np.isnan(macro) else round(macro, 4),
        "oof_auroc_per_label": {data.labels[j]: round(v, 4) for j, v in per_label.items()},
        "oof_images": len(oof),
        "train_seconds_total": round(sum(f["train_seconds"] for f in folds), 1),
        "train_seconds_per_fold": [f["train_seconds"] for f in folds],
        "wall_seconds_this_session": round(seconds, 1),
        "labels": data.labels,
        "n_images": {str(s): int(n) for s, n in data.table["split"].value_counts().items()},
        "n_unreadable": len(data.report.failures),
        "per_fold": [{key: v for key, v in f.items() if key not in ("member", "model_info")} for f in folds],
        "devices": config["devices"], "strategy": config["strategy"], "precision": _precision(config),
    }
    if k == 1:  # the single split's numbers at the top, as before K-fold training existed
        summary.update({key: folds[0][key] for key in ("best_val_macro_auroc", "best_epoch", "val_auroc_per_label",
                                                       "epochs_run", "stopped_early")})
    else:
        summary["best_val_macro_auroc"] = round(float(np.mean([f["best_val_macro_auroc"] or np.nan
                                                               for f in folds])), 4)
    atomic_write_json(run.path / "train_summary.json", summary)
    run.write_manifest(folds[0]["model_info"], [f["member"] for f in folds])
