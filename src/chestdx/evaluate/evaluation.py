"""The whole evaluation of one predictions table: calibration, thresholds (validation), test metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from chestdx.evaluate.bootstrap import group_codes, patient_counts
from chestdx.evaluate.calibration import apply_temperature, expected_calibration_error, fit_temperature, logit
from chestdx.evaluate.metrics import multilabel_core
from chestdx.evaluate.tables import infer_labels, split_arrays
from chestdx.evaluate.thresholds import operating_point_core, select_thresholds

NOTE = (
    "Decision support for qualified clinicians, not a diagnosis. Temperature and thresholds were "
    "chosen on the validation split only; test metrics carry 95% percentile CIs from a bootstrap "
    "that resamples patients (all images of a patient together)."
)


def _calibration(y: np.ndarray, p: np.ndarray, labels: Sequence[str], n_bins: int) -> dict:
    """Pooled ECE with reliability table, plus ECE per label."""
    pooled = expected_calibration_error(y, p, n_bins)
    pooled["per_label"] = {
        lab: expected_calibration_error(y[:, j], p[:, j], n_bins)["ece"] for j, lab in enumerate(labels)
    }
    return pooled


def _raw_threshold(t: float | None, temperature: float) -> float | None:
    """Raw-probability threshold equivalent to calibrated threshold ``t`` (p_cal >= t iff p >= this)."""
    if t is None:
        return None
    return float(1.0 / (1.0 + np.exp(-temperature * logit(np.array(t)))))


def evaluate_predictions(
    pred: pd.DataFrame,
    labels: Sequence[str] | None = None,
    val_split: str = "val",
    test_split: str = "test",
    threshold_method: str = "youden",
    target_sensitivity: float = 0.9,
    n_boot: int = 1000,
    seed: int = 0,
    min_pos: int = 5,
    min_neg: int = 5,
    n_bins: int = 15,
    ci: float = 0.95,
) -> dict:
    """Evaluate a predictions table (contracts.md format, raw sigmoid ``prob_<Label>``).

    On validation: one shared temperature, then per-label thresholds on the *calibrated*
    probabilities. On test: AUROC/AUPRC with patient-bootstrap CIs (rank metrics, identical for raw
    and calibrated probabilities), macro mean, operating points at the validation thresholds, and
    ECE before/after temperature. Test labels never influence temperature or thresholds.
    Returns a JSON-ready dict. ``labels`` defaults to every label with a ``prob_`` column.
    """
    labels = list(labels) if labels is not None else infer_labels(pred)
    if not labels:
        raise ValueError("no labels to evaluate (no <Label> + prob_<Label> column pairs)")
    val = split_arrays(pred, labels, val_split)
    test = split_arrays(pred, labels, test_split)

    temperature = fit_temperature(val.y, val.p)
    selected = select_thresholds(
        val.y, apply_temperature(val.p, temperature), labels, threshold_method, target_sensitivity, min_pos=min_pos
    )
    thresholds = {lab: row["threshold"] for lab, row in selected.items()}

    codes = group_codes(test.patient_id, len(test.image_id))
    counts = patient_counts(codes, n_boot, seed)
    metrics, _ = multilabel_core(test.y, test.p, codes, counts, labels, min_pos, min_neg, ci)
    p_test_cal = apply_temperature(test.p, temperature)
    for j, lab in enumerate(labels):
        metrics["labels"][lab]["threshold"] = thresholds[lab]
        metrics["labels"][lab]["operating_point"] = operating_point_core(
            test.y[:, j], p_test_cal[:, j], thresholds[lab], codes, counts, ci
        )

    return {
        "labels": metrics["labels"],
        "macro": metrics["macro"],
        "thresholds": thresholds,
        "thresholds_raw": {lab: _raw_threshold(t, temperature) for lab, t in thresholds.items()},
        "threshold_method": threshold_method,
        "threshold_space": "calibrated",
        "threshold_details": selected,
        "temperature": temperature,
        "calibration": {
            "n_bins": n_bins,
            "before": _calibration(test.y, test.p, labels, n_bins),
            "after": _calibration(test.y, p_test_cal, labels, n_bins),
        },
        "splits": {"val": val_split, "test": test_split},
        "n_val_images": int(len(val.image_id)),
        "n_val_patients": int(pd.unique(val.patient_id).size),
        "n_test_images": int(len(test.image_id)),
        "n_test_patients": int(counts.shape[1]),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "ci_level": float(ci),
        "note": NOTE,
    }
