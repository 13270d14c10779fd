"""Held-out (test) evaluation of a calibrated run: rank metrics with patient-bootstrap CIs, the sidecar's
operating points applied to test, calibration before/after, and findings called per image vs the truth.

Nothing here is fitted: calibrators and thresholds come from ``calibration.json`` (fitted on out-of-fold or
validation rows only), so the test split only measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from chestdx.evaluate.bootstrap import group_codes, patient_counts
from chestdx.evaluate.calibration import expected_calibration_error
from chestdx.evaluate.calibrators import logits_from_probs
from chestdx.evaluate.metrics import multilabel_core
from chestdx.evaluate.tables import infer_labels, split_arrays
from chestdx.evaluate.thresholds import operating_point_core
from chestdx.inference.calibration import Calibration
from chestdx.notice import DISCLAIMER

NOTE = (DISCLAIMER + " Calibration and thresholds were fitted on out-of-fold (or validation) predictions only; "
        "test metrics carry 95% percentile CIs from a bootstrap that resamples patients (all images of a patient "
        "together).")


def _calibration_block(y: np.ndarray, p: np.ndarray, labels: Sequence[str], n_bins: int) -> dict[str, Any]:
    """Pooled ECE with its reliability table, ECE per label (labels with >= 1 known row) and their median."""
    pooled = expected_calibration_error(y, p, n_bins)
    per = {lab: expected_calibration_error(y[:, j], p[:, j], n_bins)["ece"] for j, lab in enumerate(labels)}
    pooled["per_label"] = per
    vals = [v for v in per.values() if v is not None and np.isfinite(v)]
    pooled["median_per_label"] = float(np.median(vals)) if vals else None
    pooled["mean_per_label"] = float(np.mean(vals)) if vals else None
    return pooled


def findings_per_image(y: np.ndarray, called: np.ndarray) -> dict[str, Any]:
    """Mean number of findings called per image vs the mean number truly present (labels known for the row)."""
    known = ~np.isnan(y)
    true = np.where(known, y, 0.0).sum(axis=1)
    n_called = (called & known).sum(axis=1)
    t, c = float(true.mean()) if len(y) else 0.0, float(n_called.mean()) if len(y) else 0.0
    return {"called_per_image": c, "true_per_image": t, "ratio": (c / t) if t > 0 else None,
            "per_label_called": called.sum(axis=0).astype(int).tolist(),
            "per_label_true": np.nansum(y, axis=0).astype(int).tolist()}


def evaluate_heldout(pred: pd.DataFrame, calibration: Calibration, labels: Sequence[str] | None = None,
                     test_split: str = "test", n_boot: int = 1000, seed: int = 0, min_pos: int = 5,
                     min_neg: int = 5, n_bins: int = 10, ci: float = 0.95) -> dict[str, Any]:
    """Evaluate the ``test_split`` rows of a predictions table (raw ``prob_<Label>``) with a fitted calibration."""
    labels = list(labels) if labels is not None else infer_labels(pred)
    if not labels:
        raise ValueError("no labels to evaluate (no <Label> + prob_<Label> column pairs)")
    test = split_arrays(pred, labels, test_split)
    codes = group_codes(test.patient_id, len(test.image_id))
    counts = patient_counts(codes, n_boot, seed)
    metrics, _ = multilabel_core(test.y, test.p, codes, counts, labels, min_pos, min_neg, ci)
    cols = [calibration.labels.index(lab) for lab in labels]
    z = logits_from_probs(test.p)  # the inversion calibration was fitted with
    full = np.zeros((len(z), len(calibration.labels)))
    full[:, cols] = z
    p_cal = calibration.apply(full)[:, cols]
    thresholds = {lab: calibration.threshold(lab) for lab in labels}
    called = np.zeros_like(p_cal, dtype=bool)
    for j, lab in enumerate(labels):
        t = thresholds[lab]
        metrics["labels"][lab]["threshold"] = t
        metrics["labels"][lab]["operating_point"] = operating_point_core(test.y[:, j], p_cal[:, j], t, codes,
                                                                         counts, ci)
        if t is None:
            metrics["labels"][lab]["operating_point"]["reason"] = calibration.not_callable_reason(lab)
        else:
            called[:, j] = p_cal[:, j] >= t
    return {
        "labels": metrics["labels"], "macro": metrics["macro"], "thresholds": thresholds,
        "policy": calibration.policy, "calibration_source": calibration.source,
        "calibration": {"n_bins": n_bins, "before": _calibration_block(test.y, test.p, labels, n_bins),
                        "after": _calibration_block(test.y, p_cal, labels, n_bins)},
        "findings_per_image": findings_per_image(test.y, called),
        "splits": {"test": test_split}, "n_test_images": int(len(test.image_id)),
        "n_test_patients": int(counts.shape[1]), "n_boot": int(n_boot), "seed": int(seed), "ci_level": float(ci),
        "note": NOTE,
    }
