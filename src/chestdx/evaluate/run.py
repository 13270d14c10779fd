"""Evaluate a run dir: calibration sidecar from out-of-fold/validation rows, then test metrics with CIs, plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestdx.data.pipeline import cache_table
from chestdx.evaluate.plots import plot_evaluation
from chestdx.inference.predictor import Predictor
from chestdx.labels import predictions_table

log = logging.getLogger(__name__)


def predict_table(predictor: Predictor, table: pd.DataFrame, cache_root: str | Path | None = None,
                  show_progress: bool = True, calibrated: bool = False) -> pd.DataFrame:
    """Predictions table (contracts.md): ids, split, true labels, ``prob_<Label>`` (sigmoid of the ensemble logit)
    and, with ``calibrated``, ``cal_<Label>`` (the run's calibration). Reads pixels through the cache."""
    from chestdx.models import encode_metadata

    cache, table, report = cache_table(table, predictor.input_size, cache_root, show_progress=show_progress)
    for path, reason in report.failures:
        log.warning("not evaluated: %s", reason or path)
    pixels = cache.pixels[cache.slots(table["path"].tolist())]
    meta = encode_metadata(table, predictor.metadata) if predictor.metadata else None
    z = predictor.logits(np.asarray(pixels), meta)
    out = predictions_table(table, predictor.labels, z)
    if calibrated:
        cal = predictor.calibration.apply(z)
        for j, label in enumerate(predictor.labels):
            out[f"cal_{label}"] = cal[:, j]
    return out


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, split: str = "test", n_boot: int = 1000,
                 policy: str | None = None, prevalence: dict[str, float] | None = None,
                 min_positives: int | None = None, seed: int = 0, show_progress: bool = True) -> dict[str, Any]:
    """Calibrate (sidecar) on out-of-fold/validation rows, then measure on ``split``: predictions.csv,
    metrics.json, plots/, calibration.json, ood.npz. Never writes the weights (model.json, members/)."""
    from chestdx.evaluate.calibrate import calibrate_run
    from chestdx.evaluate.heldout import evaluate_heldout
    from chestdx.inference.calibration import Calibration
    from chestdx.inference.ood_fit import write_run_ood
    from chestdx.inference.run_table import open_run_table

    rt = open_run_table(run_dir, data)
    run = rt.run
    predictor = Predictor.from_run(run.path, gate=None)  # cached, already-valid pixels: no quality gate here
    if not run.oof.is_file():  # K = 1 run trained before oof.csv existed: validation predictions
        val = predict_table(predictor, rt.rows("val"), rt.cache_root, show_progress)
        val.assign(fold=0).to_csv(run.oof, index=False)
    calibrate_run(run.path, policy=policy, prevalence=prevalence, min_positives=min_positives, n_boot=n_boot,
                  seed=seed)  # None: the run config's calibration section
    predictor.calibration = Calibration.from_sidecar(run.read_calibration(), predictor.labels)
    pred = predict_table(predictor, rt.rows("val", split), rt.cache_root, show_progress, calibrated=True)
    pred.to_csv(run.predictions, index=False)
    result = evaluate_heldout(pred, predictor.calibration, predictor.labels, test_split=split, n_boot=n_boot,
                              seed=seed)
    result["run"] = {"run_dir": str(run.path), "arch": predictor.arch, "split_evaluated": split,
                     "members": len(rt.manifest["members"]), "config_name": rt.manifest.get("config_name")}
    plots = plot_evaluation(pred, result, run.path / "plots", test_split=split)
    result["plots"] = {k: str(Path(v).relative_to(run.path)) for k, v in plots.items()}
    if (run.path / "plots" / "reliability.png").is_file():  # per-label, out-of-fold (calibrate_run)
        result["plots"]["reliability_oof"] = "plots/reliability.png"
    run.metrics.write_text(json.dumps(result, indent=2, allow_nan=False))
    try:
        write_run_ood(rt, predictor, seed=seed, show_progress=show_progress)  # the run table opened above
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        log.warning("OOD statistics not fitted: %s", err)
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
