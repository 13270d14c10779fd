"""From a config to cached, split, labelled datasets ready for training or evaluation."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestdx.data.cache import CacheBuildReport, PixelCache
from chestdx.data.dataset import AugmentConfig, CXRDataset
from chestdx.data.index import IndexReport, label_columns, read_table
from chestdx.data.pipeline import cache_table
from chestdx.data.readers import build_index
from chestdx.data.splits import audit_split, make_split
from chestdx.train.folds import FOLD, assign_folds, audit_folds, check_folds, n_folds

log = logging.getLogger(__name__)

PHANTOM = "phantom"


def phantom_dir(cache_root: str | Path | None = None) -> Path:
    """Where the built-in synthetic phantom dataset is written (once)."""
    from chestdx.data.cache import default_cache_root

    return Path(cache_root or default_cache_root()) / "phantom-v1"


def load_index(data: str | Path, kind: str = "auto", cache_root: str | Path | None = None) -> pd.DataFrame:
    """Index a dataset path, or the built-in synthetic phantom set when ``data == "phantom"``."""
    if str(data) == PHANTOM:
        from chestdx.data.phantom import write_phantom_dataset

        folder = phantom_dir(cache_root)
        if not (folder / "labels.csv").is_file():
            tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
            write_phantom_dataset(tmp, n=600, size=128, seed=0)
            try:
                os.rename(tmp, folder)  # atomic: parallel ranks never see a half-written set
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        return build_index(folder / "labels.csv", kind="csv")
    report = IndexReport()
    df = build_index(data, kind=kind, report=report)
    log.info("%s: %s", data, report.summary())
    return df


def split_from_config(index: pd.DataFrame, config: dict[str, Any]) -> pd.DataFrame:
    """Patient-grouped split per ``config['split']``, audited."""
    from chestdx.data.nih import read_nih_boxes

    sc = config["split"]
    forced = read_nih_boxes(sc["boxes_to_test"])["image_id"].tolist() if sc.get("boxes_to_test") else None
    df = make_split(index, val=sc["val"], test=sc["test"], seed=sc["seed"], official=sc["official"],
                    force_test=forced)
    result = audit_split(df)
    if not result.ok:
        raise ValueError("split leaks: " + "; ".join(result.messages()[:5]))
    return df


def choose_labels(df: pd.DataFrame, config: dict[str, Any]) -> list[str]:
    """Labels to train: the config's list, or every label with >= min_positives positives (and negatives) in
    the training rows: the train split (K = 1) or every train+val row (K-fold: each is training data of K-1
    members)."""
    if config["labels"] != "auto":
        missing = [lb for lb in config["labels"] if lb not in df.columns]
        if missing:
            raise ValueError(f"labels {missing} are not columns of the dataset")
        return list(config["labels"])
    train = df[df[FOLD] >= 0] if FOLD in df.columns else df[df["split"] == "train"]
    need = int(config["min_positives"])
    chosen = [lb for lb in label_columns(df) if np.nansum(train[lb]) >= need
              and (train[lb] == 0).sum() >= need]
    if not chosen:
        raise ValueError("no label has positives and negatives in the training split")
    return chosen


@dataclass
class PreparedData:
    """Split table (without unreadable files), labels, the cache and its build report."""

    table: pd.DataFrame
    labels: list[str]
    cache: PixelCache
    report: CacheBuildReport

    def dataset(self, split: str, config: dict[str, Any], augment: bool = False) -> CXRDataset:
        from chestdx.models import encode_metadata

        part = self.table[self.table["split"] == split]
        fields = tuple(config["model"].get("metadata") or ())
        meta = encode_metadata(part, fields) if fields else None
        aug = AugmentConfig(**config["augment"]) if augment else None
        return CXRDataset(self.cache.pixels, self.cache.slots(part["path"].tolist()),
                          part[self.labels].to_numpy(np.float32), meta, augment=aug, seed=int(config["seed"]))


def prepare_data(config: dict[str, Any], split_csv: str | Path | None = None,
                 show_progress: bool = True, labels: list[str] | None = None) -> PreparedData:
    """Index -> split (or a saved split) -> K-fold assignment (``config["folds"]`` > 1) -> labels -> cache."""
    folds = check_folds(config["folds"])
    if split_csv is not None:
        table = read_table(split_csv)
        result = audit_split(table)
        if not result.ok:
            raise ValueError(f"{split_csv} leaks: " + "; ".join(result.messages()[:5]))
        problems = audit_folds(table)
        if problems:
            raise ValueError(f"{split_csv}: bad folds: " + "; ".join(problems[:5]))
        if FOLD in table.columns and n_folds(table) != folds:
            raise ValueError(f"{split_csv} holds {n_folds(table)} folds but the config asks for folds={folds}")
    else:
        if config.get("data") is None:
            raise ValueError("no data: pass --data DATA_DIR, --split split.csv, or set data: in the config")
        table = split_from_config(load_index(config["data"], config["dataset_kind"], config["cache_root"]), config)
    if folds > 1 and FOLD not in table.columns:
        table = assign_folds(table, folds, seed=int(config["split"]["seed"]))
    elif folds == 1 and FOLD in table.columns:
        table = table.drop(columns=[FOLD])
    labels = labels or choose_labels(table, config)
    cache, table, report = cache_table(table, int(config["image_size"]), config["cache_root"],
                                       show_progress=show_progress)
    return PreparedData(table, labels, cache, report)
