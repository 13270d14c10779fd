"""Fit the OOD gate's feature statistics for a run: training-split features (from the pixel cache) and the
validation split's distances for the threshold, saved as the run's ``ood.npz``. Called by ``evaluate_run``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestdx.data.pipeline import cache_table
from chestdx.inference.ood import OODStats, fit_stats
from chestdx.inference.predictor import Predictor
from chestdx.inference.run_table import RunTable, open_run_table

log = logging.getLogger(__name__)


def split_features(predictor: Predictor, table: pd.DataFrame, split: str, cache_root: str | Path | None,
                   max_images: int | None = None, seed: int = 0, show_progress: bool = False) -> np.ndarray:
    """Pooled features (N, F) of (a seeded random subset of) one split's images, read through the cache."""
    rows = table[table["split"] == split]
    if max_images is not None and len(rows) > max_images:
        rows = rows.sample(n=max_images, random_state=seed)
    if rows.empty:
        return np.zeros((0, 0), np.float32)
    cache, rows, _ = cache_table(rows, predictor.input_size, cache_root, show_progress=show_progress)
    pixels = np.asarray(cache.pixels[cache.slots(rows["path"].tolist())])
    return predictor.features(pixels)


def fit_run_ood(predictor: Predictor, table: pd.DataFrame, cache_root: str | Path | None = None,
                max_train: int = 3000, quantile: float = 0.99, seed: int = 0,
                show_progress: bool = False) -> OODStats:
    """Fit mean + shrinkage covariance on (up to ``max_train``) TRAIN images, threshold on VAL images."""
    train = split_features(predictor, table, "train", cache_root, max_train, seed, show_progress)
    if len(train) < 2:
        raise ValueError("OOD gate: fewer than 2 readable training images")
    val = split_features(predictor, table, "val", cache_root, None, seed, show_progress)
    stats = fit_stats(train, val if len(val) else np.zeros((0, train.shape[1])), quantile=quantile)
    log.info("OOD statistics (information only) fitted on %d train images (F=%d, shrinkage %.3f); threshold "
             "d2=%.1f at the %g quantile of %d val images", stats.n_train, train.shape[1], stats.shrinkage or 0.0,
             stats.threshold, quantile, stats.n_val)
    return stats


def fit_ood_for_run(run_dir: str | Path, data: str | Path | None = None, predictor: Predictor | None = None,
                    **kwargs: Any) -> OODStats:
    """Fit the OOD statistics of a run dir (train features, val threshold) and write ``ood.npz``."""
    rt = open_run_table(run_dir, data)
    return write_run_ood(rt, predictor or Predictor.from_run(rt.run.path, gate=None), **kwargs)


def write_run_ood(rt: RunTable, predictor: Predictor, **kwargs: Any) -> OODStats:
    """Fit on an already opened run (``fit_run_ood`` arguments in ``kwargs``) and write its ``ood.npz``."""
    stats = fit_run_ood(predictor, rt.table, rt.cache_root, **kwargs)
    rt.run.write_ood(stats.to_dict(arrays=True))
    return stats
