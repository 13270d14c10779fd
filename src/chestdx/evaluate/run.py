"""Evaluate a run dir: predictions for val + test, metrics with CIs, plots, thresholds/temperature saved."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestdx.data.index import read_table
from chestdx.data.pipeline import cache_table
from chestdx.data.relocate import relocate
from chestdx.evaluate.evaluation import evaluate_predictions
from chestdx.evaluate.plots import plot_evaluation
from chestdx.inference import Predictor
from chestdx.labels import label_column
from chestdx.train.checkpoint import CHECKPOINT_NAME, read_checkpoint, write_checkpoint

log = logging.getLogger(__name__)


def predict_table(predictor: Predictor, table: pd.DataFrame, cache_root: str | Path | None = None,
                  show_progress: bool = True) -> pd.DataFrame:
    """Predictions table (contracts.md): ids, split, true labels, raw ``prob_<Label>`` per image."""
    from chestdx.models import encode_metadata

    cache, table, report = cache_table(table, predictor.input_size, cache_root, show_progress=show_progress)
    for path, reason in report.failures:
        log.warning("not evaluated: %s", reason or path)
    pixels = cache.pixels[cache.slots(table["path"].tolist())]
    meta = encode_metadata(table, predictor.metadata) if predictor.metadata else None
    probs = predictor.probabilities(np.asarray(pixels), meta)
    out = table[["image_id", "patient_id", "split"]].reset_index(drop=True).copy()
    for j, label in enumerate(predictor.labels):
        out[label] = table[label].to_numpy() if label in table.columns else np.nan
        out[label_column(label)] = probs[:, j]
    return out


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, split: str = "test", n_boot: int = 1000,
                 threshold_method: str = "youden", target_sensitivity: float = 0.9, seed: int = 0,
                 show_progress: bool = True) -> dict[str, Any]:
    """Write predictions.csv, metrics.json and plots/ into ``run_dir``; store val-chosen thresholds + temperature."""
    run = Path(run_dir)
    payload = read_checkpoint(run)
    predictor = Predictor(payload)
    table = read_table(run / "split.csv")
    if data is not None:
        table = relocate(table, data)
    full_table = table
    table = table[table["split"].isin(["val", split])]
    cache_root = (payload.get("config") or {}).get("cache_root")
    pred = predict_table(predictor, table, cache_root, show_progress)
    pred.to_csv(run / "predictions.csv", index=False)
    result = evaluate_predictions(pred, predictor.labels, val_split="val", test_split=split,
                                  threshold_method=threshold_method, target_sensitivity=target_sensitivity,
                                  n_boot=n_boot, seed=seed)
    result["run"] = {"run_dir": str(run), "arch": payload["arch"], "split_evaluated": split,
                     "config_name": (payload.get("config") or {}).get("name")}
    plots = plot_evaluation(pred, result, run / "plots", test_split=split)
    result["plots"] = {k: str(Path(v).relative_to(run)) for k, v in plots.items()}
    (run / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    payload["thresholds"] = result["thresholds"]
    payload["temperature"] = result["temperature"]
    payload["threshold_method"] = threshold_method
    payload["ood"] = _fit_ood(predictor, full_table, cache_root, seed, show_progress)
    write_checkpoint(run / CHECKPOINT_NAME, payload)
    return result


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path, split: str = "test", n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """``compare_predictions`` over evaluated run dirs; writes compare.csv/.json and compare.png."""
    from chestdx.evaluate.compare import compare_predictions
    from chestdx.evaluate.plots import plot_compare

    if len(run_dirs) < 2:
        raise ValueError("compare needs at least two run dirs")
    tables, labels = {}, None
    for run in map(Path, run_dirs):
        if not (run / "predictions.csv").is_file():
            raise ValueError(f"{run}: no predictions.csv (run `chestdx evaluate {run}` first)")
        pred = pd.read_csv(run / "predictions.csv", dtype={"image_id": str, "patient_id": str})
        run_labels = [c[len("prob_"):] for c in pred.columns if c.startswith("prob_")]
        labels = run_labels if labels is None else [lb for lb in labels if lb in run_labels]
        name = run.name if run.name not in tables else str(run)
        tables[name] = pred
    if not labels:
        raise ValueError("the runs share no label")
    table = compare_predictions(tables, labels, split=split, n_boot=n_boot, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    (out / "compare.json").write_text(table.to_json(orient="records", indent=2))
    plot_compare(table, out / "compare.png")
    return table


def _fit_ood(predictor: Predictor, table: pd.DataFrame, cache_root: str | Path | None, seed: int,
             show_progress: bool) -> dict[str, Any] | None:
    """OOD gate statistics (train-split features, val-split threshold); None, with a warning, if it cannot fit."""
    from chestdx.inference.ood_fit import fit_run_ood, ood_payload

    try:
        return ood_payload(fit_run_ood(predictor, table, cache_root, seed=seed, show_progress=show_progress))
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        log.warning("OOD gate not fitted: %s", err)
        return None
