"""Operating-point metrics at a threshold (sensitivity, specificity, PPV, NPV, F1) with patient-bootstrap CIs.

Convention: a finding is called positive when ``p >= threshold`` (as in sklearn's ``roc_curve``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chestdx.evaluate.bootstrap import group_codes, patient_counts, percentile_ci
from chestdx.evaluate.metrics import _binary

RATES = ("sensitivity", "specificity", "ppv", "npv", "f1")


def _rates(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV, F1 from (weighted) counts; NaN where undefined."""

    def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.full(np.shape(a), np.nan), where=b > 0)

    return {
        "sensitivity": div(tp, tp + fn),
        "specificity": div(tn, tn + fp),
        "ppv": div(tp, tp + fp),
        "npv": div(tn, tn + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
    }


def operating_point_core(
    y: np.ndarray, p: np.ndarray, threshold: float | None, codes: np.ndarray, counts: np.ndarray, ci: float
) -> dict:
    """``operating_point`` on precomputed patient resamples."""
    y, p, known = _binary(y, p)
    y, p, codes = y[known], p[known], codes[known]
    res: dict = {"threshold": None if threshold is None else float(threshold), "n": int(len(y))}
    if threshold is None:
        res["reason"] = "no threshold"
        return res
    pos, called = y == 1, p >= threshold
    cells = {"tp": pos & called, "fp": ~pos & called, "tn": ~pos & ~called, "fn": pos & ~called}
    res.update({k: int(v.sum()) for k, v in cells.items()})
    point = _rates(*(np.float64(res[k]) for k in ("tp", "fp", "tn", "fn")))
    n_groups = counts.shape[1]
    per_patient = {k: np.bincount(codes, weights=v.astype(np.float64), minlength=n_groups) for k, v in cells.items()}
    reps = _rates(*(counts @ per_patient[k] for k in ("tp", "fp", "tn", "fn")))
    for k in RATES:
        value = float(point[k])
        res[k] = None if np.isnan(value) else value
        res[f"{k}_ci"] = percentile_ci(reps[k], ci) if res[k] is not None else None
    res["n_boot"] = int(counts.shape[0])
    res["n_boot_skipped"] = int((np.isnan(reps["sensitivity"]) | np.isnan(reps["specificity"])).sum())
    return res


def operating_point(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float | None,
    groups: np.ndarray | Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """TP/FP/TN/FN and sensitivity, specificity, PPV, NPV, F1 at ``p >= threshold``.

    CIs are percentile intervals of a patient-grouped bootstrap (``groups`` = patient ids; ``None``:
    image-level), computed per metric over the replicates where it is defined. NaN labels are masked.
    Undefined metrics (zero denominator) are None.
    """
    codes = group_codes(groups, len(np.asarray(y)))
    return operating_point_core(y, p, threshold, codes, patient_counts(codes, n_boot, seed), ci)
